"""Chunk-level computations of :func:`~.estimator.fit_single_trials` (TensorFlow, float32 data, float64 small
systems): scaling, residualisation, the on/off model, least-squares and fractional-ridge betas of a group of voxels
that share an HRF."""

from __future__ import annotations

import numpy as np

from ..._tensorflow import tf
from . import ridge as ridge_ops

F64 = tf.float64


def as_tensor(block):
    """A (time × voxels) block as a float32 tensor (a column-major block is copied as its transpose)."""
    block = np.asarray(block, dtype=np.float32)
    if block.flags.f_contiguous and not block.flags.c_contiguous:
        return tf.transpose(tf.constant(block.T))
    return tf.constant(block)


def run_means(y, runs):
    """Each run's mean of every voxel (runs × voxels) and whether the voxel varies within every run."""
    means, varies = [], []
    for run in runs:
        part = y[run.start:run.stop]
        means.append(tf.reduce_mean(part, axis=0))
        varies.append(tf.reduce_max(part, axis=0) > tf.reduce_min(part, axis=0))
    return tf.stack(means), tf.reduce_all(tf.stack(varies), axis=0)


def scale(y, runs, means, scaling):
    """Percent signal change per run, ``100 · (y / mean − 1)`` (``scaling='psc'``), or the data as they are; voxels
    with a non-positive mean get zeros (they are not fitted)."""
    if scaling != "psc":
        return y
    parts = []
    for number, run in enumerate(runs):
        mean = means[number]
        safe = tf.where(mean > 0, mean, tf.ones_like(mean))
        parts.append(tf.where(mean > 0, 100.0 * (y[run.start:run.stop] / safe - 1.0), 0.0))
    return tf.concat(parts, axis=0)


def residualise(y, basis):
    """y − B Bᵀ y for an orthonormal basis B (time × q, float64 numpy)."""
    if basis is None or basis.shape[1] == 0:
        return y
    b = tf.constant(basis.astype(np.float32))
    return y - tf.matmul(b, tf.matmul(b, y, transpose_a=True))


def on_off_stats(y, basis, on_off):
    """Sufficient statistics of the on/off model in one block: õᵀỹ (HRFs × voxels), ‖ỹ‖² (voxels,), ‖õ‖² (HRFs,)
    and ỹ itself; ``on_off`` (time × HRFs) is already residualised against ``basis``."""
    residual = residualise(y, basis)
    o = tf.constant(on_off.astype(np.float32))
    cross = tf.cast(tf.matmul(o, residual, transpose_a=True), F64)
    energy = tf.cast(tf.reduce_sum(tf.square(residual), axis=0), F64)
    return cross, energy, np.sum(on_off**2, axis=0), residual


def on_off_fit(cross, energy, norms):
    """In-sample on/off R² per HRF from the blocks' statistics (lists over blocks), and the betas (HRFs × V)."""
    c = tf.add_n(cross)
    e = tf.add_n(energy)
    n = tf.constant(np.sum(norms, axis=0)[:, None], F64)
    beta = c / tf.maximum(n, 1e-300)
    r2 = tf.square(c) / tf.maximum(n * e[None, :], 1e-300)
    return tf.where(e[None, :] > 0, r2, np.nan), beta


def on_off_cv(cross, energy, norms):
    """Leave-one-block-out cvR² of the on/off model per HRF (HRFs × V): each block predicted by the beta of the
    others, its nuisance fitted on itself."""
    c_total = tf.add_n(cross)
    n_total = np.sum(norms, axis=0)
    sse = 0.0
    for c, e, n in zip(cross, energy, norms, strict=True):
        others = tf.constant((n_total - n)[:, None], F64)
        beta = (c_total - c) / tf.maximum(others, 1e-300)
        sse = sse + e[None, :] - 2.0 * beta * c + tf.square(beta) * tf.constant(n[:, None], F64)
    e_total = tf.add_n(energy)
    return tf.where(e_total[None, :] > 0, 1.0 - sse / tf.maximum(e_total[None, :], 1e-300), np.nan)


