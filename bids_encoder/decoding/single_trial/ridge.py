"""Fractional ridge regression per voxel (Rokem & Kay, 2020), in the eigenbasis of the trial design.

With X̃ᵀX̃ = V diag(e) Vᵀ and ``r = Vᵀ X̃ᵀ y`` (the *rotated* data), ordinary least squares is ``α = r / e`` and
ridge with parameter λ is ``α(λ) = r / (e + λ)`` (β = V α). A *fraction* γ asks for the λ at which
``‖β(λ)‖ = γ ‖β_OLS‖``: ``f(λ) = Σ (e/(e+λ))² α² / Σ α²`` falls monotonically from 1 (λ = 0) to 0, and λ solves
``f(λ) = γ²``. As Rokem & Kay, λ is first read off ``f`` on a log-spaced grid (one matrix product for all voxels:
``f`` is linear in α²), interpolated linearly in (log f, log λ); :func:`refine_lambdas` then takes Newton steps on
``log f(log λ)`` to solve it to machine precision. Fractions span the whole range of regularisation whatever the
scale of the data and of the design, and the same grid of fractions serves every voxel.

Everything here takes TensorFlow tensors, batched over voxels (columns); the leading axis runs over the design's
directions (the trials' eigen-directions of all runs, concatenated).
"""

from __future__ import annotations

import numpy as np

from ..._tensorflow import tf

__all__ = ["DEFAULT_FRACTIONS", "interpolate_lambdas", "refine_lambdas", "ridge_coordinates", "gcv_scores",
           "affine_fit"]

DEFAULT_FRACTIONS = tuple(float(f) for f in np.round(np.arange(0.05, 1.0001, 0.05), 2))  # GLMsingle's grid
GRID_POINTS = 200
NEWTON_STEPS = 4
F64 = tf.float64


def lambda_grid(eigenvalues, points=GRID_POINTS):
    """Log-spaced λ from 10⁻⁴ of the smallest kept eigenvalue to 10⁴ times the largest."""
    kept = eigenvalues[eigenvalues > 0]
    if kept.size == 0:
        return np.ones(1)
    return np.exp(np.linspace(np.log(kept.min() * 1e-4), np.log(kept.max() * 1e4), points))


def _squared_ols(eigenvalues, rotated):
    """α² = (r / e)², 0 on dropped directions (M × V, float64)."""
    e = tf.constant(eigenvalues[:, None], F64)
    safe = tf.where(e > 0, e, tf.ones_like(e))
    return tf.where(e > 0, tf.square(tf.cast(rotated, F64) / safe), tf.zeros([], F64))


def interpolate_lambdas(eigenvalues, rotated, fractions, points=GRID_POINTS):
    """λ (fractions × voxels, float64) from the grid, interpolated; 0 for a fraction of 1 (and for voxels with
    no least-squares norm)."""
    grid = lambda_grid(eigenvalues, points)
    a2 = _squared_ols(eigenvalues, rotated)
    total = tf.reduce_sum(a2, axis=0)  # (V,)
    weights = tf.constant((eigenvalues[None, :] / (eigenvalues[None, :] + grid[:, None])) ** 2, F64)  # (G, M)
    ratio = tf.matmul(weights, a2) / tf.maximum(total, 1e-300)  # (G, V): f on the grid, decreasing
    log_ratio = tf.transpose(tf.math.log(tf.maximum(ratio, 1e-300)))  # (V, G)
    fractions = np.asarray(fractions, dtype=np.float64)
    targets = tf.constant(np.log(np.minimum(fractions, 1.0) ** 2), F64)  # (F,)
    above = tf.reduce_sum(tf.cast(log_ratio[:, None, :] > targets[None, :, None], tf.int32), axis=2)  # (V, F)
    upper = tf.clip_by_value(above, 1, len(grid) - 1)
    lower = upper - 1
    f0 = tf.gather(log_ratio, lower, batch_dims=1)  # (V, F)
    f1 = tf.gather(log_ratio, upper, batch_dims=1)
    log_grid = tf.constant(np.log(grid), F64)
    u0, u1 = tf.gather(log_grid, lower), tf.gather(log_grid, upper)
    difference = f1 - f0
    step = tf.where(tf.abs(difference) > 0, (targets[None, :] - f0) / tf.where(tf.abs(difference) > 0,
                                                                               difference, 1.0), 0.0)
    u = u0 + tf.clip_by_value(step, -4.0, 4.0) * (u1 - u0)  # beyond the grid: extrapolate a little
    keep = tf.logical_and((total > 0)[:, None], tf.constant(fractions < 1.0)[None, :])
    return tf.transpose(tf.where(keep, tf.exp(u), tf.zeros([], F64)))


