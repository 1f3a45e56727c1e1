"""Chunk-level computations of :func:`~.estimator.fit_single_trials` (TensorFlow; float32 data, float64 where
sums of squares or small systems need it).

Data are never residualised in full: every regressor that meets the data is residualised against its run's
nuisance basis first (trial regressors, on/off regressors, noise components), so that by Frisch–Waugh–Lovell
``X̃ᵀ ỹ = X̃ᵀ y``, and the energy left by the nuisance is ``‖y‖² − ‖Qᵀy‖²`` (``y`` centred within each run, so that
no large mean is subtracted from itself). Only the noise pool's residual time series are formed explicitly.
"""

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


def scaled_runs(y, runs, means, scaling):
    """Every run's data, centred: percent signal change ``100 · (y / mean − 1)`` (``scaling='psc'``; voxels with a
    non-positive mean get zeros: they are not fitted) or ``y − mean``. A list of (run time × voxels) tensors."""
    parts = []
    for number, run in enumerate(runs):
        mean = means[number]
        part = y[run.start:run.stop]
        if scaling == "psc":
            safe = tf.where(mean > 0, mean, tf.ones_like(mean))
            parts.append(tf.where(mean > 0, 100.0 * (part / safe - 1.0), 0.0))
        else:
            parts.append(part - mean)
    return parts


def constant(matrix):
    return tf.constant(np.ascontiguousarray(matrix, dtype=np.float32))


def energy(y, basis):
    """‖y‖² − ‖Bᵀy‖² per voxel (float64): the energy the orthonormal basis B leaves; and Bᵀy (float32). The sums
    of squares are float32 (y is centred, so ‖y‖² and ‖Bᵀy‖² are of the order of what is left)."""
    total = tf.cast(tf.reduce_sum(tf.square(y), axis=0), F64)
    if basis is None or basis.shape[1] == 0:
        return total, None
    projection = tf.matmul(constant(basis), y, transpose_a=True)
    return total - tf.reduce_sum(tf.square(tf.cast(projection, F64)), axis=0), projection


def residual(y, basis):
    """y − B Bᵀ y (float32)."""
    b = constant(basis)
    return y - tf.matmul(b, tf.matmul(b, y, transpose_a=True))


def segment_stats(y, basis, on_off):
    """The on/off model's statistics in one run or block: õᵀy (HRFs × voxels, float64), the energy left by the
    basis (voxels,) and ‖õ‖² (HRFs,); ``on_off`` (time × HRFs) is residualised against ``basis``."""
    left, _ = energy(y, basis)
    cross = tf.cast(tf.matmul(constant(on_off), y, transpose_a=True), F64)
    return cross, left, np.sum(on_off**2, axis=0)


def on_off_fit(cross, energies, norms):
    """In-sample on/off R² per HRF (HRFs × V) from the runs' statistics (lists)."""
    c = tf.add_n(cross)
    e = tf.add_n(energies)
    n = tf.constant(np.sum(norms, axis=0)[:, None], F64)
    r2 = tf.square(c) / tf.maximum(n * e[None, :], 1e-300)
    return tf.where(e[None, :] > 0, r2, np.nan)


def on_off_cv(cross, energies, norms):
    """Leave-one-block-out cvR² of the on/off model per HRF (HRFs × V): each block predicted by the beta of the
    others, its nuisance fitted on itself."""
    c_total = tf.add_n(cross)
    n_total = np.sum(norms, axis=0)
    sse = 0.0
    for c, e, n in zip(cross, energies, norms, strict=True):
        others = tf.constant((n_total - n)[:, None], F64)
        beta = (c_total - c) / tf.maximum(others, 1e-300)
        sse = sse + e[None, :] - 2.0 * beta * c + tf.square(beta) * tf.constant(n[:, None], F64)
    e_total = tf.add_n(energies)
    return tf.where(e_total[None, :] > 0, 1.0 - sse / tf.maximum(e_total[None, :], 1e-300), np.nan)


def at_hrf(matrix, hrfs):
    """matrix[hrfs[v], v] for (HRFs × V) ``matrix``."""
    index = tf.constant(np.asarray(hrfs, dtype=np.int32))
    return tf.gather(tf.transpose(matrix), index[:, None], batch_dims=1)[:, 0]


