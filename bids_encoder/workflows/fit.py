"""Glue between the BIDS inputs of one fit and the numeric core: which model, which fitters, which maps.

- ``glm``, canonical HRF: the exact SPM-convolved design (16× oversampled events) in ``LinearModelWithBaseline``;
  weights in closed form with ``WeightFitter`` (confounds and run intercepts fitted alongside).
- ``glm``, ``--hrf fit``: the TR-occupancy paradigm in ``LinearModelWithBaselineHRF``: closed-form weights with the
  canonical HRF, then per-voxel HRF delay and dispersion with ``ParameterFitter`` (Levenberg–Marquardt, confounds
  projected out of data and predictions), then closed-form weights again with the fitted HRFs.
- ``prf2d``: ``GaussianPRF2DWithHRF`` (per-voxel HRF with ``--hrf fit``): grid → refine → Levenberg–Marquardt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..bids.events import OVERSAMPLING
from ..hrf import SPMHRFModel
from ..models import GaussianPRF2DWithHRF, LinearModelWithBaseline, LinearModelWithBaselineHRF
from ..optimize import ParameterFitter, WeightFitter
from ..optimize._inputs import confound_basis, meaningful_voxels
from ..optimize.recipes import SOLVER_DEFAULTS, fit_prf2d

logger = logging.getLogger(__name__)

__all__ = ["FitResult", "MapSpec", "fit_model"]

HRF_UNITS = {"hrf_delay": "s", "hrf_dispersion": "s"}
HRF_DESCRIPTIONS = {"hrf_delay": "Delay of the positive lobe of the fitted SPM HRF",
                    "hrf_dispersion": "Dispersion of the positive lobe of the fitted SPM HRF"}


@dataclass
class MapSpec:
    """One output map: its entities (stat, contrast), values per voxel, description and units."""

    stat: str
    values: np.ndarray
    description: str
    units: str
    contrast: str | None = None


@dataclass
class FitResult:
    maps: list
    r2: np.ndarray
    model_class: str
    hrf: dict
    fitter: dict
    design: pd.DataFrame
    timings: dict = field(default_factory=dict)
    converged: np.ndarray | None = None  # per voxel, iterative fits only (closed-form fits always converge)
    history: list | None = None  # mean R² per iteration, one array per chunk of voxels (iterative fits)
    predict: object = None  # voxel indices → (observed, fitted) time × voxels arrays, for the report


def _hrf_settings(hrf_model, oversampling=None, fitted=None):
    """The HRF part of the sidecars, read off the model used (``oversampling``: of the events, GLM only)."""
    settings = {"Model": f"SPM double-gamma (delay {hrf_model.delay:g} s, undershoot {hrf_model.undershoot:g} s, "
                         f"ratio {hrf_model.ratio:g})",
                "Fitted": hrf_model.unique_hrfs, "RepetitionTime": hrf_model.tr}
    if hrf_model.unique_hrfs:
        settings["FittedParameters"] = hrf_model.get_parameter_labels()
        settings["Bounds"] = {"hrf_delay": [hrf_model.min_hrf_delay, hrf_model.max_hrf_delay],
                              "hrf_dispersion": [hrf_model.min_dispersion, hrf_model.max_dispersion]}
    if oversampling is not None:
        settings["Oversampling"] = oversampling
    if fitted is not None:
        settings["MedianFittedValues"] = {key: float(np.nanmedian(value)) for key, value in fitted.items()}
    return settings


def _run_columns(index):
    """One indicator column per run (time × runs)."""
    runs = index.get_level_values("run").to_numpy()
    return (runs[:, np.newaxis] == np.unique(runs)[np.newaxis, :]).astype(float)


def _nuisance(inputs):
    """Confounds and indicators of runs 2..n: with one baseline parameter, every run gets its own mean."""
    return np.hstack([inputs.confounds.to_numpy(), _run_columns(inputs.data.index)[:, 1:]])


def _lm_settings(max_iterations):
    settings = dict(SOLVER_DEFAULTS["lm"])
    if max_iterations is not None:
        settings["max_n_iterations"] = int(max_iterations)
        settings["min_n_iterations"] = min(settings["min_n_iterations"], int(max_iterations))
    return settings


def _fit_glm(inputs, hrf, alpha, max_iterations, noise_model, memory_limit, progressbar):
    data, paradigm, confounds = inputs.data, inputs.paradigm, inputs.confounds.to_numpy()
    timings = {}
    start = time.perf_counter()
    if hrf == "canonical":
        model = LinearModelWithBaseline()
        fitter = WeightFitter(model, None, data, paradigm, memory_limit=memory_limit, confounds=confounds)
        fitter.fit(alpha=alpha)
        timings["weights"] = time.perf_counter() - start
        fitter_settings = {"WeightFitter": {"Solver": "closed-form least squares", "Alpha": alpha}}
        model_class, hrf_parameters = "LinearModelWithBaseline", None
        hrf_model = SPMHRFModel(inputs.tr)  # the HRF of the convolved design, for the sidecars
    else:
        canonical = LinearModelWithBaselineHRF(hrf_model=SPMHRFModel(inputs.tr))
        first = WeightFitter(canonical, None, data, paradigm, memory_limit=memory_limit, confounds=confounds)
        first.fit(alpha=alpha)
        timings["weights_canonical"] = time.perf_counter() - start
        start = time.perf_counter()
        hrf_model = SPMHRFModel(inputs.tr, unique_hrfs=True)
        model = LinearModelWithBaselineHRF(hrf_model=hrf_model, weights=first.weights)
        init = model.get_default_parameters(data.shape[1], index=data.columns)
        init["baseline"] = first.run_baselines.iloc[0].to_numpy()
        settings = _lm_settings(max_iterations)
        estimator = ParameterFitter(model, data, paradigm, memory_limit=memory_limit)
        # every run's mean joins the confounds, so the baseline drops out of the projected problem: it stays
        # fixed and the solver spends its passes on the HRF parameters only (the final weights refit it)
        hrf_fit = estimator.fit(init_pars=init, optimizer="lm", confounds=np.hstack([confounds, _run_columns(
                                    data.index)]),
                                fixed_pars=["baseline"], noise_model=noise_model, progressbar=progressbar,
                                **settings)
        timings["hrf"] = time.perf_counter() - start
        start = time.perf_counter()
        hrf_parameters = hrf_fit[hrf_model.get_parameter_labels()].fillna(hrf_model.get_default_parameters())
        final_model = LinearModelWithBaselineHRF(hrf_model=hrf_model)
        fitter = WeightFitter(final_model, hrf_parameters, data, paradigm, memory_limit=memory_limit,
                              confounds=confounds)
        fitter.fit(alpha=alpha)
        timings["weights_fitted_hrf"] = time.perf_counter() - start
        fitter_settings = {
            "WeightFitter": {"Solver": "closed-form least squares", "Alpha": alpha},
            "ParameterFitter": {"Solver": "Levenberg-Marquardt", "Parameters": ["hrf_delay", "hrf_dispersion"],
                                "Iterations": int(estimator.n_iterations), "Converged": bool(estimator.converged),
                                "MaxIterations": settings["max_n_iterations"], "NoiseModel": noise_model,
                                "StoppingRule": {"RSquaredTolerance": settings["r2_atol"], "Lag": settings["lag"]}},
        }
        model_class = "LinearModelWithBaselineHRF"
    constant = ~meaningful_voxels(data)
    r2 = fitter.r2.to_numpy().astype(np.float32)
    maps = []
    for condition in paradigm.columns:
        values = fitter.weights.loc[condition].to_numpy().astype(np.float32)
        values[constant] = np.nan
        maps.append(MapSpec("effect", values, f"GLM effect (regression weight) of condition {condition}",
                            "BOLD signal units per unit regressor", contrast=condition))
    if hrf_parameters is not None:
        for label in ("hrf_delay", "hrf_dispersion"):
            values = hrf_parameters[label].to_numpy().astype(np.float32)
            values[constant] = np.nan
            maps.append(MapSpec(label, values, HRF_DESCRIPTIONS[label], HRF_UNITS[label]))
    fitted = None if hrf_parameters is None else {k: hrf_parameters[k].to_numpy()[~constant] for k in HRF_UNITS}
    design = pd.concat([paradigm.astype(np.float64), inputs.confounds], axis=1)
    converged = None if hrf == "canonical" else estimator.voxel_converged.to_numpy()
    history = None if hrf == "canonical" else estimator.history

    def predict(voxels):
        """Data and full fit (regressors, run intercepts, confounds) of a few voxels, refitted alone (per-voxel
        least squares: the same weights as the whole-brain fit)."""
        chosen = data.iloc[:, voxels]
        parameters = None if hrf_parameters is None else hrf_parameters.iloc[voxels]
        refit = WeightFitter(fitter.model, parameters, chosen, paradigm, confounds=confounds)
        refit.fit(alpha=alpha)
        return chosen.to_numpy(), refit.predictions.to_numpy()

    return FitResult(maps=maps, r2=r2, model_class=model_class, hrf=_hrf_settings(hrf_model, OVERSAMPLING, fitted),
                     fitter=fitter_settings, design=design, timings=timings, converged=converged, history=history,
                     predict=predict)


PRF_MAPS = {
    "x": ("Horizontal position of the pRF centre", "degrees of visual angle"),
    "y": ("Vertical position of the pRF centre", "degrees of visual angle"),
    "sd": ("pRF size: standard deviation of the 2-D Gaussian", "degrees of visual angle"),
    "baseline": ("Baseline BOLD signal", "BOLD signal units"),
    "amplitude": ("Response amplitude of the pRF", "BOLD signal units per unit aperture"),
}


def _fit_prf2d(inputs, hrf, max_iterations, noise_model, memory_limit, progressbar):
    model = GaussianPRF2DWithHRF(inputs.grid, hrf_model=SPMHRFModel(inputs.tr, unique_hrfs=hrf == "fit"))
    settings = _lm_settings(max_iterations)
    result = fit_prf2d(model, inputs.data, inputs.paradigm, optimizer="lm", confounds=_nuisance(inputs),
                       memory_limit=memory_limit, progressbar=progressbar, noise_model=noise_model, **settings)
    parameters = result.parameters
    maps = []
    for label in parameters.columns:
        description, units = PRF_MAPS.get(label, (HRF_DESCRIPTIONS.get(label), HRF_UNITS.get(label)))
        maps.append(MapSpec(label, parameters[label].to_numpy().astype(np.float32), description, units))
    x, y = parameters["x"].to_numpy(), parameters["y"].to_numpy()
    maps.append(MapSpec("polarAngle", np.degrees(np.arctan2(y, x)).astype(np.float32),
                        "Polar angle of the pRF centre, counter-clockwise from the right horizontal meridian",
                        "degrees (-180 to 180)"))
    maps.append(MapSpec("eccentricity", np.hypot(x, y).astype(np.float32),
                        "Eccentricity of the pRF centre (distance from fixation)", "degrees of visual angle"))
    fitted = {k: parameters[k].to_numpy() for k in HRF_UNITS if k in parameters}
    fitter_settings = {"ParameterFitter": {
        "Recipe": "grid search (correlation) -> least-squares baseline and amplitude -> Levenberg-Marquardt",
        "Solver": "Levenberg-Marquardt", "Iterations": int(result.n_iterations), "Converged": bool(result.converged),
        "MaxIterations": settings["max_n_iterations"], "NoiseModel": noise_model,
        "StoppingRule": {"RSquaredTolerance": settings["r2_atol"], "Lag": settings["lag"]},
        "Bounds": {"x, y": "stimulus extent widened by half of it on each side",
                   "sd": "half a pixel to the stimulus extent"}}}
    stimulus = pd.DataFrame({"stimulus_area": inputs.paradigm.to_numpy().mean(axis=1)}, index=inputs.data.index)
    design = pd.concat([stimulus, inputs.confounds], axis=1)
    basis = confound_basis(_nuisance(inputs), inputs.data.shape[0])

    def predict(voxels):
        """Data and prediction of a few voxels, both with confounds and run means projected out (as fitted)."""
        observed = inputs.data.iloc[:, voxels].to_numpy(dtype=np.float64)
        fitted = result.fitter.predictions.iloc[:, voxels].to_numpy(dtype=np.float64)
        if basis is not None:
            observed = observed - basis @ (basis.T @ observed)
            fitted = fitted - basis @ (basis.T @ fitted)
        return observed, fitted

    return FitResult(maps=maps, r2=result.r2.to_numpy().astype(np.float32), model_class=type(model).__name__,
                     hrf=_hrf_settings(model.hrf_model, fitted=fitted or None), fitter=fitter_settings, design=design,
                     timings=result.timings, converged=result.fitter.voxel_converged.to_numpy(),
                     history=result.fitter.history, predict=predict)


def fit_model(inputs, model, hrf="canonical", alpha=0.0, max_iterations=None, noise_model="ssq",
              memory_limit=2_000_000_000, progressbar=True):
    """Fit ``model`` ('glm' or 'prf2d') to the assembled inputs; returns a :class:`FitResult`."""
    if model == "glm":
        return _fit_glm(inputs, hrf, alpha, max_iterations, noise_model, memory_limit, progressbar)
    if model == "prf2d":
        return _fit_prf2d(inputs, hrf, max_iterations, noise_model, memory_limit, progressbar)
    raise ValueError(f"Unknown model {model!r}")
