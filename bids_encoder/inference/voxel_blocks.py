"""Per-voxel regressors (fitted HRFs) over runs whose nuisance columns are each run's own, by run blocks.

The regressors of voxel v are ``M_v = C (I_R ⊗ k_v)``: the lagged copies of each condition with the nuisance
projected out (``C = P L``, :mod:`.voxel_designs`) times the voxel's kernel; they span the runs, and are orthogonal
to every run's nuisance columns ``N_r`` (confounds, spikes, intercept). The AR(1) refit then has the structure of
:mod:`.run_blocks` — Woodbury for each run's ``N_r'Q_r N_r``, the Schur complement of the R regressors — with the
voxel's own ``P_r = M_{v,r}'(S + S')N_r`` (the shared ``C_r'(S + S')N_r`` contracted with its kernel) and first
and last rows ``W_r``: an R × R system per voxel instead of the (R + nuisance)² Cholesky factorisation of
:class:`.voxel_designs._VoxelDesigns`, which stays the solver for OLS and for nuisance columns that span runs.
"""

from __future__ import annotations

from .._tensorflow import tf
from ._design import _reduced_basis
from .gls import contrasts
from .run_blocks import _local_parts, _Woodbury, column_runs, solve_spanning

DTYPE = tf.float64


class _VoxelRunBlocks:
    """AR(1) solver for :class:`~.voxel_designs._VoxelDesigns` designs whose nuisance columns are run-local."""

    @classmethod
    def make(cls, voxel, design):
        """The solver for ``voxel`` (a ``_VoxelDesigns``) and its ``design``, or None when it does not apply."""
        structure = voxel.structure
        nuisance = design[:, voxel.n_reg:]
        if not nuisance.shape[1]:
            return None
        owners = column_runs(nuisance, structure)
        if (owners == -1).any():
            return None  # a nuisance column spanning runs
        parts = _local_parts(nuisance, structure, owners)
        if parts is None or sum(part.k for part in parts) != _reduced_basis(nuisance)[3]:
            return None
        return cls(voxel, parts)

    def __init__(self, voxel, parts):
        self.voxel, self.parts, self.structure = voxel, parts, voxel.structure
        self.rank = voxel.rank
        n_reg, taps = voxel.n_reg, voxel.n_taps
        self.t_coordinates = voxel.t_coordinates[:, :n_reg]
        self.f_coordinates = [k[:, :n_reg] for k in voxel.f_coordinates]
        clean = voxel.clean.numpy()  # (T, R·K)
        self.blocks = []
        for part in parts:
            rows = clean[part.start:part.stop]
            cross = rows[1:].T @ part.basis[:-1] + rows[:-1].T @ part.basis[1:]  # C_r'(S + S')N_r: (R·K, k)
            self.blocks.append({
                "part": part, "basis": tf.constant(part.basis),
                "cross": tf.constant(cross.reshape(n_reg, taps, part.k)),
                "ends": tf.constant(rows[[0, -1]].reshape(2, n_reg, taps))})

    def bytes_per_voxel(self, n_time):
        """The _VoxelDesigns series (data, residuals, Q e in float64) and, per run, the voxel's P (R × k) and its
        products with D⁻¹, with the local vectors (D⁻¹, h)."""
        local = sum(part.k for part in self.parts)
        n = self.voxel.n_reg + 2
        return 4 * n_time + 8 * 7 * n_time + 8 * (3 * n * local + 5 * local + 12 * n * n)

    def solve(self, y, noise_model, df, start, stop):
        if noise_model != "ar1":
            raise ValueError("_VoxelRunBlocks is an AR(1) solver")
        voxel = self.voxel
        kernels, outer, _, _, beta, residuals = voxel.ols(y, start, stop)
        del y
        rho = self.structure.rho(residuals)  # (runs, v)
        whitened, eqe = voxel.whitened(residuals, rho)
        del residuals
        moments = tf.reshape(tf.matmul(voxel.clean, whitened, transpose_a=True), [voxel.n_reg, voxel.n_taps, -1])
        h_m = tf.einsum("rkv,vk->vr", moments, kernels)
        locals_ = []
        for block in self.blocks:
            part = block["part"]
            h = tf.matmul(block["basis"], whitened[part.start:part.stop], transpose_a=True)  # N_r'Q e: (k, v)
            p = tf.einsum("va,rak->vrk", kernels, block["cross"])  # the voxel's P_r: (v, R, k)
            w = tf.einsum("va,era->ver", kernels, block["ends"])  # its first and last rows: (v, 2, R)
            locals_.append((part, _Woodbury(part, tf.cast(rho[part.run], DTYPE)), h, p, w))
        del whitened
        g_mm, _ = voxel.regressor_gram(outer, rho)
        chol, schur, delta, sigma2 = solve_spanning(g_mm, h_m, eqe, locals_, df)
        return contrasts(chol, beta + delta, sigma2, self.t_coordinates, self.f_coordinates, schur) + (
            rho.numpy(), sigma2.numpy())


def voxel_solver(voxel, design, noise_model):
    """The run-block solver for AR(1) when it applies, else ``voxel`` itself."""
    if noise_model != "ar1":
        return voxel
    return _VoxelRunBlocks.make(voxel, design) or voxel
