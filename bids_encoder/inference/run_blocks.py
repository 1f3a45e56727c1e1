"""Exact AR(1) generalised least squares of several runs without a per-voxel factorisation of the whole design.

The columns of a first-level design over several runs are of two kinds: those of one run only — its confounds,
the spike columns of its censored volumes, its intercept ("local" to the run) — and those that span runs: the
conditions' regressors, or each voxel's regressors with fitted HRFs (:mod:`.voxel_designs`). Each run's AR(1)
coefficient ρ_r touches only its own rows, so in a basis where the local columns ``N_r`` of run r are orthonormal
and rotated to diagonalise their lag-one cross-products (as :mod:`.one_run` does for one run), and the spanning
columns ``M`` are orthogonal to all of them, every voxel's normal equations ``G = Z'QZ`` are

    [[G_MM, B_1', …, B_n'],            A_r = N_r'Q_r N_r = D_r(ρ_r) − ρ_r² U_r U_r'   (diagonal minus rank two),
     [B_1,  A_1,        ],             B_r = N_r'Q_r M_r = −ρ_r P_r' − ρ_r² U_r W_r,
     [ …          ⋱     ],
     [B_n,           A_n]]

with ``D_r = diag(1 + ρ² − ρ λ_k)``, ``U_r`` the first and last rows of ``N_r``, ``P_r = M_r'(S + S')N_r`` the
lag-one cross-products of the spanning and local columns (shared by all voxels, or each voxel's from its kernel) and
``W_r`` the first and last rows of ``M_r``. Woodbury's identity inverts each ``A_r`` exactly, and the spanning block
of ``G⁻¹`` is the inverse of its Schur complement ``S = G_MM − Σ_r B_r' A_r⁻¹ B_r``, an m × m matrix per voxel (m the
number of spanning columns: the conditions). Every product with a per-voxel ``A_r⁻¹`` reduces to sums over the
local columns weighted by the diagonal ``D_r⁻¹``: one matrix product of shared vectors with it. The GLS refit of the
OLS residuals ``e`` (right-hand sides ``Z'Qe`` from their Prais–Winsten whitening, :func:`.gls.block_moments`) and
its residual sum of squares ``e'Qe − h'G⁻¹h`` follow the same way; the spanning coefficients, ``S`` and its Cholesky
factor give every contrast over the spanning columns (:func:`.gls.contrasts`): the conditions' t and F contrasts.
The result equals the per-voxel Cholesky solution of the whole design (to rounding); contrasts that weigh local
columns (a run's intercept or confounds) go through that solver instead.
"""

from __future__ import annotations

import numpy as np

from .._tensorflow import tf
from .gls import block_moments, contrasts, gram

DTYPE = tf.float64
#: a contrast's weight on local columns below this fraction of its largest weight counts as zero
LOCAL_TOLERANCE = 1e-8


def column_runs(design, structure, weighed=None):
    """For each column of ``design``: the run index it lives in when it is nonzero in one run only, −1 when it is
    spanning (nonzero in several runs, or weighed by a contrast: ``weighed``, bool per column), −2 when it is
    zero."""
    nonzero = np.abs(design) > 0
    owners = np.full(design.shape[1], -2)
    for j in range(design.shape[1]):
        runs = np.unique(structure.index[nonzero[:, j]])
        owners[j] = runs[0] if runs.size == 1 else (-1 if runs.size else -2)
    if weighed is not None:
        owners[np.asarray(weighed, bool)] = -1
    return owners


def _orthonormal(columns, equilibrate=True):
    """Orthonormal basis of ``columns`` (rows × c), equilibrated first, rank as :func:`._design._reduced_basis`
    counts it: singular values above ``s₀ · max(shape) · eps``, ``s₀`` the largest — or 1 without equilibration
    (columns that had unit norms before a projection, whose lost norm is what counts)."""
    if columns.shape[1] == 0:
        return np.zeros((columns.shape[0], 0))
    scale = 1.0
    if equilibrate:
        norms = np.linalg.norm(columns, axis=0)
        norms[norms == 0] = 1.0
        columns = columns / norms
    u, s, _ = np.linalg.svd(columns, full_matrices=False)
    if equilibrate and s.size:
        scale = s[0]
    rank = int((s > scale * max(columns.shape) * np.finfo(float).eps).sum()) if s.size else 0
    return u[:, :rank]


