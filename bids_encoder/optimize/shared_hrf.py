"""One HRF for all voxels of a fit: the delay and dispersion that best explain the voxels a canonical fit
explains best.

Per-voxel HRFs add two free parameters to every voxel and, on short recordings, fit noise (they raise in-sample
R² and lower held-out R² on noise-like voxels). A single HRF estimated from the best voxels keeps most of the
gain at the price of two parameters per fit. The estimate here is a least-squares criterion over those voxels:
with every other parameter fixed, the regressors of a candidate HRF are fitted to each voxel in closed form
(together with the nuisance regressors), and the candidate minimising the summed fraction of unexplained
variance, Σ_v SSR_v / SST_v, wins — first on a grid over the bounds, then refined by bounded Nelder–Mead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import optimize, signal

from ..models.hrf import SPMHRFModel

logger = logging.getLogger(__name__)

__all__ = ["SharedHRF", "estimate_shared_hrf", "select_best_voxels"]

#: Voxels used: the best ``BEST_FRACTION`` by canonical R² (R² > 0 only), at least ``MIN_VOXELS`` when that many
#: have R² > 0, at most ``MAX_VOXELS``
BEST_FRACTION, MIN_VOXELS, MAX_VOXELS = 0.10, 50, 2000
#: Fewer voxels with canonical R² > 0 than this: no estimate (the canonical HRF is kept)
MIN_USABLE = 10


@dataclass
class SharedHRF:
    """The estimate: ``delay`` and ``dispersion`` (s) of the positive lobe, the voxels it used, its criterion."""

    delay: float
    dispersion: float
    n_voxels: int
    criterion: float  # mean over the voxels used of SSR/SST at the estimate
    canonical_criterion: float  # the same at the canonical HRF
    estimated: bool = True  # False: too few usable voxels, the canonical values are returned

    def sidecar(self):
        return {"Delay": round(self.delay, 4), "Dispersion": round(self.dispersion, 4), "Estimated": self.estimated,
                "VoxelsUsed": self.n_voxels,
                "Selection": f"the {BEST_FRACTION:.0%} of voxels with the highest R² under the canonical HRF "
                             f"(R² > 0; at least {MIN_VOXELS}, at most {MAX_VOXELS})",
                "Criterion": "minimum over delay and dispersion of the mean unexplained fraction SSR/SST of those "
                             "voxels, the other parameters fixed at the canonical fit and the linear ones refitted "
                             "in closed form (grid, then bounded Nelder-Mead)",
                "MeanUnexplainedFraction": round(self.criterion, 6),
                "MeanUnexplainedFractionCanonical": round(self.canonical_criterion, 6)}


def select_best_voxels(r2):
    """Indices of the voxels a canonical fit explains best (see the module constants), best first."""
    r2 = np.asarray(r2, dtype=float)
    usable = np.flatnonzero(np.isfinite(r2) & (r2 > 0))
    count = int(np.clip(round(BEST_FRACTION * np.isfinite(r2).sum()), min(MIN_VOXELS, usable.size), MAX_VOXELS))
    count = min(count, usable.size)
    return usable[np.argsort(-r2[usable], kind="stable")[:count]]


def _convolve(neural, kernel, segments):
    """Causal convolution along time, never across runs (numpy, float64)."""
    parts, start = [], 0
    for length in segments:
        parts.append(signal.lfilter(kernel, [1.0], neural[start : start + length], axis=0))
        start += length
    return np.concatenate(parts, axis=0)


def _residualise(values, basis):
    return values if basis is None else values - basis @ (basis.T @ values)


def estimate_shared_hrf(neural, data, tr, segments=None, nuisance=None, shared_design=True, hrf_kwargs=None):
    """Estimate one (delay, dispersion) of the SPM HRF for a set of voxels.

    Parameters
    ----------
    neural : array (time × regressors) or (time × voxels)
        Unconvolved regressors: shared by all voxels (``shared_design=True``, a GLM's occupancy paradigm) or one
        neural time course per voxel (``shared_design=False``, e.g. a pRF's response with its fitted position).
    data : array (time × voxels)
        The voxels to fit (see :func:`select_best_voxels`).
    tr : float
    segments : sequence of int, optional
        Run lengths (the HRF never crosses a run boundary).
    nuisance : array (time × k), optional
        Regressors fitted alongside (confounds, one intercept per run); include the intercepts.
    hrf_kwargs : dict, optional
        Other arguments of :class:`SPMHRFModel` (its bounds bound the search).

    Returns
    -------
    SharedHRF
    """
    hrf_kwargs = dict(hrf_kwargs or {})
    bounds_model = SPMHRFModel(tr, **hrf_kwargs)
    data = np.asarray(data, dtype=np.float64)
    neural = np.asarray(neural, dtype=np.float64)
    segments = tuple(segments) if segments else (data.shape[0],)
    basis = None
    if nuisance is not None and np.asarray(nuisance).shape[1]:
        u, s, _ = np.linalg.svd(np.asarray(nuisance, dtype=np.float64), full_matrices=False)
        basis = u[:, s > s.max() * max(u.shape) * np.finfo(float).eps]
    y = _residualise(data, basis)
    sst = np.maximum(np.sum(y**2, axis=0), np.finfo(float).tiny)

    def criterion(point):
        delay, dispersion = point
        kernel = SPMHRFModel(tr, delay=delay, dispersion=dispersion, **hrf_kwargs).canonical_kernel
        regressors = _residualise(_convolve(neural, kernel.astype(np.float64), segments), basis)
        if shared_design:
            coefficients, *_ = np.linalg.lstsq(regressors, y, rcond=None)
            ssr = np.sum((y - regressors @ coefficients) ** 2, axis=0)
        else:
            norm = np.maximum(np.sum(regressors**2, axis=0), np.finfo(float).tiny)
            ssr = np.sum(y**2, axis=0) - np.sum(regressors * y, axis=0) ** 2 / norm
        return float(np.mean(ssr / sst))

    low = np.array([bounds_model.min_hrf_delay, bounds_model.min_dispersion])
    high = np.array([bounds_model.max_hrf_delay, bounds_model.max_dispersion])
    canonical = criterion((bounds_model.delay, bounds_model.dispersion))
    delays = np.linspace(low[0], high[0], 17)
    dispersions = np.geomspace(low[1], high[1], 9)
    scores = np.array([[criterion((d, s)) for s in dispersions] for d in delays])
    i, j = np.unravel_index(np.argmin(scores), scores.shape)
    start = np.array([delays[i], dispersions[j]])
    refined = optimize.minimize(criterion, start, method="Nelder-Mead", bounds=list(zip(low, high, strict=True)),
                                options={"xatol": 1e-3, "fatol": 1e-7, "maxiter": 200})
    best = refined.x if refined.fun <= scores[i, j] else start
    value = min(float(refined.fun), float(scores[i, j]))
    logger.info("Shared HRF from %d voxels: delay %.3f s, dispersion %.3f s (mean SSR/SST %.4f; canonical %.4f)",
                data.shape[1], best[0], best[1], value, canonical)
    return SharedHRF(float(best[0]), float(best[1]), int(data.shape[1]), value, canonical)


def canonical_shared_hrf(tr, n_voxels, hrf_kwargs=None):
    """The fallback when too few voxels are usable: the canonical values, marked as not estimated."""
    model = SPMHRFModel(tr, **(hrf_kwargs or {}))
    logger.warning("Shared HRF: only %d voxel(s) with canonical R² > 0 (fewer than %d): the canonical HRF is kept",
                   n_voxels, MIN_USABLE)
    return SharedHRF(model.delay, model.dispersion, int(n_voxels), float("nan"), float("nan"), estimated=False)
