"""AR(1) generalised least squares of several runs from moments of the OLS residuals, and contrasts from per-voxel
Cholesky factors.

Each run has its own coefficient ρ_r, so a voxel's normal equations ``G = Σ_r S0_r + ρ_r² S1_r − ρ_r L_r`` (the
run's cross-products, those of its interior volumes and its lag-one cross-products) share no eigenbasis across
voxels: they are factorised per voxel (batched Cholesky, float64). The data enter only through moments of the OLS
residuals ``e`` of each run: their lag-one autocorrelation gives ρ, their Prais–Winsten whitening ``We`` (float32,
rounded at its own scale) gives the right-hand side ``Z'W'We`` and ``e'Qe = |We|²``. The refit is solved for
``e`` (coefficients ``g + δ``); the residual sum of squares is ``e'Qe − δ'Z'Qe``.
"""

from __future__ import annotations

import numpy as np

from .._tensorflow import tf

DTYPE = tf.float64
MAX_RHO = 0.99


def block_moments(e, rho, shifted, first_row):
    """``Z'W'We`` (k × v) and ``|We|²`` (v,) of one contiguous block of volumes, with its Prais–Winsten ``W``.

    ``We`` is formed in float32 (its rounding is at its own scale), then contracted with the shifted design
    ``[Z_{1:}, Z_{:−1}]`` (float32, (T − 1) × 2k) and the block's first row ``z_0``; the small results are float64.
    """
    k = first_row.shape[0]
    w = e[1:] - tf.cast(rho, e.dtype) * e[:-1]
    scale = tf.sqrt(1.0 - tf.square(rho))
    w0 = scale * tf.cast(e[0], DTYPE)
    moments = tf.cast(tf.matmul(shifted, w, transpose_a=True), DTYPE)  # (2k, v)
    rhs = moments[:k] - rho * moments[k:] + first_row[:, None] * (scale * w0)[None]
    return rhs, tf.cast(tf.reduce_sum(tf.square(w), axis=0), DTYPE) + tf.square(w0)


def lag_one(e, segments, n_runs, kept=None):
    """The lag-one autocorrelation of residuals (time × v) within each run (runs × v), clipped to ±0.99, from the
    run's contiguous blocks ``segments`` ((start, stop, run) each); ``kept`` (time × 1, 0 at censored volumes)
    leaves censored volumes out."""
    if kept is not None:
        e = e * tf.cast(kept, e.dtype)
    sl, ss = [0.0] * n_runs, [0.0] * n_runs
    for a, b, run in segments:
        block = e[a:b]
        sl[run] += tf.reduce_sum(block[1:] * block[:-1], axis=0)
        ss[run] += tf.reduce_sum(tf.square(block), axis=0)
    sl, ss = tf.cast(tf.stack(sl), DTYPE), tf.cast(tf.stack(ss), DTYPE)
    return tf.clip_by_value(tf.math.divide_no_nan(sl, ss), -MAX_RHO, MAX_RHO)


def null_basis(rows):
    """An orthonormal basis of the null space of a contrast's rows (k × m), m = k − rank."""
    _, s, vt = np.linalg.svd(rows)
    return vt[int((s > s[0] * 1e-10).sum()):].T


class RunMoments:
    """The shifted design of each contiguous block of volumes of a run (segments), for :func:`block_moments`."""

    def __init__(self, z, structure):
        self.segments = structure.segments
        self.shifted = [tf.constant(np.hstack([z[a + 1:b], z[a:b - 1]]).astype(np.float32))
                        for a, b, _ in self.segments]
        self.first_rows = [tf.constant(z[a]) for a, _, _ in self.segments]
        self.structure = structure

    def rhs(self, e):
        """``Z'Qe`` (k × v), ``e'Qe`` (v,) and ρ (runs × v, the lag-one autocorrelation of e within each run)."""
        rho = self.structure.rho(e)
        rhs = eqe = 0.0
        for (a, b, run), shifted, first_row in zip(self.segments, self.shifted, self.first_rows, strict=True):
            block_rhs, block_eqe = block_moments(e[a:b], rho[run], shifted, first_row)
            rhs += block_rhs
            eqe += block_eqe
        return rhs, eqe, rho


