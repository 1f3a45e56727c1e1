"""2-D pRF fits of one set of inputs (Gaussian, CSS, difference of Gaussians, divisive normalisation): canonical,
shared or per-voxel HRF. The extended models are staged fits seeded from the Gaussian
(:func:`~bids_encoder.optimize.recipes.fit_prf2d_staged`)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from ...models import (
    CSSPRF2DWithHRF,
    DifferenceOfGaussiansPRF2DWithHRF,
    DivisiveNormalizationGaussianPRF2DWithHRF,
    GaussianPRF2D,
    GaussianPRF2DWithHRF,
)
from ...models.base import run_lengths
from ...models.hrf import SPMHRFModel
from ...optimize._inputs import confound_basis
from ...optimize.recipes import MIN_GRID_R2, default_extra_grid, fit_prf2d, fit_prf2d_staged
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

__all__ = ["fit_prf2d_inputs"]

PRF_MAPS = {
    "x": ("Horizontal position of the pRF centre", "degrees of visual angle"),
    "y": ("Vertical position of the pRF centre", "degrees of visual angle"),
    "sd": ("pRF size: standard deviation of the 2-D Gaussian", "degrees of visual angle"),
    "baseline": ("Baseline BOLD signal", "BOLD signal units"),
    "amplitude": ("Response amplitude of the pRF", "BOLD signal units per unit aperture"),
    "n": ("Compressive exponent of the CSS model (response = amplitude x overlap^n; n < 1 compressive)",
          "dimensionless"),
    "srf_amplitude": ("Amplitude of the suppressive surround, relative to the centre", "dimensionless"),
    "srf_size": ("Size of the surround relative to the centre sd", "multiple of sd"),
    "rf_amplitude": ("Amplitude of the centre (numerator) of the divisive-normalisation model",
                     "BOLD signal units per unit aperture"),
    "neural_baseline": ("Neural baseline of the numerator of the divisive-normalisation model",
                        "BOLD signal units"),
    "surround_baseline": ("Baseline of the normalisation (denominator); fixed at 1 by the staged fit",
                          "dimensionless"),
}

#: --model → (model class, description)
PRF_MODELS = {
    "prf2d": (GaussianPRF2DWithHRF, "2-D Gaussian pRF"),
    "css2d": (CSSPRF2DWithHRF, "compressive spatial summation (Gaussian pRF with exponent n)"),
    "dog2d": (DifferenceOfGaussiansPRF2DWithHRF, "difference of Gaussians (centre minus surround)"),
    "dn2d": (DivisiveNormalizationGaussianPRF2DWithHRF, "divisive normalisation (Aqil et al., 2021)"),
}


def _shared_hrf(inputs, canonical, extra):
    """One delay and dispersion from the voxels the canonical pRF fit explains best (their positions fixed)."""
    best = select_best_voxels(canonical.r2.to_numpy())
    if best.size < MIN_USABLE:
        return canonical_shared_hrf(inputs.tr, best.size)
    parameters = canonical.parameters.iloc[best][["x", "y", "sd"]].assign(baseline=0.0, amplitude=1.0)
    neural = GaussianPRF2D(inputs.grid).predict(inputs.paradigm, parameters).to_numpy()
    nuisance_columns = np.hstack([extra, np.ones((inputs.data.shape[0], 1))])
    return estimate_shared_hrf(neural, inputs.data.iloc[:, best].to_numpy(), inputs.tr,
                               segments=run_lengths(inputs.data.index), nuisance=nuisance_columns,
                               shared_design=False)


def _fit_staged(model_class, inputs, hrf_model, kwargs, positive_amplitude, gaussian_fit=None):
    model = model_class(inputs.grid, hrf_model=hrf_model, positive_amplitude=positive_amplitude)
    if model_class is GaussianPRF2DWithHRF:
        return model, fit_prf2d(model, inputs.data, inputs.paradigm, **kwargs)
    return model, fit_prf2d_staged(model, inputs.data, inputs.paradigm, gaussian_fit=gaussian_fit, **kwargs)


def fit_prf2d_inputs(inputs, hrf, max_iterations, noise_model, memory_limit, progressbar, model="prf2d",
                     positive_amplitude=False, min_grid_rsquared=MIN_GRID_R2):
    model_name = model
    model_class, model_description = PRF_MODELS[model_name]
    settings = lm_settings(max_iterations)
    extra = nuisance(inputs)
    kwargs = {"optimizer": "lm", "confounds": extra, "memory_limit": memory_limit, "progressbar": progressbar,
              "noise_model": noise_model, "min_grid_r2": float(min_grid_rsquared), **settings}
    shared = None
    if hrf == "shared":
        gaussian = GaussianPRF2DWithHRF(inputs.grid, hrf_model=SPMHRFModel(inputs.tr),
                                        positive_amplitude=positive_amplitude)
        canonical = fit_prf2d(gaussian, inputs.data, inputs.paradigm, **kwargs)
        start = time.perf_counter()
        shared = _shared_hrf(inputs, canonical, extra)
        shared_time = time.perf_counter() - start
        hrf_model = SPMHRFModel(inputs.tr, delay=shared.delay, dispersion=shared.dispersion)
        gaussian = GaussianPRF2DWithHRF(inputs.grid, hrf_model=hrf_model, positive_amplitude=positive_amplitude)
        result = refit_from(gaussian, inputs, canonical, extra, kwargs)
        result.timings = {**{f"canonical_{k}": v for k, v in canonical.timings.items()},
                          "shared_hrf": shared_time, **result.timings}
        model = gaussian
        if model_class is not GaussianPRF2DWithHRF:
            model, result = _fit_staged(model_class, inputs, hrf_model, kwargs, positive_amplitude,
                                        gaussian_fit=result)
    else:
        hrf_model = SPMHRFModel(inputs.tr, unique_hrfs=hrf == "fit")
        model, result = _fit_staged(model_class, inputs, hrf_model, kwargs, positive_amplitude)
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
    recipe = "grid search (correlation) -> least-squares baseline and amplitude -> Levenberg-Marquardt"
    if model_class is not GaussianPRF2DWithHRF:
        grid = {label: list(values) for label, values in default_extra_grid(model).items()}
        recipe = (f"Gaussian: {recipe}; then {model_description}: per voxel, the Gaussian's position, size and HRF "
                  f"with a grid over {grid} (linear scale in closed form) -> Levenberg-Marquardt over every "
                  "parameter" + ("; the BOLD level projected out with the confounds, surround_baseline fixed at 1"
                                 if model_name == "dn2d" else ""))
    if hrf == "shared":
        recipe = (f"canonical HRF: {recipe}; shared HRF from the best voxels; least-squares baseline and amplitude "
                  "-> Levenberg-Marquardt from the canonical solution")
    fitter_settings = {"ParameterFitter": {
        "Recipe": recipe,
        "Solver": "Levenberg-Marquardt", "Iterations": int(result.n_iterations), "Converged": bool(result.converged),
        "MaxIterations": settings["max_n_iterations"], "NoiseModel": noise_model,
        "StoppingRule": {"RSquaredTolerance": settings["r2_atol"], "Lag": settings["lag"]},
        "PositiveAmplitude": bool(positive_amplitude),
        "Bounds": {"x, y": "stimulus extent widened by half of it on each side",
                   "sd": "half a pixel to the stimulus extent",
                   **({"n": list(model.bounds["n"])} if "n" in model.bounds else {})},
        "MinVisibility": {"Value": model.min_visibility,
                          "Rule": "the stimulus covers at least this share of the (normalised) field at some time "
                                  "point: grid points below it are skipped, Levenberg-Marquardt rejects steps that "
                                  "leave it (a field beyond the stimulated region is not identified)"}}}
    maps += trust_maps(result, {label: PRF_MAPS.get(label, (HRF_DESCRIPTIONS.get(label), HRF_UNITS.get(label)))
                                for label in parameters.columns}, fitter_settings)
    stimulus = pd.DataFrame({"stimulus_area": inputs.paradigm.to_numpy().mean(axis=1)}, index=inputs.data.index)
    design = pd.concat([stimulus, inputs.confounds], axis=1)
    basis = confound_basis(extra if model_name != "dn2d" else np.hstack([extra, np.ones((len(extra), 1))]),
                           inputs.data.shape[0])

    predict = projected_predict(inputs.data, result.fitter, basis)

    taps = len(model.hrf_model.times) if model.hrf_model.unique_hrfs else 1
    n_pixels = inputs.paradigm.shape[1]
    predict_runs = make_predictor(model, parameters, None, lambda inputs: inputs.paradigm, memory_limit,
                                  lambda n_time: 4 * (3 * model.n_fields * n_pixels + n_time * (taps + 4)))
    return FitResult(maps=maps, r2=result.r2.to_numpy().astype(np.float32), model_class=type(model).__name__,
                     hrf=hrf_settings(model.hrf_model, hrf, fitted=fitted or None, shared=shared),
                     fitter=fitter_settings, design=design, timings=result.timings,
                     converged=result.fitter.voxel_converged.to_numpy(), history=result.fitter.history,
                     predict=predict, predict_runs=predict_runs)