class _RunPart:
    """One run's local basis (rows ``start:stop``), rotated to diagonalise its lag-one cross-products."""

    def __init__(self, local, start, stop, run):
        self.run = run
        basis = _orthonormal(local)
        cross = basis[1:].T @ basis[:-1]
        self.eigenvalues, rotation = np.linalg.eigh(cross + cross.T)
        self.basis = basis @ rotation  # N_r (rows × k_r)
        self.start, self.stop = start, stop
        self.ends = self.basis[[0, -1]].T  # U_r (k_r × 2)
        self.lambda_tf = tf.constant(self.eigenvalues[:, None])
        self.ends_tf = tf.constant(self.ends)

    @property
    def k(self):
        return self.basis.shape[1]


def _local_parts(design, structure, owners):
    """The run parts of the local columns, or None when a run has several contiguous blocks of volumes."""
    if len(structure.segments) != structure.n_runs:
        return None
    return [_RunPart(design[start:stop][:, owners == run], start, stop, run)
            for start, stop, run in sorted(structure.segments)]


class _Woodbury:
    """Per run and voxel: ``D⁻¹`` (k × v), ρ² (v,) and ``(I − ρ² U'D⁻¹U)⁻¹`` (v × 2 × 2), for products with A⁻¹."""

    def __init__(self, part, rho):
        self.rho, self.rho2 = rho, tf.square(rho)
        self.d = 1.0 / (1.0 + self.rho2[None] - rho[None] * part.lambda_tf)  # (k, v)
        ends = part.ends_tf
        u00 = tf.reduce_sum(ends[:, :1] ** 2 * self.d, axis=0)
        u01 = tf.reduce_sum(ends[:, :1] * ends[:, 1:] * self.d, axis=0)
        u11 = tf.reduce_sum(ends[:, 1:] ** 2 * self.d, axis=0)
        m00, m01, m11 = 1.0 - self.rho2 * u00, -self.rho2 * u01, 1.0 - self.rho2 * u11
        determinant = m00 * m11 - m01 * m01  # positive: A is positive definite
        self.m_inverse = tf.reshape(tf.stack([m11, -m01, -m01, m00], axis=1) / determinant[:, None], [-1, 2, 2])


def _schur_terms(fdf, h_products, hdh, woodbury, w_rows, m):
    """One run's ``B'A⁻¹B`` (v × m × m), ``B'A⁻¹h`` (v × m) and ``h'A⁻¹h`` (v,), from ``F'D⁻¹F`` (v × (m+2) ×
    (m+2)), ``F'D⁻¹h`` (v × (m+2)) and ``h'D⁻¹h`` with ``F = [P' | U]``; ``w_rows`` (2 × m, or v × 2 × m): W."""
    rho, rho2, m_inverse = woodbury.rho, woodbury.rho2, woodbury.m_inverse
    through_ends = fdf[:, :, m:]  # F'D⁻¹U (v × (m+2) × 2)
    fa_f = fdf + rho2[:, None, None] * tf.matmul(tf.matmul(through_ends, m_inverse), through_ends, transpose_b=True)
    fa_h = h_products + rho2[:, None] * tf.linalg.matvec(tf.matmul(through_ends, m_inverse), h_products[:, m:])
    h_a_h = hdh + rho2 * tf.reduce_sum(h_products[:, m:] * tf.linalg.matvec(m_inverse, h_products[:, m:]), axis=1)
    # B = F T with T = [−ρ I_m ; −ρ² W] ((m+2) × m per voxel)
    identity = tf.eye(m, dtype=DTYPE)[None] * (-rho)[:, None, None]
    w = tf.broadcast_to(w_rows, [tf.shape(rho)[0], 2, m]) if len(w_rows.shape) == 2 else w_rows
    t = tf.concat([identity, -rho2[:, None, None] * w], axis=1)
    b_a_b = tf.matmul(tf.matmul(t, fa_f, transpose_a=True), t)
    b_a_h = tf.linalg.matvec(t, fa_h, transpose_a=True)
    return b_a_b, b_a_h, h_a_h