def gram(moments, rho):
    """Each voxel's ``Σ_r S0_r + ρ_r² S1_r − ρ_r L_r`` (v × k × k) from the per-run moments (3 × runs × k × k)."""
    s0, s1, lag = moments
    runs, k = s0.shape[0], s0.shape[1]
    shared = tf.reshape(tf.concat([s1, lag], axis=0), [2 * runs, k * k])
    weights = tf.transpose(tf.concat([tf.square(rho), -rho], axis=0))  # (v, 2 runs)
    return tf.reshape(tf.matmul(weights, shared), [-1, k, k]) + tf.reduce_sum(s0, axis=0)[None]


def contrasts(chol, gamma, sigma2, t_coordinates, f_coordinates, gram_matrices=None):
    """Effects, variances (n_t × v) and F values (list of v) from per-voxel Cholesky factors and coefficients.

    One triangular solve ``W = L⁻¹ K`` for the distinct contrast vectors (``G = L L'``): ``k' G⁻¹ k = |L⁻¹ k|²``
    and an F contrast's ``K' G⁻¹ K = W' W``. An F contrast whose null space N is smaller than its q rows uses
    ``b'Gb − (N'Gb)' (N'GN)⁻¹ (N'Gb)`` instead (the fit restricted to ``Kb = 0``), when G is given.
    """
    n_voxels = gamma.shape[0]
    t_coordinates = np.asarray(t_coordinates, dtype=float).reshape(-1, gamma.shape[1])
    n_t = len(t_coordinates)
    finite_t = ~np.isnan(t_coordinates).any(axis=1)
    nulls = []
    for k in f_coordinates:
        null = None
        if gram_matrices is not None and not np.isnan(k).any():
            candidate = null_basis(k)
            if candidate.shape[1] < k.shape[0]:
                null = candidate
        nulls.append(null)
    wanted = [t_coordinates[finite_t]] + [k for k, null in zip(f_coordinates, nulls, strict=True)
                                           if null is None and not np.isnan(k).any()]
    wanted = np.vstack(wanted)
    solved = squares = None
    if len(wanted):
        unique, inverse = np.unique(wanted, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        columns = tf.constant(unique.T)  # (r, n)
        solved = tf.linalg.triangular_solve(chol, tf.broadcast_to(columns, [n_voxels, *columns.shape]), lower=True)
        squares = tf.reduce_sum(tf.square(solved), axis=1)  # (v, n): k' G⁻¹ k of each distinct vector
    effects = variances = np.zeros((0, n_voxels))
    if n_t:
        effects = tf.matmul(gamma, tf.constant(np.nan_to_num(t_coordinates).T)).numpy().T
        variances = np.full((n_t, n_voxels), np.nan)
        n_finite = int(finite_t.sum())
        if n_finite:
            variances[finite_t] = (tf.gather(squares, inverse[:n_finite], axis=1) * sigma2[:, None]).numpy().T
        effects[~finite_t] = np.nan
    fs, position = [], int(finite_t.sum())
    for k, null in zip(f_coordinates, nulls, strict=True):
        if np.isnan(k).any():  # not estimable
            fs.append(np.full(n_voxels, np.nan))
            continue
        estimate = tf.matmul(gamma, tf.constant(k.T))  # (v, q)
        if null is None:
            w = tf.gather(solved, inverse[position:position + k.shape[0]], axis=2)
            position += k.shape[0]
            middle = tf.matmul(w, w, transpose_a=True)  # (v, q, q)
            quadratic = quadratic_form(middle, estimate)
        else:
            g_gamma = tf.linalg.matvec(gram_matrices, gamma)  # G b
            quadratic = tf.reduce_sum(gamma * g_gamma, axis=1)
            if null.shape[1]:
                basis = tf.constant(null)
                middle = tf.einsum("km,vkl,ln->vmn", basis, gram_matrices, basis)
                quadratic -= quadratic_form(middle, tf.matmul(g_gamma, basis))
        fs.append((quadratic / (k.shape[0] * sigma2)).numpy())
    return effects, variances, fs


def quadratic_form(middle, h):
    """``h' A⁻¹ h`` per voxel: A (v × n × n) symmetric positive definite, h (v × n)."""
    if middle.shape[1] == 1:
        return h[:, 0] ** 2 / middle[:, 0, 0]
    chol = tf.linalg.cholesky(middle)
    solved = tf.linalg.triangular_solve(chol, h[:, :, None], lower=True)
    return tf.reduce_sum(tf.square(solved[:, :, 0]), axis=1)