def component_curve(blocks, ys, hrfs, max_components):
    """Leave-one-block-out cvR² of the on/off model with 0 … K_max noise components ((K_max + 1) × V), each voxel
    with its HRF. ``blocks``: Blocks (basis, on_off, components orthonormalised in order against the basis);
    ``ys``: each block's data. Adding component k removes (p̃_kᵀy)² from the energy and (p̃_kᵀõ)(p̃_kᵀy) from õᵀy."""
    index = tf.constant(np.asarray(hrfs, dtype=np.int32))
    cross, energies, norms = [], [], []
    for block, y in zip(blocks, ys, strict=True):
        c, e, n = segment_stats(y, block.basis, block.on_off)
        c = at_hrf(c, hrfs)
        n = tf.gather(tf.constant(n.astype(np.float64)), index)
        p = block.components
        k = 0 if p is None else min(p.shape[1], max_components)
        if k:
            py = tf.cast(tf.matmul(constant(p[:, :k]), y, transpose_a=True), F64)  # p̃ ⊥ basis: = p̃ᵀỹ
            po = tf.gather(tf.constant(p[:, :k].T @ block.on_off), index, axis=1)  # (k, V)
            c = tf.concat([c[None], c[None] - tf.cumsum(po * py, axis=0)], axis=0)
            e = tf.concat([e[None], e[None] - tf.cumsum(tf.square(py), axis=0)], axis=0)
            n = tf.concat([n[None], n[None] - tf.cumsum(tf.square(po), axis=0)], axis=0)
        else:
            c, e, n = c[None], e[None], n[None]
        pad = max_components + 1 - c.shape[0]  # a block with fewer components keeps its last value
        if pad:
            c, e, n = (tf.concat([v, tf.repeat(v[-1:], pad, axis=0)], axis=0) for v in (c, e, n))
        cross.append(c)
        energies.append(e)
        norms.append(n)
    c_total, n_total, e_total = tf.add_n(cross), tf.add_n(norms), tf.add_n(energies)
    sse = 0.0
    for c, e, n in zip(cross, energies, norms, strict=True):
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
    ``r = Vᵀ X̃ᵀ y`` per run (float64), OLS betas in trial order (estimated trials × voxels, float32), and what R²,
    GCV and ridge need. ``ys``: the group's centred data of every run; ``left``: the energy the runs' nuisance
    (and components) leave, per voxel."""

    def __init__(self, systems, ys, left):
        self.systems = systems
        self.rotated, betas = [], []
        for system, y in zip(systems, ys, strict=True):
            m = system.eigenvectors.shape[0]
            if m == 0:
                self.rotated.append(tf.zeros([0, y.shape[1]], F64))
                continue
            rhs = tf.cast(tf.matmul(system.design_tensor(), y), F64)
            rotated = tf.matmul(system.eigenvectors_tensor(), rhs, transpose_a=True)
            self.rotated.append(rotated)
            betas.append(tf.matmul(system.eigenvectors_tensor(), rotated * system.inverse[:, None]))
        self.energy = left
        self.ols = tf.cast(tf.concat(betas, axis=0), tf.float32)
        self.eigenvalues = np.concatenate([s.eigenvalues for s in systems])
        self.rotated_all = tf.concat(self.rotated, axis=0)

    def to_trials(self, alpha):
        """Back from eigen-coordinates (M × … × Vg, runs concatenated) to trial betas (same shape, float32)."""
        parts, start = [], 0
        for system in self.systems:
            m = system.eigenvectors.shape[0]
            block = alpha[start:start + m]
            shape = tf.shape(block)
            flat = tf.reshape(block, [m, -1])
            parts.append(tf.reshape(tf.matmul(system.eigenvectors_tensor(tf.float32), flat), shape))
            start += m
        return tf.concat(parts, axis=0)

    def r2(self, betas):
        """In-sample R² of trial betas (trials × Vg) against the data the nuisance leaves."""
        start, fitted, cross = 0, 0.0, 0.0
        b = tf.cast(betas, F64)
        for system, rotated in zip(self.systems, self.rotated, strict=True):
            m = system.eigenvectors.shape[0]
            coordinates = tf.matmul(system.eigenvectors_tensor(), b[start:start + m], transpose_a=True)  # Vᵀ b
            fitted = fitted + tf.reduce_sum(tf.constant(system.eigenvalues[:, None]) * tf.square(coordinates), 0)
            cross = cross + tf.reduce_sum(coordinates * rotated, axis=0)
            start += m
        rss = self.energy - 2.0 * cross + fitted
        return tf.where(self.energy > 0, 1.0 - rss / tf.maximum(self.energy, 1e-300), np.nan)


def stacked_ols(stacks, ys):
    """Least-squares betas (B × trials × Vg) of a group for B stacked designs of every run (``stacks``: one
    :class:`~.design.StackedSystems` per run; ``ys``: the group's centred data of every run)."""
    parts = []
    for stack, y in zip(stacks, ys, strict=True):
        n_batch, m = stack.eigenvalues.shape
        if m == 0:
            parts.append(tf.zeros([n_batch, 0, y.shape[1]], tf.float32))
            continue
        rhs = tf.reshape(tf.cast(tf.matmul(stack.design, y), F64), [n_batch, m, -1])
        rotated = tf.matmul(stack.vectors, rhs, transpose_a=True)
        parts.append(tf.cast(tf.matmul(stack.vectors, rotated * stack.inverse[:, :, None]), tf.float32))
    return tf.concat(parts, axis=1)


def _ridge_alpha(eigenvalues, rotated, lambdas):
    """α(λ) = r / (e + λ) for every λ (F × V), float32 (M × F × V); 0 on dropped directions."""
    e = tf.constant(eigenvalues.astype(np.float32)[:, None, None])
    denominator = e + tf.cast(lambdas, tf.float32)[None]
    alpha = tf.cast(rotated, tf.float32)[:, None, :] / tf.where(denominator > 0, denominator, 1.0)
    return tf.where(e > 0, alpha, 0.0)


def ridge_group(solve, fractions, repeats, rescale, dof):
    """Fractional ridge betas of a group: the fraction per voxel chosen among ``fractions`` (one: fixed) by the
    correlation of the repeated trials' least-squares betas with their partners' mean ridge betas
    (``repeats.usable``) or by GCV, then (``rescale``) the affine map onto the least-squares betas. Returns (betas
    (trials × Vg) float32, fraction index (Vg,), scale, offset, λ)."""
    eigenvalues, rotated = solve.eigenvalues, solve.rotated_all
    n_voxels = solve.ols.shape[1]
    lambdas = ridge_ops.interpolate_lambdas(eigenvalues, rotated, fractions)  # (F, Vg) float64
    if len(fractions) == 1:
        chosen = tf.zeros([n_voxels], tf.int32)
    else:
        if repeats is not None and repeats.usable:
            betas = solve.to_trials(_ridge_alpha(eigenvalues, rotated, lambdas))  # (M, F, Vg)
            partners = repeats.partner_means(tf.gather(betas, repeats.rows))
            del betas
            target = tf.gather(solve.ols, repeats.rows)[:, None, :]
            score = -pearson(target, partners)  # (F, Vg); blind to the rescaling that follows
            del partners
        else:
            score = tf.cast(ridge_ops.gcv_scores(eigenvalues, rotated, lambdas, solve.energy, dof), tf.float32)
        # ties go to the largest fraction (least regularisation)
        chosen = len(fractions) - 1 - tf.argmin(tf.reverse(score, axis=[0]), axis=0, output_type=tf.int32)
    fraction = np.asarray(fractions, np.float64)[chosen.numpy()]
    start = tf.gather(tf.transpose(lambdas), chosen[:, None], batch_dims=1)[:, 0][None]
    lam = ridge_ops.refine_lambdas(eigenvalues, rotated, start, fraction[None, :])
    alpha = ridge_ops.ridge_coordinates(eigenvalues, rotated, lam, dtype=F64)
    betas = solve.to_trials(tf.cast(alpha, tf.float32))[:, 0, :]
    if rescale:
        a, c = ridge_ops.affine_fit(solve.ols, betas[:, None, :])
        a, c = a[0], c[0]
        betas = a[None] * betas + c[None]
    else:
        a, c = tf.ones([n_voxels]), tf.zeros([n_voxels])
    return betas, chosen.numpy(), a.numpy(), c.numpy(), lam.numpy()[0]