def component_curve(blocks_stats, block_components, hrf_of_voxel, max_components):
    """Leave-one-block-out cvR² of the on/off model with 0 … K_max noise components ((K_max + 1) × V), each voxel
    with its HRF. ``blocks_stats``: per block (õᵀỹ (H × V), ‖ỹ‖², ‖õ‖², ỹ, õ (time × H)); components of each
    block orthonormalised in order against its basis, so adding component k removes (p̃_kᵀỹ)² from ‖ỹ‖² and
    (p̃_kᵀõ)(p̃_kᵀỹ) from õᵀỹ."""
    index = tf.constant(np.asarray(hrf_of_voxel, dtype=np.int32))
    cross, energy, norms = [], [], []
    for (c, e, n, residual, on_off), p in zip(blocks_stats, block_components, strict=True):
        c = tf.gather(tf.transpose(c), index[:, None], batch_dims=1)[:, 0]  # (V,) at each voxel's HRF
        n = tf.constant(n.astype(np.float64))
        n = tf.gather(n, index)
        k = 0 if p is None else min(p.shape[1], max_components)
        if k:
            pt = tf.constant(p[:, :k].astype(np.float32))
            py = tf.cast(tf.matmul(pt, residual, transpose_a=True), F64)  # (k, V)
            po = tf.gather(tf.constant(p[:, :k].T @ on_off), index, axis=1)  # (k, V)
            c_k = c[None] - tf.cumsum(po * py, axis=0)
            e_k = e[None] - tf.cumsum(tf.square(py), axis=0)
            n_k = n[None] - tf.cumsum(tf.square(po), axis=0)
            c, e, n = (tf.concat([v[None], w], axis=0) for v, w in ((c, c_k), (e, e_k), (n, n_k)))
        else:
            c, e, n = c[None], e[None], n[None]
        pad = max_components + 1 - c.shape[0]  # a block with fewer components keeps its last value
        if pad:
            c, e, n = (tf.concat([v, tf.repeat(v[-1:], pad, axis=0)], axis=0) for v in (c, e, n))
        cross.append(c)
        energy.append(e)
        norms.append(n)
    c_total, n_total, e_total = tf.add_n(cross), tf.add_n(norms), tf.add_n(energy)
    sse = 0.0
    for c, e, n in zip(cross, energy, norms, strict=True):
        beta = (c_total - c) / tf.maximum(n_total - n, 1e-300)
        sse = sse + e - 2.0 * beta * c + tf.square(beta) * n
    return 1.0 - sse / tf.maximum(e_total, 1e-300)


def pearson(a, b):
    """Correlation over the leading axis (broadcasting the others); 0 where either side is constant."""
    a = a - tf.reduce_mean(a, axis=0)
    b = b - tf.reduce_mean(b, axis=0)
    denominator = tf.sqrt(tf.reduce_sum(tf.square(a), axis=0) * tf.reduce_sum(tf.square(b), axis=0))
    return tf.where(denominator > 0, tf.reduce_sum(a * b, axis=0) / tf.maximum(denominator, 1e-30), 0.0)


class GroupSolve:
    """Least squares of one group of voxels (one HRF, one number of components) over all runs: rotated data
    ``Vᵀ X̃ᵀ y`` per run (float64), OLS betas in trial order (estimated trials × voxels, float32), and what R²,
    GCV and ridge need."""

    def __init__(self, systems, residuals):
        """``systems``: one TrialSystem per run; ``residuals``: the group's ỹ of every run (time × Vg)."""
        self.systems = systems
        self.rotated, betas = [], []
        rss_terms = 0.0
        for system, y in zip(systems, residuals, strict=True):
            if system.design_t.shape[0] == 0:
                self.rotated.append(tf.zeros([0, y.shape[1]], F64))
                continue
            rhs = tf.cast(tf.matmul(tf.constant(system.design_t), y), F64)
            rotated = tf.matmul(tf.constant(system.eigenvectors.T), rhs)
            self.rotated.append(rotated)
            inverse = np.where(system.keep, 1.0 / np.where(system.keep, system.eigenvalues, 1.0), 0.0)
            alpha = rotated * inverse[:, None]
            betas.append(tf.matmul(tf.constant(system.eigenvectors), alpha))
            rss_terms = rss_terms + tf.reduce_sum(rotated * alpha, axis=0)  # ‖ỹ projected on X̃‖²
        self.energy = tf.add_n([tf.cast(tf.reduce_sum(tf.square(y), axis=0), F64) for y in residuals])
        self.explained_ols = rss_terms
        self.ols = tf.cast(tf.concat(betas, axis=0), tf.float32)
        self.eigenvalues = np.concatenate([s.eigenvalues for s in systems])
        self.rotated_all = tf.concat(self.rotated, axis=0)

    def to_trials(self, alpha):
        """Back from eigen-coordinates (M × … × Vg, runs concatenated) to trial betas (same shape)."""
        parts, start = [], 0
        for system in self.systems:
            m = system.eigenvectors.shape[0]
            block = alpha[start:start + m]
            shape = tf.shape(block)
            flat = tf.reshape(block, [m, -1])
            parts.append(tf.reshape(tf.matmul(tf.constant(system.eigenvectors.astype(np.float32)), flat), shape))
            start += m
        return tf.concat(parts, axis=0)

    def r2(self, betas):
        """In-sample R² of trial betas (trials × Vg) against ỹ: 1 − ‖ỹ − X̃b‖² / ‖ỹ‖², from the rotated data."""
        start, fitted, cross = 0, 0.0, 0.0
        b = tf.cast(betas, F64)
        for system, rotated in zip(self.systems, self.rotated, strict=True):
            m = system.eigenvectors.shape[0]
            coordinates = tf.matmul(tf.constant(system.eigenvectors.T), b[start:start + m])  # Vᵀ b
            fitted = fitted + tf.reduce_sum(tf.constant(system.eigenvalues[:, None]) * tf.square(coordinates), 0)
            cross = cross + tf.reduce_sum(coordinates * rotated, axis=0)
            start += m
        rss = self.energy - 2.0 * cross + fitted
        return tf.where(self.energy > 0, 1.0 - rss / tf.maximum(self.energy, 1e-300), np.nan)


