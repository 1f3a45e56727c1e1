"""Group-level GLM over participants' effect maps: OLS, or mixed effects that use the first-level variances.

Per voxel, participant i has an effect ``y_i`` and (mixed effects) its sampling variance ``s_i²``; the model is
``y = X b + u + e`` with ``u_i ~ N(0, τ²)`` (between-participant variance) and ``e_i ~ N(0, s_i²)``. ``τ²`` is the
restricted maximum-likelihood estimate given the ``s_i²`` (as FSL's FLAME1): per voxel, the REML log-likelihood
``-½ [Σ log v_i + log |X'V⁻¹X| + r'V⁻¹r]``, ``v_i = s_i² + τ²``, is maximised over ``τ² ≥ 0`` by a grid over 0 and
log-spaced multiples of the voxel's sample variance, then golden-section search around the best grid point — all
voxels at once (numpy, float64). Effects are then weighted by ``1/v_i``: ``b = (X'V⁻¹X)⁻¹ X'V⁻¹ y``,
``var(c b) = c (X'V⁻¹X)⁻¹ c'``, t on ``n − p`` degrees of freedom. OLS: ``V = σ² I`` with σ² from the residuals.

Participants without a value at a voxel (NaN effect or variance) get zero weight there; a voxel needs more
participants than design columns.
"""

from __future__ import annotations

import logging

import numpy as np

from .statistics import t_to_z_p

logger = logging.getLogger(__name__)

__all__ = ["group_glm", "reml_tau2", "GROUP_MODELS"]

GROUP_MODELS = ("mixed", "ols")
GRID = np.r_[0.0, np.logspace(-4, 2, 31)]
GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def _weighted_fit(y, weights, design):
    """Weighted least squares per voxel: coefficients (V × p), (X'WX)⁻¹ (V × p × p), residuals (n × V)."""
    gram = np.einsum("ip,iv,iq->vpq", design, weights, design)
    moments = np.einsum("ip,iv,iv->vp", design, weights, y)
    inverse = np.linalg.inv(gram)
    beta = np.einsum("vpq,vq->vp", inverse, moments)
    return beta, inverse, gram, y - design @ beta.T


def _reml(tau2, y, s2, present, design):
    """REML log-likelihood per voxel at between-participant variance ``tau2`` (V,)."""
    v = s2 + tau2[None, :]
    weights = np.where(present, 1.0 / v, 0.0)
    _, _, gram, residuals = _weighted_fit(y, weights, design)
    _, log_det = np.linalg.slogdet(gram)
    return -0.5 * (np.sum(np.where(present, np.log(v), 0.0), axis=0) + log_det
                   + np.sum(weights * residuals**2, axis=0))


def reml_tau2(y, s2, design, present=None, iterations=40):
    """REML estimate of the between-participant variance per voxel, given first-level variances.

    Parameters
    ----------
    y, s2 : arrays (participants × voxels)
        Effects and their first-level sampling variances (zeros where ``present`` is False).
    design : array (participants × p)
        The group design (its columns are estimated with each τ², as REML requires).
    present : boolean array (participants × voxels), optional
        Which participants have a value at each voxel; all if None.
    iterations : int
        Golden-section steps after the grid search (the bracket shrinks by 0.618 per step).

    Returns
    -------
    array (voxels,)
        τ² ≥ 0 (0 where the REML likelihood at 0 is at least that of the optimum found).
    """
    present = np.ones(y.shape, bool) if present is None else present
    count = present.sum(axis=0)
    mean = np.sum(np.where(present, y, 0.0), axis=0) / np.maximum(count, 1)
    scale = np.sum(np.where(present, (y - mean) ** 2, 0.0), axis=0) / np.maximum(count - 1, 1)
    scale = np.where(scale > 0, scale, 1.0)
    values = np.stack([_reml(q * scale, y, s2, present, design) for q in GRID])  # (grid, V)
    best = np.argmax(values, axis=0)
    low = GRID[np.maximum(best - 1, 0)] * scale
    high = GRID[np.minimum(best + 1, GRID.size - 1)] * scale
    a, b = low + (1 - GOLDEN) * (high - low), low + GOLDEN * (high - low)
    fa, fb = _reml(a, y, s2, present, design), _reml(b, y, s2, present, design)
    for _ in range(iterations):
        left = fa >= fb  # the maximum lies in [low, b]
        high = np.where(left, b, high)
        low = np.where(left, low, a)
        point = np.where(left, low + (1 - GOLDEN) * (high - low), low + GOLDEN * (high - low))
        value = _reml(point, y, s2, present, design)  # one new point per voxel and iteration
        a, b = np.where(left, point, b), np.where(left, a, point)
        fa, fb = np.where(left, value, fb), np.where(left, fa, value)
    tau2 = 0.5 * (low + high)
    at_zero = _reml(np.zeros_like(tau2), y, s2, present, design) >= _reml(tau2, y, s2, present, design)
    return np.where(at_zero, 0.0, tau2)


