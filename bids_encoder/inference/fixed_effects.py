"""Fixed effects over several first-level inputs (runs or sessions of one participant), per voxel (numpy).

Precision weighted (default): ``effect = Σ(eᵢ/vᵢ) / Σ(1/vᵢ)``, ``variance = 1 / Σ(1/vᵢ)``. Unweighted: the mean
effect and ``variance = Σvᵢ / n²`` (the variance of that mean). Degrees of freedom are the sum of the inputs'
degrees of freedom, ``t = effect / √variance``, z and the one-sided (upper-tail) p from t on those degrees of
freedom (:func:`~bids_encoder.inference.statistics.t_to_z_p`). An input whose effect or variance is NaN (or whose
variance is not positive) at a voxel drops out there, its degrees of freedom too; a voxel without any input is NaN.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .statistics import t_to_z_p

logger = logging.getLogger(__name__)

__all__ = ["FixedEffects", "fixed_effects"]


@dataclass
class FixedEffects:
    """Per-voxel fixed-effects estimates (what :func:`fixed_effects` returns).

    Parameters
    ----------
    effect, variance : ndarray, shape (voxels,)
        The combined effect and its sampling variance.
    t, z, p : ndarray, shape (voxels,)
        Its t statistic, the z of the same one-sided tail, the upper-tail p.
    df : ndarray, shape (voxels,)
        Degrees of freedom (the sum of the inputs' with a value at the voxel).
    """

    effect: np.ndarray
    variance: np.ndarray
    t: np.ndarray
    z: np.ndarray
    p: np.ndarray
    df: np.ndarray


def fixed_effects(effects, variances, dofs, precision_weighted=True):
    """Combine first-level effects and their sampling variances by fixed effects.

    Parameters
    ----------
    effects, variances : array-like (inputs × voxels)
        Effects and their sampling variances; NaN where an input has no value.
    dofs : array-like (inputs,) or (inputs × voxels)
        Degrees of freedom of each input.
    precision_weighted : bool
        Inverse-variance weights (default); False gives each input the same weight.

    Returns
    -------
    FixedEffects
        Arrays of shape (voxels,).
    """
    effects = np.atleast_2d(np.asarray(effects, dtype=np.float64))
    variances = np.atleast_2d(np.asarray(variances, dtype=np.float64))
    if effects.shape != variances.shape:
        raise ValueError(f"effects {effects.shape} and variances {variances.shape} differ in shape")
    dofs = np.asarray(dofs, dtype=np.float64)
    if dofs.ndim == 1:
        if dofs.shape[0] != effects.shape[0]:
            raise ValueError(f"{dofs.shape[0]} degrees of freedom for {effects.shape[0]} inputs")
        dofs = dofs[:, None]
    dofs = np.broadcast_to(dofs, effects.shape)
    present = np.isfinite(effects) & np.isfinite(variances) & (variances > 0) & np.isfinite(dofs)
    count = present.sum(axis=0)
    some = count > 0
    e = np.where(present, effects, 0.0)
    v = np.where(present, variances, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if precision_weighted:
            weights = np.where(present, 1.0 / v, 0.0)
            variance = 1.0 / weights.sum(axis=0)
            effect = (weights * e).sum(axis=0) * variance
        else:
            effect = e.sum(axis=0) / count
            variance = np.where(present, v, 0.0).sum(axis=0) / count.astype(np.float64) ** 2
        effect, variance = np.where(some, effect, np.nan), np.where(some, variance, np.nan)
        t = effect / np.sqrt(variance)
    df = np.where(some, np.where(present, dofs, 0.0).sum(axis=0), np.nan)
    z, p = t_to_z_p(t, np.where(some, df, 1.0))
    logger.debug("Fixed effects of %d inputs: %d of %d voxels with a value", effects.shape[0], int(some.sum()),
                 effects.shape[1])
    return FixedEffects(effect=effect, variance=variance, t=t, z=z, p=p, df=df)