def stacked_ols(stacks, residuals):
    """Least-squares betas (B × trials × Vg) of a group for B stacked designs of every run (``stacks``: one
    :func:`~.design.stacked_systems` per run; ``residuals``: the group's ỹ of every run)."""
    parts = []
    for (design_t, values, vectors, keep), y in zip(stacks, residuals, strict=True):
        n_batch, m = values.shape
        if m == 0:
            parts.append(tf.zeros([n_batch, 0, y.shape[1]], F64))
            continue
        rhs = tf.reshape(tf.cast(tf.matmul(tf.constant(design_t), y), F64), [n_batch, m, -1])
        rotated = tf.matmul(tf.constant(vectors), rhs, transpose_a=True)
        inverse = np.where(keep, 1.0 / np.where(keep, values, 1.0), 0.0)
        parts.append(tf.matmul(tf.constant(vectors), rotated * inverse[:, :, None]))
    return tf.cast(tf.concat(parts, axis=1), tf.float32)


def ridge_group(solve, fractions, repeats, rescale, dof):
    """Fractional ridge betas of a group: the fraction per voxel chosen among ``fractions`` (one: fixed) by the
    repeated trials' prediction (``repeats.usable``) or GCV, then (``rescale``) the affine map onto the
    least-squares betas. Returns (betas (trials × Vg) float32, fraction index (Vg,), scale, offset)."""
    eigenvalues, rotated = solve.eigenvalues, solve.rotated_all
    n_voxels = solve.ols.shape[1]
    if len(fractions) == 1:
        chosen = tf.zeros([n_voxels], tf.int32)
    else:
        lambdas = ridge_ops.interpolate_lambdas(eigenvalues, rotated, fractions)  # (F, Vg)
        if repeats is not None and repeats.usable:
            betas = solve.to_trials(ridge_ops.ridge_coordinates(eigenvalues, rotated, lambdas))  # (M, F, Vg)
            partners = repeats.partner_means(tf.gather(betas, repeats.rows))
            del betas
            target = tf.gather(solve.ols, repeats.rows)[:, None, :]
            score = -pearson(target, partners)  # (F, Vg); invariant to the rescaling that follows
        else:
            score = tf.cast(ridge_ops.gcv_scores(eigenvalues, rotated, lambdas, solve.energy, dof), tf.float32)
        # ties go to the largest fraction (least regularisation)
        chosen = len(fractions) - 1 - tf.argmin(tf.reverse(score, axis=[0]), axis=0, output_type=tf.int32)
    fraction = tf.gather(tf.constant(np.asarray(fractions, np.float64)), chosen)
    start = ridge_ops.interpolate_lambdas(eigenvalues, rotated, fractions)
    start = tf.gather(tf.transpose(start), chosen[:, None], batch_dims=1)[:, 0][None]
    lambdas = ridge_ops.refine_lambdas(eigenvalues, rotated, start, fraction.numpy()[None, :])
    alpha = ridge_ops.ridge_coordinates(eigenvalues, rotated, lambdas, dtype=F64)[:, 0, :]
    betas = tf.cast(solve.to_trials(tf.cast(alpha, tf.float32)[:, None, :])[:, 0, :], tf.float32)
    if rescale:
        a, c = ridge_ops.affine_fit(solve.ols, betas[:, None, :])
        a, c = a[0], c[0]
        betas = a[None] * betas + c[None]
    else:
        a, c = tf.ones([n_voxels]), tf.zeros([n_voxels])
    return betas, chosen.numpy(), a.numpy(), c.numpy()