def _local_products(part, woodbury, h, p):
    """``F'D⁻¹F`` (v × (m+2) × (m+2)), ``F'D⁻¹h`` (v × (m+2)) and ``h'D⁻¹h`` (v,) for ``F = [P' | U]``: ``p`` is
    ``P`` shared (m × k) or per voxel (v × m × k); ``h`` the local right-hand sides (k × v)."""
    d = woodbury.d  # (k, v)
    dh = d * h
    hdh = tf.reduce_sum(h * dh, axis=0)
    if len(p.shape) == 2:  # shared P: every product is shared vectors against D⁻¹
        f = tf.concat([tf.transpose(p), part.ends_tf], axis=1)  # (k, m+2)
        n = f.shape[1]
        pairs = tf.reshape(f[:, :, None] * f[:, None, :], [-1, n * n])  # (k, n²)
        fdf = tf.reshape(tf.transpose(tf.matmul(pairs, d, transpose_a=True)), [-1, n, n])
        fdh = tf.transpose(tf.matmul(f, dh, transpose_a=True))  # (v, n)
        return fdf, fdh, hdh
    d_t = tf.transpose(d)  # (v, k)
    ends = tf.broadcast_to(tf.transpose(part.ends_tf)[None], [tf.shape(p)[0], 2, part.k])
    f = tf.concat([p, ends], axis=1)  # (v, m+2, k)
    fdf = tf.matmul(f * d_t[:, None, :], f, transpose_b=True)
    fdh = tf.reduce_sum(f * tf.transpose(dh)[:, None, :], axis=2)
    return fdf, fdh, hdh


def solve_spanning(g_mm, h_m, eqe, locals_, df):
    """The GLS refit of the OLS residuals restricted to the spanning columns, exactly.

    ``g_mm`` (v × m × m) the spanning block of G, ``h_m`` (v × m) its right-hand side, ``eqe`` (v,) ``e'Qe``;
    ``locals_``: per run (part, Woodbury, local right-hand side (k × v), P, W). Returns (Cholesky factor of S,
    S, δ_M (v × m), σ² (v,)).
    """
    m = g_mm.shape[1]
    schur, rhs, quadratic = g_mm, h_m, eqe
    for part, woodbury, h, p, w in locals_:
        fdf, fdh, hdh = _local_products(part, woodbury, h, p)
        b_a_b, b_a_h, h_a_h = _schur_terms(fdf, fdh, hdh, woodbury, w, m)
        schur = schur - b_a_b
        rhs = rhs - b_a_h
        quadratic = quadratic - h_a_h
    chol = tf.linalg.cholesky(schur)
    delta = tf.linalg.cholesky_solve(chol, rhs[:, :, None])[:, :, 0]
    sigma2 = tf.maximum(quadratic - tf.reduce_sum(delta * rhs, axis=1), 0.0) / df
    return chol, schur, delta, sigma2