def group_glm(effects, design, contrasts, variances=None, model="mixed"):
    """Group statistics of every contrast over the design's columns.

    Parameters
    ----------
    effects : array (participants × voxels), NaN where a participant has no value
    design : array (participants × p)
        For example a column of ones and demeaned covariates.
    contrasts : dict name → (p,) weights
    variances : array (participants × voxels), optional
        First-level sampling variances of the effects; required by ``model='mixed'``.
    model : 'mixed' or 'ols'

    Returns
    -------
    dict name → {'effect', 'variance', 't', 'z', 'p', 'dof'} per voxel, and ``'tau2'`` → between-participant
    variance (mixed) or the residual variance (OLS)
    """
    if model not in GROUP_MODELS:
        raise ValueError(f"Unknown group model {model!r}; choose from {', '.join(GROUP_MODELS)}")
    if model == "mixed" and variances is None:
        raise ValueError("Mixed effects need the first-level variances")
    effects = np.asarray(effects, dtype=np.float64)
    design = np.asarray(design, dtype=np.float64)
    present = np.isfinite(effects)
    if model == "mixed":
        variances = np.asarray(variances, dtype=np.float64)
        present &= np.isfinite(variances) & (variances > 0)
    n_params = design.shape[1]
    count = present.sum(axis=0)
    usable = count > n_params
    usable &= np.linalg.matrix_rank(np.einsum("ip,iv,iq->vpq", design, present.astype(float), design)) == n_params
    y = np.where(present, effects, 0.0)[:, usable]
    keep = present[:, usable]
    dof = (count[usable] - n_params).astype(float)
    if model == "mixed":
        s2 = np.where(present, variances, 1.0)[:, usable]
        tau2 = reml_tau2(y, s2, design, keep)
        weights = np.where(keep, 1.0 / (s2 + tau2[None, :]), 0.0)
        beta, inverse, _, _ = _weighted_fit(y, weights, design)
        sigma2 = np.ones_like(tau2)
    else:
        beta, inverse, _, residuals = _weighted_fit(y, keep.astype(float), design)
        sigma2 = np.sum(np.where(keep, residuals**2, 0.0), axis=0) / dof
        tau2 = sigma2
    results = {}
    for name, weights_c in contrasts.items():
        c = np.asarray(weights_c, dtype=np.float64)
        out = {key: np.full(effects.shape[1], np.nan) for key in ("effect", "variance", "t", "z", "p", "dof")}
        out["effect"][usable] = beta @ c
        out["variance"][usable] = np.einsum("p,vpq,q->v", c, inverse, c) * sigma2
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(out["variance"][usable] > 0, out["effect"][usable] / np.sqrt(out["variance"][usable]), np.nan)
        out["t"][usable] = t
        out["z"][usable], out["p"][usable] = t_to_z_p(t, dof)
        out["dof"][usable] = dof
        results[name] = out
    full_tau2 = np.full(effects.shape[1], np.nan)
    full_tau2[usable] = tau2
    results["tau2"] = full_tau2
    logger.info("Group %s model: %d participants, %d of %d voxels estimable", model, effects.shape[0],
                int(usable.sum()), effects.shape[1])
    return results
