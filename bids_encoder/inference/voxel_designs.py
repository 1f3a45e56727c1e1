"""First-level GLM with per-voxel regressors ``L_r k_v`` (fitted HRFs), from shared moments only.

Each voxel's regressor of condition ``r`` is ``L_r k_v``: the condition's lagged copies (time × taps, the same for
all voxels) times the voxel's HRF kernel (taps). The nuisance columns U (confounds, spike columns of censored
volumes, run intercepts) are shared, so no (voxels × time × columns) design is ever formed:

* OLS by Frisch–Waugh–Lovell: with ``P`` the projection on the complement of U (orthonormal basis N), the lagged
  copies are projected once, ``C = P L``; each voxel's R × R system is ``k' (C_r'C_s) k`` and its right-hand side
  ``k' C_r'y``; the residuals (time × voxels, the data's size) give the per-run AR(1) coefficients.
* GLS: the Prais–Winsten ``Q = W'W`` of a run is ``I − ρ (S + S') + ρ² D_interior``, so every block of ``X'QX``
  is ``Σ_runs S0 − ρ L + ρ² S1`` of the per-run moments of ``[C | N]`` (shared, (R·K + k)²), contracted with the
  voxel's kernel. The GLS refit is solved for the OLS residuals ``e`` (the same regressor coefficients up to the
  OLS ones, the same residuals), so the right-hand side is ``[C | N]' Q e`` and the residual sum of squares
  ``e'Qe − δ' X'Qe`` suffers no cancellation. Since ``[C | N]`` spans the same space as ``[L k | U]``, the
  regressors' coefficients and their block of ``(X'QX)⁻¹`` are those of the original columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._tensorflow import tf
from ._design import _reduced_basis, independent_rows
from .gls import contrasts

__all__ = ["LaggedRegressors"]

DTYPE = tf.float64


@dataclass
class LaggedRegressors:
    """Per-voxel regressors as lagged copies and kernels: regressor ``r`` of voxel ``v`` is ``lagged[r] @ kernels[v]``.

    Parameters
    ----------
    lagged : array (regressors × time × taps)
        ``[r, t, k]`` is regressor r at volume ``t − k`` (zero before its run's first volume), see
        :func:`bids_encoder.hrf.lagged`.
    kernels : array (voxels × taps)
        Each voxel's HRF kernel.
    """

    lagged: np.ndarray
    kernels: np.ndarray

    def subset(self, voxels):
        """The same regressors for some voxels only.

        Parameters
        ----------
        voxels : index array, boolean mask or slice
            Rows of ``kernels`` to keep.

        Returns
        -------
        LaggedRegressors
            The same ``lagged`` (shared, not copied) and the chosen kernels.
        """
        return LaggedRegressors(self.lagged, np.asarray(self.kernels)[voxels])

    def dense(self, start, stop):
        """The dense per-voxel designs of some voxels (for checks; the fit never forms them).

        Parameters
        ----------
        start, stop : int
            The voxels ``start:stop`` (rows of ``kernels``).

        Returns
        -------
        ndarray, shape (stop − start, time, regressors)
        """
        return np.einsum("rtk,vk->vtr", self.lagged, np.asarray(self.kernels)[start:stop])


class _VoxelDesigns:
    """Per-voxel regressors ``L_r k_v`` beside shared nuisance columns (see the module's description)."""

    def __init__(self, design, structure, t_contrasts, f_contrasts, regressors):

        self.structure = structure
        lagged = np.asarray(regressors.lagged, dtype=np.float64)  # (R, T, K)
        self.kernels = np.asarray(regressors.kernels, dtype=np.float64)  # (V, K)
        self.n_reg, n_time, self.n_taps = lagged.shape
        if n_time != design.shape[0] or self.kernels.shape[1] != self.n_taps:
            raise ValueError(f"Lagged regressors {lagged.shape} and kernels {self.kernels.shape} do not fit a design "
                             f"of {design.shape[0]} volumes")
        nuisance = design[:, self.n_reg:]
        if nuisance.shape[1]:
            basis, _, _, rank = _reduced_basis(nuisance)
            self.nuisance = basis / np.linalg.norm(basis, axis=0)  # orthonormal
        else:
            self.nuisance, rank = np.zeros((n_time, 0)), 0
        self.n_nuisance = rank
        self.rank = self.n_reg + rank
        for name, weights in {**t_contrasts, **f_contrasts}.items():
            if np.any(np.atleast_2d(weights)[:, self.n_reg:]):
                raise ValueError(f"Contrast {name}: with per-voxel regressors, contrasts may weigh the regressors only")
        self.t_coordinates = (np.hstack([np.vstack([np.atleast_2d(w)[:, :self.n_reg] for w in t_contrasts.values()]),
                                         np.zeros((len(t_contrasts), rank))]) if t_contrasts else
                              np.zeros((0, self.rank)))
        f_rows = [independent_rows(np.atleast_2d(w)[:, :self.n_reg], name) for name, w in f_contrasts.items()]
        self.f_coordinates = [np.hstack([k, np.zeros((k.shape[0], rank))]) for k in f_rows]
        self.n_columns = len(self.t_coordinates) + sum(k.shape[0] for k in self.f_coordinates)
        n_reg, taps = self.n_reg, self.n_taps
        wide = lagged.transpose(1, 0, 2).reshape(n_time, n_reg * taps)  # (T, R·K), column r·K + k
        clean = wide - self.nuisance @ (self.nuisance.T @ wide)  # C = P L
        self.clean = tf.constant(clean)
        self.nuisance_tf = tf.constant(self.nuisance)
        # OLS: k' (C_r'C_s) k for all voxels as one product (voxels × K²) @ (K² × R²)
        blocks = (clean.T @ clean).reshape(n_reg, taps, n_reg, taps)
        self.ols_blocks = tf.constant(blocks.transpose(1, 3, 0, 2).reshape(taps * taps, n_reg * n_reg))
        # GLS: per run, (S0, S1, lag) of [C | N], weighted per voxel by (1, ρ², −ρ)
        moments = np.stack([m.numpy() for m in structure.moments(np.hstack([clean, self.nuisance]))], axis=1)
        moments = moments.reshape(-1, *moments.shape[2:])  # (runs · 3, p, p)
        self.n_moments = moments.shape[0]
        split = n_reg * taps
        regressors_part = moments[:, :split, :split].reshape(self.n_moments, n_reg, taps, n_reg, taps)
        self.gls_regressors = tf.constant(regressors_part.transpose(2, 4, 0, 1, 3).reshape(
            taps * taps, self.n_moments * n_reg * n_reg))
        cross = moments[:, :split, split:].reshape(self.n_moments, n_reg, taps, rank)
        self.gls_cross = tf.constant(cross.transpose(0, 2, 1, 3).reshape(self.n_moments * taps, n_reg * rank))
        self.gls_nuisance = tf.constant(moments[:, split:, split:].reshape(self.n_moments, rank * rank))
        self.not_last_tf = tf.constant(~structure.last[:, None])
        self.interior_tf = tf.constant((~structure.first & ~structure.last)[:, None])

    def bytes_per_voxel(self, n_time):
        r, taps, n_reg = self.rank, self.n_taps, self.n_reg
        series = 4 * n_time + 8 * 7 * n_time  # the float32 chunk; float64 data, residuals, ρ, Q e, temporaries
        systems = 8 * (5 * r * r + 2 * r * (self.n_columns + 4))  # blocks, G, Cholesky; contrast solves
        small = 8 * (2 * taps * taps + self.n_moments * (n_reg * n_reg + taps) + 4 * n_reg * taps)
        return series + systems + small

    def ols(self, y, start, stop):
        """The OLS fit of voxels ``start:stop`` (data ``y``, time × v): (kernels (v × K), their outer products
        (v × K²), the regressors' Gram matrices and Cholesky factors (v × R × R), β (v × R), residuals (T × v),
        all float64)."""
        y = tf.cast(y, DTYPE)  # (T, v)
        kernels = tf.constant(self.kernels[start:stop])  # (v, K)
        n_voxels, n_reg, taps = kernels.shape[0], self.n_reg, self.n_taps
        outer = tf.reshape(kernels[:, :, None] * kernels[:, None, :], [n_voxels, taps * taps])
        gram = tf.reshape(tf.matmul(outer, self.ols_blocks), [n_voxels, n_reg, n_reg])
        moments = tf.reshape(tf.matmul(self.clean, y, transpose_a=True), [n_reg, taps, n_voxels])  # C'y
        rhs = tf.einsum("rkv,vk->vr", moments, kernels)
        chol = tf.linalg.cholesky(gram)
        beta = tf.linalg.cholesky_solve(chol, rhs[:, :, None])[:, :, 0]  # (v, R)
        scaled = tf.reshape(beta[:, :, None] * kernels[:, None, :], [n_voxels, n_reg * taps])  # β_r k_v
        residuals = (y - tf.matmul(self.nuisance_tf, tf.matmul(self.nuisance_tf, y, transpose_a=True))
                     - tf.matmul(self.clean, scaled, transpose_b=True))  # (T, v)
        return kernels, outer, gram, chol, beta, residuals

    def solve(self, y, noise_model, df, start, stop):
        structure = self.structure
        kernels, outer, gram, chol, beta, residuals = self.ols(y, start, stop)
        del y
        n_reg = self.n_reg
        if noise_model == "ols":
            sigma2 = tf.reduce_sum(tf.square(residuals), axis=0) / df
            outputs = contrasts(chol, beta, sigma2, self.t_coordinates[:, :n_reg],
                                [k[:, :n_reg] for k in self.f_coordinates], gram)
            return outputs + (None, sigma2.numpy())
        rho = structure.rho(residuals)  # (runs, v)
        rhs, eqe = self._whitened_moments(residuals, rho, kernels)
        del residuals
        gram = self._gls_gram(kernels, outer, rho)
        chol = tf.linalg.cholesky(gram)
        delta = tf.linalg.cholesky_solve(chol, rhs[:, :, None])[:, :, 0]  # (v, R + k): the GLS fit of e
        sigma2 = tf.maximum(eqe - tf.reduce_sum(delta * rhs, axis=1), 0.0) / df
        gamma = tf.concat([beta + delta[:, :n_reg], delta[:, n_reg:]], axis=1)
        return contrasts(chol, gamma, sigma2, self.t_coordinates, self.f_coordinates, gram) + (rho.numpy(),
                                                                                              sigma2.numpy())

    def _whitened_moments(self, residuals, rho, kernels):
        """``X'Q e`` (v × (R + k)) with each voxel's kernel, and ``e'Q e`` (v,), from ``Q e`` (time × voxels)."""
        whitened, eqe = self.whitened(residuals, rho)
        moments = tf.reshape(tf.matmul(self.clean, whitened, transpose_a=True), [self.n_reg, self.n_taps, -1])
        rhs = tf.concat([tf.einsum("rkv,vk->vr", moments, kernels),
                         tf.matmul(whitened, self.nuisance_tf, transpose_a=True)], axis=1)
        return rhs, eqe

    def whitened(self, residuals, rho):
        """``Q e`` (time × voxels) of the residuals with each run's Prais–Winsten ``Q = W'W``, and ``e'Q e``."""
        structure = self.structure
        rho_t = tf.gather(tf.cast(rho, DTYPE), structure.index_tf)  # (T, v)
        zero = tf.zeros_like(residuals[:1])
        previous = tf.concat([zero, residuals[:-1]], axis=0) * tf.cast(structure.pair_tf, DTYPE)
        following = tf.where(self.not_last_tf, tf.concat([residuals[1:], zero], axis=0), 0.0)
        diagonal = tf.where(self.interior_tf, 1.0 + tf.square(rho_t), tf.ones_like(rho_t))
        whitened = diagonal * residuals - rho_t * (previous + following)  # Q e
        del previous, following, diagonal, rho_t
        return whitened, tf.reduce_sum(residuals * whitened, axis=0)

    def regressor_gram(self, outer, rho):
        """The regressors' block of each voxel's ``X'QX`` (v × R × R), from its kernel's outer products and ρ; and
        the per-voxel weights (1, ρ², −ρ) of each run's moments (v × 3 runs)."""
        n_voxels, n_reg = outer.shape[0], self.n_reg
        rho = tf.transpose(tf.cast(rho, DTYPE))  # (v, runs)
        weights = tf.reshape(tf.stack([tf.ones_like(rho), tf.square(rho), -rho], axis=2), [n_voxels, -1])  # (v, n)
        regressors = tf.reshape(tf.matmul(outer, self.gls_regressors), [n_voxels, self.n_moments, n_reg, n_reg])
        return tf.einsum("vn,vnrs->vrs", weights, regressors), weights

    def _gls_gram(self, kernels, outer, rho):
        """Each voxel's ``X'QX`` ((R + k) × (R + k)) from the shared per-run moments, its kernel and ρ."""
        n_voxels, n_reg, rank = kernels.shape[0], self.n_reg, self.n_nuisance
        regressors, weights = self.regressor_gram(outer, rho)
        weighted = tf.reshape(weights[:, :, None] * kernels[:, None, :], [n_voxels, -1])  # (v, n · K)
        cross = tf.reshape(tf.matmul(weighted, self.gls_cross), [n_voxels, n_reg, rank])
        nuisance = tf.reshape(tf.matmul(weights, self.gls_nuisance), [n_voxels, rank, rank])
        return tf.concat([tf.concat([regressors, cross], axis=2),
                          tf.concat([tf.transpose(cross, [0, 2, 1]), nuisance], axis=2)], axis=1)