def refine_lambdas(eigenvalues, rotated, lambdas, fractions, steps=NEWTON_STEPS):
    """Newton steps on g(u) = log f(e^u) − log γ² from ``lambdas`` (fractions × voxels; fractions: one per row,
    or one per element of a (fractions × voxels) array); float64."""
    a2 = _squared_ols(eigenvalues, rotated)  # (M, V)
    total = tf.reduce_sum(a2, axis=0)
    e = tf.constant(eigenvalues[:, None, None], F64)
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim == 1:
        fractions = np.broadcast_to(fractions[:, None], lambdas.shape)
    target = tf.constant(np.log(np.maximum(fractions, 1e-300) ** 2), F64)
    positive = tf.logical_and(tf.constant(fractions < 1.0), (total > 0)[None, :])
    u = tf.math.log(tf.where(lambdas > 0, lambdas, tf.ones_like(lambdas)))
    for _ in range(steps):
        lam = tf.exp(u)[None]
        w2a2 = tf.square(e / (e + lam)) * a2[:, None, :]  # (M, F, V)
        numerator = tf.reduce_sum(w2a2, axis=0)
        slope = -2.0 * lam[0] * tf.reduce_sum(w2a2 / (e + lam), axis=0) / tf.maximum(numerator, 1e-300)
        g = tf.math.log(tf.maximum(numerator, 1e-300) / tf.maximum(total, 1e-300)[None, :]) - target
        u = u - tf.clip_by_value(g / tf.where(slope < 0, slope, -1.0), -2.0, 2.0)
    return tf.where(positive, tf.exp(u), tf.zeros([], F64))


def ridge_coordinates(eigenvalues, rotated, lambdas, dtype=tf.float32):
    """α(λ) = r / (e + λ) for every λ: (M × F × V); 0 on dropped directions."""
    e = tf.constant(eigenvalues[:, None, None], F64)
    lam = tf.cast(lambdas, F64)[None]
    denominator = e + lam
    alpha = tf.cast(rotated, F64)[:, None, :] / tf.where(denominator > 0, denominator, 1.0)
    return tf.cast(tf.where(e > 0, alpha, tf.zeros([], F64)), dtype)


def gcv_scores(eigenvalues, rotated, lambdas, residual_ss, dof):
    """Generalised cross-validation (Golub, Heath & Wahba, 1979) of the time series for every λ:
    RSS(λ) / (n − df(λ))², with RSS(λ) = ‖ỹ‖² − Σ r²/e + Σ (λ/(e+λ))² r²/e and df(λ) = Σ e/(e+λ); (F × V)."""
    e = tf.constant(eigenvalues[:, None, None], F64)
    lam = tf.cast(lambdas, F64)[None]
    r = tf.cast(rotated, F64)[:, None, :]
    safe = tf.where(e > 0, e, tf.ones_like(e))
    z2 = tf.where(e > 0, tf.square(r) / safe, tf.zeros([], F64))  # squared coordinates of ỹ in U
    shrink = tf.where(e > 0, lam / (e + lam), tf.zeros([], F64))
    rss = tf.cast(residual_ss, F64)[None, :] - tf.reduce_sum(z2, axis=0) + tf.reduce_sum(tf.square(shrink) * z2,
                                                                                          axis=0)
    df = tf.reduce_sum(tf.where(e > 0, e / (e + lam), tf.zeros([], F64)), axis=0)
    return tf.maximum(rss, 0.0) / tf.square(tf.maximum(dof - df, 1e-3))


def affine_fit(target, betas):
    """Per voxel (and fraction) scale a and offset c of ``target ≈ a · betas + c`` by least squares over the
    leading axis; ``target`` (T × V), ``betas`` (T × F × V) → a, c (F × V). a = 0 where the betas are constant."""
    target = tf.cast(target, tf.float32)[:, None, :]
    mean_b = tf.reduce_mean(betas, axis=0)
    mean_t = tf.reduce_mean(target, axis=0)
    centred = betas - mean_b
    variance = tf.reduce_sum(tf.square(centred), axis=0)
    covariance = tf.reduce_sum(centred * (target - mean_t), axis=0)
    scale = tf.where(variance > 0, covariance / tf.maximum(variance, 1e-30), 0.0)
    return scale, mean_t - scale * mean_b