class _RunBlocks:
    """A shared design over several runs with AR(1) noise, by run-local Woodbury inverses and the Schur complement
    of the spanning columns (see the module's description). Build with :meth:`make`, which returns None when the
    design or the contrasts do not have that structure."""

    @classmethod
    def make(cls, shared, design, weighed=None):
        """The solver, or None. ``weighed`` (bool per column): the columns some contrast weighs, kept spanning."""
        structure = shared.structure
        if structure.n_runs < 2:
            return None
        owners = column_runs(design, structure, weighed)
        parts = _local_parts(design, structure, owners)
        if parts is None or not (owners == -1).any() or not any(part.k for part in parts):
            return None
        spanning = design[:, owners == -1]
        projected = spanning / np.where(np.linalg.norm(spanning, axis=0) > 0, np.linalg.norm(spanning, axis=0), 1.0)
        for part in parts:  # orthogonal to every local column: M ⟂ N_r
            rows = projected[part.start:part.stop]
            projected[part.start:part.stop] = rows - part.basis @ (part.basis.T @ rows)
        m_basis = _orthonormal(projected, equilibrate=False)
        if m_basis.shape[1] + sum(part.k for part in parts) != shared.rank:
            return None  # spanning columns confounded with local ones: the general solver decides
        z_new = np.zeros((len(design), shared.rank))
        z_new[:, :m_basis.shape[1]] = m_basis
        column = m_basis.shape[1]
        for part in parts:
            z_new[part.start:part.stop, column:column + part.k] = part.basis
            column += part.k
        orthonormal_old = shared.z / np.sqrt(shared.gram_diag)
        if np.abs(orthonormal_old @ (orthonormal_old.T @ z_new) - z_new).max() > 1e-8:
            return None
        # coordinates: Z_old γ_old = Z_new γ_new, so c_new = c_old diag(1/s²) Z_old'Z_new
        change = (shared.z.T @ z_new) / shared.gram_diag[:, None]
        m = m_basis.shape[1]
        t_new = shared.t_coordinates @ change
        f_new = [rows @ change for rows in shared.f_coordinates]
        for rows in [t_new, *f_new]:
            finite = rows[~np.isnan(rows).any(axis=1)]
            if finite.size and np.abs(finite[:, m:]).max() > LOCAL_TOLERANCE * max(np.abs(finite).max(), 1e-300):
                return None  # a contrast weighs a run's own columns (its intercept, confounds)
        return cls(shared, parts, m_basis, t_new[:, :m], [rows[:, :m] for rows in f_new])

    def __init__(self, shared, parts, m_basis, t_coordinates, f_coordinates):
        structure = shared.structure
        self.shared, self.structure, self.parts = shared, structure, parts
        self.rank = shared.rank
        self.t_coordinates, self.f_coordinates = t_coordinates, f_coordinates
        self.m = m_basis.shape[1]
        self.m_tf = tf.constant(m_basis.astype(np.float32))
        self.m_moments = structure.moments(m_basis)
        self.mean_coordinates = tf.constant(m_basis.T @ structure.indicators())  # (m × runs): M'1_r
        self.blocks = []
        for part in parts:
            rows = m_basis[part.start:part.stop]
            p = rows[1:].T @ part.basis[:-1] + rows[:-1].T @ part.basis[1:]  # M_r'(S + S')N_r
            z = np.hstack([rows, part.basis])
            self.blocks.append({
                "part": part, "p": tf.constant(p), "w": tf.constant(rows[[0, -1]]),
                "basis": tf.constant(part.basis.astype(np.float32)),
                "shifted": tf.constant(np.hstack([z[1:], z[:-1]]).astype(np.float32)),
                "first_row": tf.constant(z[0])})

    def bytes_per_voxel(self, n_time):
        """The float32 chunk, its centred copy, e and the whitening's temporaries (about six series); the float64
        per-run local vectors (D⁻¹, h, products: five each) and the per-voxel (m+2)² blocks."""
        n = self.m + 2
        local = sum(part.k for part in self.parts)
        return 4 * 6 * n_time + 8 * (5 * local + 12 * n * n + 4 * self.m * (len(self.t_coordinates) + 4))

    def solve(self, y, noise_model, df, start, stop):
        del start, stop
        if noise_model != "ar1":
            raise ValueError("_RunBlocks is an AR(1) solver")
        structure = self.structure
        means = None
        if self.shared.centre:  # the run means lie in the design's span: put back their coordinates on M below
            means = tf.math.unsorted_segment_sum(y, structure.index_tf, structure.n_runs) / np.bincount(
                structure.index, minlength=structure.n_runs)[:, None].astype(np.float32)
            y = y - tf.gather(means, structure.index_tf)
        g_m = tf.matmul(self.m_tf, y, transpose_a=True)  # OLS, spanning columns (orthonormal basis)
        pieces = []
        for block in self.blocks:
            part = block["part"]
            rows = y[part.start:part.stop]
            g_local = tf.matmul(block["basis"], rows, transpose_a=True)
            pieces.append(rows - tf.matmul(self.m_tf[part.start:part.stop], g_m)
                          - tf.matmul(block["basis"], g_local))
        e = tf.concat(pieces, axis=0)
        del y, pieces
        rho = structure.rho(e)  # (runs, v)
        h_m, eqe, locals_ = 0.0, 0.0, []
        for block in self.blocks:
            part = block["part"]
            run_rho = rho[part.run]
            rhs, run_eqe = block_moments(e[part.start:part.stop], run_rho, block["shifted"], block["first_row"])
            h_m += tf.transpose(rhs[:self.m])
            eqe += run_eqe
            locals_.append((part, _Woodbury(part, run_rho), rhs[self.m:], block["p"], block["w"]))
        del e
        g_mm = gram(self.m_moments, rho)
        chol, schur, delta, sigma2 = solve_spanning(g_mm, h_m, eqe, locals_, df)
        gamma = tf.transpose(tf.cast(g_m, DTYPE)) + delta
        if means is not None:
            gamma += tf.transpose(tf.matmul(self.mean_coordinates, tf.cast(means, DTYPE)))
        return contrasts(chol, gamma, sigma2, self.t_coordinates, self.f_coordinates, schur) + (
            rho.numpy(), sigma2.numpy())
