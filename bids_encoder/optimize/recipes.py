"""Fitting recipes that chain the fitters the way pRF mapping is usually done: grid → refine → iterative."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._problem import SOLVER_DEFAULTS
from .parameters import ParameterFitter

logger = logging.getLogger(__name__)

__all__ = ["PRFFit", "SOLVER_DEFAULTS", "default_hrf_grid", "default_prf_grid", "fit_prf2d"]


@dataclass
class PRFFit:
    """Result of :func:`fit_prf2d`."""

    parameters: pd.DataFrame
    r2: pd.Series
    grid_parameters: pd.DataFrame
    grid_r2: pd.Series
    n_iterations: int
    converged: bool
    timings: dict = field(default_factory=dict)
    fitter: ParameterFitter | None = None


def default_prf_grid(model, n_x=27, n_y=19, n_sd=10):
    """x, y over the stimulus extent widened by half of it on each side; sd log-spaced from 3 pixels to half
    the larger extent."""
    grid = model.grid_coordinates.to_numpy()
    low, high = grid.min(axis=0), grid.max(axis=0)
    half = (high - low) / 2.0
    pixel = float(np.sqrt(model.pixel_area))
    xs = np.linspace(low[0] - half[0], high[0] + half[0], n_x)
    ys = np.linspace(low[1] - half[1], high[1] + half[1], n_y)
    sds = np.geomspace(3 * pixel, max(1.1 * float(half.max()), 4 * pixel), n_sd)
    return xs, ys, sds


def default_hrf_grid(hrf_model):
    """Grid values of per-voxel HRF parameters: the canonical delay and dispersion and a step either side
    (delay −1 s / +0.75 s, dispersion ×0.7 / ×1.4), inside the model's bounds; {} without per-voxel HRFs."""
    defaults = hrf_model.get_default_parameters()
    if not defaults:
        return {}
    delay, dispersion = defaults["hrf_delay"], defaults["hrf_dispersion"]

    def inside(values, low, high):
        margin = 0.02 * (high - low)  # strictly inside: the bounded transform maps the bounds to infinity
        return sorted({float(v) for v in values if low + margin <= v <= high - margin} | {float(values[1])})

    return {"hrf_delay": inside([delay - 1.0, delay, delay + 0.75], hrf_model.min_hrf_delay, hrf_model.max_hrf_delay),
            "hrf_dispersion": inside([0.7 * dispersion, dispersion, 1.4 * dispersion], hrf_model.min_dispersion,
                                     hrf_model.max_dispersion)}


def fit_prf2d(model, data, paradigm, grid=None, optimizer="lm", confounds=None, fixed_pars=None,
              memory_limit=666666666, progressbar=True, hrf_grid=None, **fit_kwargs):
    """Fit a 2-D Gaussian pRF model (with or without HRF): grid → refine baseline/amplitude → iterative.

    Parameters
    ----------
    model : GaussianPRF2D or GaussianPRF2DWithHRF (per-voxel HRF parameters start at their defaults)
    grid : (xs, ys, sds), optional
        Grid values; :func:`default_prf_grid` when None. The grid ranks points by positive correlation.
    hrf_grid : dict, optional
        Grid values of the per-voxel HRF parameters (``{'hrf_delay': [...], 'hrf_dispersion': [...]}``);
        :func:`default_hrf_grid` when None (3 × 3 values around the canonical HRF).
    optimizer : 'lm', 'adam' or a Keras optimizer
    fit_kwargs : passed to :meth:`ParameterFitter.fit` (its stopping rule defaults to :data:`SOLVER_DEFAULTS`).

    Returns
    -------
    PRFFit with parameters, R², the grid stage, iterations and the wall time of each stage.
    """
    fitter = ParameterFitter(model, data, paradigm, memory_limit=memory_limit)
    xs, ys, sds = default_prf_grid(model) if grid is None else grid
    values = {"x": xs, "y": ys, "sd": sds, "baseline": None, "amplitude": None}
    if hasattr(model, "hrf_model"):
        values.update(default_hrf_grid(model.hrf_model) if hrf_grid is None else hrf_grid)
    labels = model.get_parameter_labels()
    missing = [label for label in labels if label not in values]
    if missing:
        raise ValueError(f"fit_prf2d fits Gaussian 2-D pRFs; {type(model).__name__} also has {missing}")
    timings = {}
    start = time.perf_counter()
    grid_parameters = fitter.fit_grid(*[values[label] for label in labels], use_correlation_cost=True,
                                      confounds=confounds, progressbar=progressbar)
    grid_r2 = fitter.grid_r2
    timings["grid"] = time.perf_counter() - start
    start = time.perf_counter()
    init = fitter.refine_baseline_and_amplitude(grid_parameters, confounds=confounds)
    timings["refine"] = time.perf_counter() - start
    solver = "lm" if optimizer in ("lm", "levenberg-marquardt") else "adam"
    settings = dict(SOLVER_DEFAULTS[solver])
    settings.update(fit_kwargs)
    start = time.perf_counter()
    parameters = fitter.fit(init_pars=init.fillna(0.0), optimizer=optimizer,
                            confounds=confounds, fixed_pars=fixed_pars, progressbar=progressbar, **settings)
    timings["iterative"] = time.perf_counter() - start
    logger.info("pRF fit: grid %.1f s, refine %.1f s, %s %.1f s (%d iterations), median R² %.3f",
                timings["grid"], timings["refine"], solver, timings["iterative"], fitter.n_iterations,
                float(np.nanmedian(fitter.r2)))
    return PRFFit(parameters=parameters, r2=fitter.r2, grid_parameters=grid_parameters, grid_r2=grid_r2,
                  n_iterations=fitter.n_iterations, converged=fitter.converged, timings=timings, fitter=fitter)
