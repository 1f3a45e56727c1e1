"""Across-participant statistics on (participants × voxels) arrays; NaN marks a missing value.

Pure numpy/scipy: the group level feeds it maps of any geometry.
Linear parameters get mean, median, SD and a one-sample t-test; angles (degrees) get circular statistics.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

__all__ = ["count", "linear_summary", "circular_summary", "circular_mean", "circular_median", "circular_sd",
           "one_sample_t"]


def _as_array(values):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, np.newaxis]
    if values.ndim != 2:
        raise ValueError(f"Expected (participants × voxels) values, got shape {values.shape}")
    return values


def count(values):
    """Number of participants with a finite value, per voxel."""
    return np.isfinite(_as_array(values)).sum(axis=0)


def _nan_reduce(function, values, minimum=1):
    """``function`` over axis 0 ignoring NaN; NaN where fewer than ``minimum`` finite values (no warnings)."""
    n = count(values)
    out = np.full(values.shape[1], np.nan)
    keep = n >= minimum
    if keep.any():
        out[keep] = function(values[:, keep], axis=0)
    return out


def linear_summary(values):
    """{'mean', 'median', 'sd'} per voxel; SD with n − 1 (NaN with fewer than two participants)."""
    values = _as_array(values)
    return {"mean": _nan_reduce(np.nanmean, values), "median": _nan_reduce(np.nanmedian, values),
            "sd": _nan_reduce(lambda v, axis: np.nanstd(v, axis=axis, ddof=1), values, minimum=2)}


def _resultant(radians):
    return np.nanmean(np.cos(radians), axis=0), np.nanmean(np.sin(radians), axis=0)


def circular_mean(degrees):
    """Direction of the mean resultant vector, in degrees (−180, 180]."""
    degrees = _as_array(degrees)
    return _nan_reduce(lambda v, axis: np.degrees(np.arctan2(*_resultant(np.radians(v))[::-1])), degrees)


def circular_sd(degrees):
    """Circular standard deviation sqrt(−2 ln R̄) in degrees (as ``scipy.stats.circstd``)."""
    degrees = _as_array(degrees)

    def sd(v, axis):
        length = np.hypot(*_resultant(np.radians(v)))
        return np.degrees(np.sqrt(-2.0 * np.log(np.clip(length, 1e-300, 1.0))))

    return _nan_reduce(sd, degrees, minimum=2)


def _arc(a, b):
    """Smallest absolute angle between ``a`` and ``b`` (degrees), in [0, 180]."""
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


def circular_median(degrees):
    """The angle that minimises the summed arc distance to the samples (Fisher, 1993), in degrees.

    The minimum is searched among the samples; when several tie (an even number of samples: every point of the
    arc between the two middle ones is a minimum), their circular mean is returned — the circular analogue of
    averaging the two middle values. For samples within a half circle this is the ordinary median.
    """
    degrees = _as_array(degrees)
    n_participants, n_voxels = degrees.shape
    cost = np.full((n_participants, n_voxels), np.inf)
    for i in range(n_participants):  # participants × voxels memory, participants² work
        distance = _arc(degrees[i][np.newaxis, :], degrees)
        cost[i] = np.where(np.isfinite(degrees[i]), np.nansum(distance, axis=0), np.inf)
    best = cost.min(axis=0)
    ties = np.isfinite(cost) & (cost <= best + 1e-9 * np.maximum(best, 1.0))
    candidates = np.where(ties, degrees, np.nan)
    return circular_mean(candidates)


def circular_summary(degrees, period=360.0):
    """{'mean', 'median', 'sd'} of angles in degrees, per voxel.

    ``period`` (degrees): values that repeat every ``period`` (180 for orientations) are mapped onto the full circle
    first; the mean and median come back in [0, period), the SD in the values' units. With 360 (the default),
    mean and median are in (−180, 180].
    """
    if float(period) == 360.0:
        return {"mean": circular_mean(degrees), "median": circular_median(degrees), "sd": circular_sd(degrees)}
    scale = 360.0 / float(period)
    full = _as_array(degrees) * scale
    return {"mean": np.mod(circular_mean(full) / scale, period), "median": np.mod(circular_median(full) / scale, period),
            "sd": circular_sd(full) / scale}


def one_sample_t(values):
    """One-sample t-test of mean 0, per voxel: (t, z, degrees of freedom).

    ``t = mean / (sd / sqrt(n))`` with the participants that have a value (n ≥ 2, sd > 0; else NaN).
    ``z`` has the same upper-tail p-value as ``t`` under Student's t with n − 1 degrees of freedom, and the sign
    of ``t``; it is computed from log p-values, so large t give finite z.
    """
    values = _as_array(values)
    n = count(values)
    mean = _nan_reduce(np.nanmean, values)
    sd = _nan_reduce(lambda v, axis: np.nanstd(v, axis=axis, ddof=1), values, minimum=2)
    df = np.where(n >= 2, n - 1, np.nan)
    valid = (n >= 2) & (sd > 0)
    t = np.full(values.shape[1], np.nan)
    t[valid] = mean[valid] / (sd[valid] / np.sqrt(n[valid]))
    z = np.full_like(t, np.nan)
    log_p = stats.t.logsf(np.abs(t[valid]), df[valid])  # upper tail of |t|: no cancellation near p = 1
    z[valid] = -np.sign(t[valid]) * special.ndtri_exp(log_p)
    return t, z, df
