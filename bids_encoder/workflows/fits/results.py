"""What a fit returns and the plumbing the model kinds share.

:class:`MapSpec` (one output map), :class:`FitResult` (the maps, R², design, settings and predictors of a fit),
the HRF part of the sidecars, the LM settings, the nuisance columns of several runs, the predictors the report and
the cross-validation use, and :func:`refit_from` (baseline and amplitude refined from another solution, then LM).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...optimize import ParameterFitter
from ...optimize.recipes import SOLVER_DEFAULTS

__all__ = ["FitResult", "MapSpec", "Refit", "refit_from"]

HRF_UNITS = {"hrf_delay": "s", "hrf_dispersion": "s"}
HRF_DESCRIPTIONS = {"hrf_delay": "Delay of the positive lobe of the fitted SPM HRF",
                    "hrf_dispersion": "Dispersion of the positive lobe of the fitted SPM HRF"}
#: A fitted HRF parameter within this fraction of its range from a bound counts as "at the bound"
AT_BOUND = 0.01


@dataclass
class MapSpec:
    """One output map: its entities (stat, contrast), values per voxel, description and units."""

    stat: str
    values: np.ndarray
    description: str
    units: str
    contrast: str | None = None
    sidecar: dict | None = None  # extra sidecar fields (circular period; contrast, degrees of freedom, noise model)
    in_report: bool = True
    desc: str | None = None  # the desc entity (``se``: the standard error of the parameter ``stat``)
    suffix: str = "statmap"  # ``mask`` for the iterated-voxels mask (no stat entity then: ``stat`` is "")


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
    predict_runs: object = None  # (inputs, run numbers) → (row mask, stimulus-driven prediction rows × voxels)
    hrf_choice: str = "canonical"
    cv: dict | None = None  # filled by the cross-validation: scheme, folds, cvR² per voxel
    tuning: dict | None = None  # 1-D tuning models: the model, parameters and stimulus values (for the report)
    # GLM: the regressors as fitted, (time × conditions), or LaggedRegressors (per-voxel HRFs)
    regressors: object = None
    inference: dict | None = None  # GLM: noise model, degrees of freedom, contrasts (fits.glm_inference)
    # inputs → their confounds as this fit uses them (1-D models: nuisance regressors with the fit's HRF), for
    # scoring held-out data; None: the inputs' own
    confounds_for: object = None
    # GLM, --run-model fixed-effects: the (condition, run) of every regressor column (each run fitted on its own)
    run_columns: list | None = None


def hrf_settings(hrf_model, choice, oversampling=None, fitted=None, shared=None):
    """The HRF part of the sidecars, read off the model used (``oversampling``: of the events, GLM only)."""
    settings = {"Choice": choice,
                "Model": f"SPM double-gamma (delay {hrf_model.delay:g} s, dispersion {hrf_model.dispersion:g} s, "
                         f"undershoot {hrf_model.undershoot:g} s, ratio {hrf_model.ratio:g})",
                "Fitted": hrf_model.unique_hrfs, "RepetitionTime": hrf_model.tr}
    if hrf_model.unique_hrfs:
        settings["FittedParameters"] = hrf_model.get_parameter_labels()
    if hrf_model.unique_hrfs or shared is not None:
        settings["Bounds"] = {"hrf_delay": [hrf_model.min_hrf_delay, hrf_model.max_hrf_delay],
                              "hrf_dispersion": [hrf_model.min_dispersion, hrf_model.max_dispersion]}
    if shared is not None:
        settings["Shared"] = shared.sidecar()
    if oversampling is not None:
        settings["Oversampling"] = oversampling
    if fitted is not None:
        settings["MedianFittedValues"] = {key: float(np.nanmedian(value)) for key, value in fitted.items()}
        settings["FractionAtBound"] = fraction_at_bound(hrf_model, fitted)
        settings["AtBoundDefinition"] = f"within {AT_BOUND:.0%} of the parameter's range from either bound"
    return settings


def fraction_at_bound(hrf_model, fitted):
    """Per HRF parameter, the fraction of fitted voxels whose value sits at (within 1 % of) a bound."""
    bounds = {"hrf_delay": (hrf_model.min_hrf_delay, hrf_model.max_hrf_delay),
              "hrf_dispersion": (hrf_model.min_dispersion, hrf_model.max_dispersion)}
    fractions = {}
    for label, values in fitted.items():
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        low, high = bounds[label]
        tolerance = AT_BOUND * (high - low)
        at = (values <= low + tolerance) | (values >= high - tolerance)
        fractions[label] = round(float(at.mean()), 4) if values.size else None
    return fractions


def run_columns(index):
    """One indicator column per run (time × runs)."""
    runs = index.get_level_values("run").to_numpy()
    return (runs[:, np.newaxis] == np.unique(runs)[np.newaxis, :]).astype(float)


def nuisance(inputs):
    """Confounds and indicators of runs 2..n: with one baseline parameter, every run gets its own mean."""
    return np.hstack([inputs.confounds.to_numpy(), run_columns(inputs.data.index)[:, 1:]])


def lm_settings(max_iterations):
    settings = dict(SOLVER_DEFAULTS["lm"])
    if max_iterations is not None:
        settings["max_n_iterations"] = int(max_iterations)
        settings["min_n_iterations"] = min(settings["min_n_iterations"], int(max_iterations))
    return settings


def projected_predict(data, fitter, basis):
    """``predict(voxels)`` for the report: the data and the iterative fit of a few voxels, both with ``basis``
    (orthonormal confounds and run means, or None) projected out, as they were fitted."""

    def predict(voxels):
        observed = data.iloc[:, voxels].to_numpy(dtype=np.float64)
        fitted = fitter.predict_voxels(voxels).to_numpy(dtype=np.float64)
        if basis is not None:
            observed = observed - basis @ (basis.T @ observed)
            fitted = fitted - basis @ (basis.T @ fitted)
        return observed, fitted

    return predict


def make_predictor(model, parameters, weights, paradigm_of, memory_limit, bytes_per_voxel):
    """``predict_runs(inputs, runs)``: the model's prediction, baseline removed, on the rows of ``runs``.

    Parameters and weights of voxels that were not fitted (NaN) are replaced by harmless values; callers
    blank those voxels. ``paradigm_of(inputs)`` picks the paradigm the model reads (the exact convolved design or
    the neural paradigm). Voxels are predicted in chunks of at most ``memory_limit`` bytes.
    """
    labels = model.get_parameter_labels()
    values = parameters[labels].copy() if parameters is not None else None
    if values is not None:
        fallback = {"sd": 1.0, "srf_size": 2.0, "surround_baseline": 1.0, "n": 1.0, "kappa": 1.0}
        hrf_model = getattr(model, "hrf_model", None)
        if hrf_model is not None:
            fallback.update(hrf_model.get_default_parameters())
        for label in labels:
            values[label] = values[label].fillna(fallback.get(label, 0.0))
        if "baseline" in labels:
            values["baseline"] = 0.0
    weights = None if weights is None else weights.fillna(0.0)
    n_voxels = len(values) if values is not None else weights.shape[1]

    def predict_runs(inputs, runs):
        paradigm = paradigm_of(inputs)
        rows = np.isin(paradigm.index.get_level_values("run"), list(runs))
        selected = paradigm[rows]
        out = np.empty((int(rows.sum()), n_voxels), dtype=np.float32)
        size = max(1, int(memory_limit // max(bytes_per_voxel(int(rows.sum())), 1)))
        for start in range(0, n_voxels, size):
            chunk = slice(start, min(start + size, n_voxels))
            out[:, chunk] = model.predict(selected, None if values is None else values.iloc[chunk],
                                          None if weights is None else weights.iloc[:, chunk]).to_numpy()
        return rows, out

    return predict_runs


class Refit:
    """What :func:`fit_prf2d` returns, for a fit started from another solution."""

    def __init__(self, fitter, parameters, timings, min_grid_r2=0.0):
        self.fitter, self.parameters, self.r2, self.timings = fitter, parameters, fitter.r2, timings
        self.n_iterations, self.converged = fitter.n_iterations, fitter.converged
        self.iterated, self.standard_errors = fitter.iterated, fitter.standard_errors
        self.min_grid_r2 = min_grid_r2


def refit_from(model, inputs, previous, extra, kwargs):
    """Refine baseline and amplitude from ``previous``'s solution under ``model``, then Levenberg–Marquardt on the
    voxels ``previous`` iterated (its grid-R² gate)."""
    fit_kwargs = {k: v for k, v in kwargs.items() if k not in ("confounds", "memory_limit", "min_grid_r2")}
    fitter = ParameterFitter(model, inputs.data, inputs.paradigm, memory_limit=kwargs["memory_limit"])
    start = time.perf_counter()
    init = fitter.refine_baseline_and_amplitude(previous.parameters, confounds=extra)
    timings = {"refine": time.perf_counter() - start}
    start = time.perf_counter()
    iterate = None if getattr(previous, "iterated", None) is None else previous.iterated.to_numpy(dtype=bool)
    parameters = fitter.fit(init_pars=init.fillna(0.0), confounds=extra, iterate=iterate, **fit_kwargs)
    timings["iterative"] = time.perf_counter() - start
    return Refit(fitter, parameters, timings, getattr(previous, "min_grid_r2", 0.0))


#: the per-voxel stopping rule of Levenberg–Marquardt, as the sidecars state it
LM_STOPPING_RULE = ("per voxel: converged once an accepted step lowers its residual sum of squares by less than a "
                    "relative 1e-4, or stalled at the largest damping without an accepted step; at most "
                    "MaxIterations steps")


def trust_maps(result, descriptions, fitter_settings):
    """The iterated-voxels mask and a standard-error map of every parameter that has one (``descriptions``:
    label → (description, units) of the parameter maps), and the gate's settings and counts in
    ``fitter_settings['ParameterFitter']`` (``Gate``)."""
    iterated = result.iterated.to_numpy(dtype=bool)
    fitted = np.isfinite(np.asarray(result.r2, dtype=np.float64))
    threshold = float(getattr(result, "min_grid_r2", 0.0))
    settings = fitter_settings["ParameterFitter"]
    settings["StoppingRule"] = LM_STOPPING_RULE
    settings["Gate"] = {
        "MinGridRSquared": threshold, "IteratedVoxels": int((iterated & fitted).sum()),
        "FittedVoxels": int(fitted.sum()),
        "Rule": "voxels whose grid-stage R² (closed-form baseline and amplitude) is below MinGridRSquared keep "
                "their grid estimate and skip Levenberg-Marquardt (0: every voxel iterated); see the "
                "desc-iterated mask"}
    settings["IteratedVoxels"] = settings["Gate"]["IteratedVoxels"]
    mask = np.where(fitted, iterated.astype(np.float32), np.nan).astype(np.float32)
    maps = [MapSpec("", mask, "Voxels fitted by Levenberg-Marquardt (1) or kept at their grid estimate (0: grid "
                    f"R² below {threshold:g})", "boolean", desc="iterated", suffix="mask", in_report=False)]
    errors = result.standard_errors
    for label in errors.columns:
        values = errors[label].to_numpy(dtype=np.float32)
        if not np.isfinite(values).any():
            continue
        description, units = descriptions.get(label, (label, None))
        maps.append(MapSpec(label, values, f"Standard error of: {description}", units, desc="se", in_report=False,
                            sidecar={"StandardError": {
                                "Method": "Gauss-Newton: sigma^2 (J'J)^-1 at the solution, J the Jacobian of the "
                                          "predictions with the confounds projected out, sigma^2 = SSR / dof (dof = "
                                          "volumes - confound rank, censoring spikes and run indicators included, "
                                          "- free parameters), in natural units by the delta method",
                                "NaN": "voxels not iterated (see the desc-iterated mask), parameters at a bound, "
                                       "fields near the visibility constraint, near-degenerate voxels, and with "
                                       "per-voxel HRFs the HRF parameters and the 2-D size (too nonlinear for a "
                                       "Gauss-Newton interval)"}}))
    return maps
