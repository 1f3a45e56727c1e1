"""1-D tuning-model fits of one set of inputs (``gauss1d``, ``loggauss1d``, ``vonmises1d``): canonical, shared or
per-voxel HRF.

The paradigm holds, per volume, the time each distinct stimulus value was shown (events with a value in
``--stimulus-column``; :func:`bids_encoder.bids.inputs.assemble_inputs`). The neural response is the tuning curve
at the event's value while the event lasts and zero between events, convolved with the HRF. Values are in the
events' natural units: the log-Gaussian model takes their log, the von Mises model maps ``--stimulus-period``
degrees onto the circle.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import pandas as pd

from ...bids.inputs import nuisance_regressors
from ...bids.layout import InputError
from ...models import (
    GaussianPRF,
    GaussianPRFWithHRF,
    LogGaussianPRF,
    LogGaussianPRFWithHRF,
    VonMisesPRF,
    VonMisesPRFWithHRF,
)
from ...models.base import run_lengths
from ...models.hrf import SPMHRFModel
from ...optimize._inputs import confound_basis
from ...optimize.recipes import MIN_GRID_R2, default_tuning_grid, fit_tuning1d
from ...optimize.shared_hrf import MIN_USABLE, canonical_shared_hrf, estimate_shared_hrf, select_best_voxels
from .results import (
    HRF_DESCRIPTIONS,
    HRF_UNITS,
    FitResult,
    MapSpec,
    hrf_settings,
    lm_settings,
    make_predictor,
    nuisance,
    projected_predict,
    refit_from,
    trust_maps,
)

logger = logging.getLogger(__name__)

__all__ = ["TUNING_MODELS", "fit_tuning_inputs", "natural_maps"]

#: --model → (model with HRF, model without, description)
TUNING_MODELS = {
    "gauss1d": (GaussianPRFWithHRF, GaussianPRF, "Gaussian tuning"),
    "loggauss1d": (LogGaussianPRFWithHRF, LogGaussianPRF, "log-Gaussian tuning (Gaussian in log stimulus)"),
    "vonmises1d": (VonMisesPRFWithHRF, VonMisesPRF, "von Mises (circular) tuning"),
}


def model_values(model_name, values, period):
    """Stimulus values in the model's units (radians on the circle for von Mises)."""
    values = np.asarray(values, dtype=np.float64)
    if model_name == "vonmises1d":
        return 2 * np.pi * values / period
    return values


def natural_maps(model_name, parameters, column, period):
    """The derived maps in the stimulus' natural units: preferred value and FWHM of the tuning curve."""
    units = f"units of the events' {column} column"
    if model_name == "gauss1d":
        preferred = parameters["mu"].to_numpy()
        fwhm = 2 * np.sqrt(2 * np.log(2)) * parameters["sd"].to_numpy()
    elif model_name == "loggauss1d":
        natural = LogGaussianPRF.natural_parameters(parameters)
        preferred, fwhm = natural["preferred"].to_numpy(), natural["fwhm"].to_numpy()
    else:
        units = f"degrees ({column}, period {period:g})"
        preferred = np.mod(parameters["mu"].to_numpy() * period / (2 * np.pi), period)
        kappa = parameters["kappa"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            half = np.arccos(1.0 - np.log(2) / kappa)  # where exp(kappa (cos d - 1)) = 1/2
        fwhm = np.where(kappa > np.log(2) / 2, 2 * half * period / (2 * np.pi), np.nan)
    circular = {"CircularPeriod": period} if model_name == "vonmises1d" else None
    return [
        MapSpec("preferred", preferred.astype(np.float32), f"Preferred {column}: the peak of the tuning curve", units,
                sidecar=circular),
        MapSpec("fwhm", fwhm.astype(np.float32), f"Full width at half maximum of the tuning curve over {column}"
                + (" (NaN: the curve never falls to half its peak)" if model_name == "vonmises1d" else ""), units),
    ]


def _parameter_maps(model_name, column, period):
    stimulus = f"units of the events' {column} column"
    maps = {"amplitude": ("Response amplitude at the preferred value", "BOLD signal units"),
            "baseline": ("Baseline BOLD signal", "BOLD signal units")}
    if model_name == "gauss1d":
        maps.update({"mu": (f"Preferred {column} (centre of the Gaussian tuning curve)", stimulus),
                     "sd": ("Standard deviation of the Gaussian tuning curve", stimulus)})
    elif model_name == "loggauss1d":
        maps.update({"mu": (f"Centre of the tuning curve in natural-log {column}: log of the preferred value",
                            f"natural log of the {column} units"),
                     "sd": (f"Standard deviation of the tuning curve in natural-log {column}",
                            f"natural log of the {column} units")})
    else:
        maps.update({"mu": (f"Preferred {column} on the circle ({period:g} degrees = 2 pi)", "radians"),
                     "kappa": ("Concentration of the von Mises tuning curve (larger: narrower)", "dimensionless")})
    return maps


def _shared_hrf(inputs, canonical, extra, base_model, values):
    best = select_best_voxels(canonical.r2.to_numpy())
    if best.size < MIN_USABLE:
        return canonical_shared_hrf(inputs.tr, best.size)
    labels = base_model.get_parameter_labels()
    parameters = canonical.parameters.iloc[best][labels].assign(baseline=0.0, amplitude=1.0)
    neural = base_model.predict(inputs.paradigm, parameters).to_numpy()
    columns = np.hstack([extra, np.ones((inputs.data.shape[0], 1))])
    return estimate_shared_hrf(neural, inputs.data.iloc[:, best].to_numpy(), inputs.tr,
                               segments=run_lengths(inputs.data.index), nuisance=columns, shared_design=False)


def _nuisance_hrf(inputs, hrf, hrf_model):
    """``inputs`` with the ``--nuisance-trial-type`` regressors convolved for the HRF choice ``hrf``, and the
    sidecar's description of them.

    canonical: the SPM HRF (as assembled). shared: the shared HRF (``hrf_model``'s delay and dispersion, the
    stimulus response's). fit: the canonical regressor and its delay and dispersion derivatives — the confounds are
    fitted per voxel by linear least squares, so each voxel's nuisance response takes its own latency and width
    to first order; the exact per-voxel HRF would put the nuisance regressors inside the nonlinear model.
    """
    if not inputs.nuisance_events or hrf == "canonical":
        return inputs, (None if not inputs.nuisance_events else
                        "events of each trial type convolved with the canonical SPM HRF (exact timing)")
    if hrf == "shared":
        shape = {"a1": hrf_model.delay, "d1": hrf_model.dispersion, "a2": hrf_model.undershoot,
                 "d2": hrf_model.u_dispersion, "c": hrf_model.ratio}
        replaced = nuisance_regressors(inputs, shape)
        text = (f"events of each trial type convolved with the shared HRF of the stimulus response (delay "
                f"{hrf_model.delay:.4g} s, dispersion {hrf_model.dispersion:.4g} s; exact timing); the shared HRF "
                "itself is estimated with canonical nuisance regressors")
    else:
        replaced = nuisance_regressors(inputs, None, derivatives=True)
        text = ("events of each trial type convolved with the canonical SPM HRF, with its derivatives with respect "
                "to the HRF delay and dispersion (…_ddelay, …_ddispersion, central differences): fitted per voxel "
                "with the confounds, a first-order per-voxel HRF for the nuisance response (the stimulus response's "
                "per-voxel HRF is fitted nonlinearly; the nuisance regressors are linear confounds, shared by the "
                "voxels, so they cannot take each voxel's fitted HRF exactly)")
    others = inputs.confounds.drop(columns=[c for c in inputs.confounds.columns if str(c).startswith("nuisance_")])
    return dataclasses.replace(inputs, confounds=pd.concat([replaced, others], axis=1)), text


def _confounds_for(hrf, hrf_model):
    """For the cross-validation's scoring: the confounds of any inputs with this fit's nuisance regressors."""
    return lambda inputs: _nuisance_hrf(inputs, hrf, hrf_model)[0].confounds


def fit_tuning_inputs(inputs, model_name, hrf, max_iterations, noise_model, memory_limit, progressbar,
                      positive_amplitude=False, stimulus_period=None, min_grid_rsquared=MIN_GRID_R2):
    with_hrf, without_hrf, description = TUNING_MODELS[model_name]
    period = float(stimulus_period or 360.0)
    column = inputs.stimulus_column
    if model_name == "loggauss1d" and np.any(np.asarray(inputs.stimulus_values) <= 0):
        raise InputError(f"--model loggauss1d takes the log of the {column} values, which must be positive (found "
                         f"{float(np.min(inputs.stimulus_values)):g})", exit_code=65)
    values = model_values(model_name, inputs.stimulus_values, period)
    settings = lm_settings(max_iterations)
    extra = nuisance(inputs)
    kwargs = {"optimizer": "lm", "confounds": extra, "memory_limit": memory_limit, "progressbar": progressbar,
              "noise_model": noise_model, "min_grid_r2": float(min_grid_rsquared), **settings}

    def build(hrf_model):
        return with_hrf(stimulus_values=values, hrf_model=hrf_model, positive_amplitude=positive_amplitude)

    shared = None
    if hrf == "shared":
        model = build(SPMHRFModel(inputs.tr))
        canonical = fit_tuning1d(model, inputs.data, inputs.paradigm, **kwargs)
        start = time.perf_counter()
        shared = _shared_hrf(inputs, canonical, extra, without_hrf(stimulus_values=values), values)
        shared_time = time.perf_counter() - start
        model = build(SPMHRFModel(inputs.tr, delay=shared.delay, dispersion=shared.dispersion))
        inputs, nuisance_text = _nuisance_hrf(inputs, hrf, model.hrf_model)
        extra = nuisance(inputs)
        result = refit_from(model, inputs, canonical, extra, {**kwargs, "confounds": extra})
        result.timings = {**{f"canonical_{k}": v for k, v in canonical.timings.items()},
                          "shared_hrf": shared_time, **result.timings}
    else:
        model = build(SPMHRFModel(inputs.tr, unique_hrfs=hrf == "fit"))
        inputs, nuisance_text = _nuisance_hrf(inputs, hrf, model.hrf_model)
        extra = nuisance(inputs)
        result = fit_tuning1d(model, inputs.data, inputs.paradigm, **{**kwargs, "confounds": extra})
    parameters = result.parameters
    described = _parameter_maps(model_name, column, period)
    maps = []
    for label in parameters.columns:
        text, units = described.get(label, (HRF_DESCRIPTIONS.get(label), HRF_UNITS.get(label)))
        circular = {"CircularPeriod": 2 * np.pi} if model_name == "vonmises1d" and label == "mu" else None
        maps.append(MapSpec(label, parameters[label].to_numpy().astype(np.float32), text, units, sidecar=circular))
    maps += natural_maps(model_name, parameters, column, period)
    fitted = {k: parameters[k].to_numpy() for k in HRF_UNITS if k in parameters}
    grid = {label: [round(float(v), 4) for v in grid_values]
            for label, grid_values in default_tuning_grid(model, inputs.paradigm).items()}
    recipe = (f"{description}: grid over {grid} (correlation) -> least-squares baseline and amplitude -> "
              "Levenberg-Marquardt")
    if hrf == "shared":
        recipe = (f"canonical HRF: {recipe}; shared HRF from the best voxels; least-squares baseline and amplitude "
                  "-> Levenberg-Marquardt from the canonical solution")
    fitter_settings = {"ParameterFitter": {
        "Recipe": recipe, "Solver": "Levenberg-Marquardt", "Iterations": int(result.n_iterations),
        "Converged": bool(result.converged), "MaxIterations": settings["max_n_iterations"],
        "NoiseModel": noise_model, "PositiveAmplitude": bool(positive_amplitude),
        "StoppingRule": {"RSquaredTolerance": settings["r2_atol"], "Lag": settings["lag"]},
        "Stimulus": {"Column": column, "Values": [float(v) for v in inputs.stimulus_values],
                     **({"PeriodDegrees": period} if model_name == "vonmises1d" else {}),
                     "NeuralResponse": "the tuning curve at the event's value while the event lasts, zero between "
                                       "events, convolved with the HRF (TR resolution)"}}}
    maps += trust_maps(result, {label: described.get(label, (HRF_DESCRIPTIONS.get(label), HRF_UNITS.get(label)))
                                for label in parameters.columns}, fitter_settings)
    if nuisance_text is not None:
        fitter_settings["ParameterFitter"]["NuisanceRegressors"] = {
            "Columns": [c for c in inputs.confounds.columns if str(c).startswith("nuisance_")], "HRF": nuisance_text}
    design = pd.concat([inputs.paradigm, inputs.confounds], axis=1)
    basis = confound_basis(extra, inputs.data.shape[0])

    predict = projected_predict(inputs.data, result.fitter, basis)

    taps = len(model.hrf_model.times) if model.hrf_model.unique_hrfs else 1
    n_values = inputs.paradigm.shape[1]
    predict_runs = make_predictor(model, parameters, None, lambda inputs: inputs.paradigm, memory_limit,
                                  lambda n_time: 4 * (3 * n_values + n_time * (taps + 4)))
    return FitResult(maps=maps, r2=result.r2.to_numpy().astype(np.float32), model_class=type(model).__name__,
                           hrf=hrf_settings(model.hrf_model, hrf, fitted=fitted or None, shared=shared),
                           fitter=fitter_settings, design=design, timings=result.timings,
                           converged=result.fitter.voxel_converged.to_numpy(), history=result.fitter.history,
                           predict=predict, predict_runs=predict_runs,
                           confounds_for=_confounds_for(hrf, model.hrf_model),
                           tuning={"model": model, "parameters": parameters, "column": column, "period": period,
                                   "values": np.asarray(inputs.stimulus_values, dtype=np.float64),
                                   "name": model_name})
