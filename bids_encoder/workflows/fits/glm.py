"""GLM fits of one set of inputs: canonical, shared or per-voxel HRF (see :mod:`.dispatch`)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from ..._tensorflow import tf
from ...bids.derivatives import condition_labels
from ...bids.events import OVERSAMPLING
from ...inference.voxel_designs import LaggedRegressors
from ...models import LinearModelWithBaseline, LinearModelWithBaselineHRF
from ...models.base import run_lengths
from ...models.hrf import SPMHRFModel
from ...optimize import ParameterFitter, WeightFitter
from ...optimize._inputs import meaningful_voxels
from ...optimize.shared_hrf import MIN_USABLE, canonical_shared_hrf, estimate_shared_hrf, select_best_voxels
from .results import (
    HRF_DESCRIPTIONS,
    HRF_UNITS,
    FitResult,
    MapSpec,
    hrf_settings,
    lm_settings,
    make_predictor,
    run_columns,
)

logger = logging.getLogger(__name__)

__all__ = ["fit_glm"]


def _canonical_design(inputs):
    """The exact SPM-convolved design: the paradigm itself for --hrf canonical, a second design for auto."""
    return inputs.convolved if inputs.convolved is not None else inputs.paradigm


def _shared_hrf(inputs, first, tr):
    """One delay and dispersion for the fit, from the voxels the canonical weights explain best."""
    best = select_best_voxels(first.r2.to_numpy())
    if best.size < MIN_USABLE:
        return canonical_shared_hrf(tr, best.size)
    data = inputs.data
    nuisance = np.hstack([inputs.confounds.to_numpy(), run_columns(data.index)])
    return estimate_shared_hrf(inputs.paradigm.to_numpy(), data.iloc[:, best].to_numpy(), tr,
                               segments=run_lengths(data.index), nuisance=nuisance, shared_design=True)


def fit_glm(inputs, hrf, alpha, max_iterations, noise_model, memory_limit, progressbar):
    data, paradigm, confounds = inputs.data, inputs.paradigm, inputs.confounds.to_numpy()
    timings, shared, estimator = {}, None, None
    start = time.perf_counter()
    solver = {"WeightFitter": {"Solver": "closed-form least squares", "Alpha": alpha}}
    if hrf == "canonical":
        paradigm = _canonical_design(inputs)
        model = LinearModelWithBaseline()
        fitter = WeightFitter(model, None, data, paradigm, memory_limit=memory_limit, confounds=confounds)
        fitter.fit(alpha=alpha)
        timings["weights"] = time.perf_counter() - start
        model_class, hrf_parameters = "LinearModelWithBaseline", None
        hrf_model = SPMHRFModel(inputs.tr)  # the HRF of the convolved design, for the sidecars
        paradigm_of = _canonical_design
    else:
        canonical = LinearModelWithBaselineHRF(hrf_model=SPMHRFModel(inputs.tr))
        first = WeightFitter(canonical, None, data, paradigm, memory_limit=memory_limit, confounds=confounds)
        first.fit(alpha=alpha)
        timings["weights_canonical"] = time.perf_counter() - start
        start = time.perf_counter()
        if hrf == "shared":
            shared = _shared_hrf(inputs, first, inputs.tr)
            timings["shared_hrf"] = time.perf_counter() - start
            hrf_model = SPMHRFModel(inputs.tr, delay=shared.delay, dispersion=shared.dispersion)
            hrf_parameters = None
        else:
            hrf_model = SPMHRFModel(inputs.tr, unique_hrfs=True)
            hrf_parameters, estimator, settings = _per_voxel_hrfs(inputs, first, hrf_model, max_iterations,
                                                                  noise_model, memory_limit, progressbar)
            timings["hrf"] = time.perf_counter() - start
            solver["ParameterFitter"] = {
                "Solver": "Levenberg-Marquardt", "Parameters": ["hrf_delay", "hrf_dispersion"],
                "Iterations": int(estimator.n_iterations), "Converged": bool(estimator.converged),
                "MaxIterations": settings["max_n_iterations"], "NoiseModel": noise_model,
                "StoppingRule": {"RSquaredTolerance": settings["r2_atol"], "Lag": settings["lag"]}}
        start = time.perf_counter()
        model = LinearModelWithBaselineHRF(hrf_model=hrf_model)
        fitter = WeightFitter(model, hrf_parameters, data, paradigm, memory_limit=memory_limit,
                              confounds=confounds)
        fitter.fit(alpha=alpha)
        timings["weights_" + ("shared_hrf" if hrf == "shared" else "fitted_hrf")] = time.perf_counter() - start
        model_class = "LinearModelWithBaselineHRF"

        def paradigm_of(inputs):
            return inputs.paradigm

    constant = ~meaningful_voxels(data)
    r2 = fitter.r2.to_numpy().astype(np.float32)
    maps = []
    labels = condition_labels([str(c) for c in fitter.weights.index], warn=False)
    for condition in fitter.weights.index:
        values = fitter.weights.loc[condition].to_numpy().astype(np.float32)
        values[constant] = np.nan
        maps.append(MapSpec("effect", values, f"GLM effect (regression weight) of condition {condition}",
                            "BOLD signal units per unit regressor", contrast=labels[str(condition)]))
    if hrf_parameters is not None:
        for label in ("hrf_delay", "hrf_dispersion"):
            values = hrf_parameters[label].to_numpy().astype(np.float32)
            values[constant] = np.nan
            maps.append(MapSpec(label, values, HRF_DESCRIPTIONS[label], HRF_UNITS[label]))
    fitted = None if hrf_parameters is None else {k: hrf_parameters[k].to_numpy()[~constant] for k in HRF_UNITS}
    used = paradigm_of(inputs)
    design = pd.concat([used.astype(np.float64), inputs.confounds], axis=1)
    taps = len(hrf_model.times) if hrf_parameters is not None else 1
    n_regressors = used.shape[1]
    zero = pd.DataFrame({"baseline": np.zeros(data.shape[1], np.float32)}, index=fitter.weights.columns)
    predictor_parameters = zero if hrf_parameters is None else hrf_parameters.assign(baseline=0.0)
    predict_runs = make_predictor(model, predictor_parameters, fitter.weights, paradigm_of, memory_limit,
                                  lambda n_time: 4 * n_time * (taps * n_regressors + 4))

    def predict(voxels):
        """Data and full fit (regressors, run intercepts, confounds) of a few voxels, refitted alone (per-voxel
        least squares: the same weights as the whole-brain fit)."""
        chosen = data.iloc[:, voxels]
        parameters = None if hrf_parameters is None else hrf_parameters.iloc[voxels]
        refit = WeightFitter(fitter.model, parameters, chosen, used, confounds=confounds)
        refit.fit(alpha=alpha)
        return chosen.to_numpy(), refit.predictions.to_numpy()

    return FitResult(maps=maps, r2=r2, model_class=model_class,
                     regressors=_fitted_regressors(model, used, hrf_parameters),
                     hrf=hrf_settings(hrf_model, hrf, OVERSAMPLING if hrf == "canonical" else None, fitted, shared),
                     fitter=solver, design=design, timings=timings,
                     converged=None if estimator is None else estimator.voxel_converged.to_numpy(),
                     history=None if estimator is None else estimator.history, predict=predict,
                     predict_runs=predict_runs)


def _per_voxel_hrfs(inputs, first, hrf_model, max_iterations, noise_model, memory_limit, progressbar):
    """HRF delay and dispersion per voxel by Levenberg–Marquardt, the canonical weights fixed."""
    data, paradigm = inputs.data, inputs.paradigm
    model = LinearModelWithBaselineHRF(hrf_model=hrf_model, weights=first.weights)
    init = model.get_default_parameters(data.shape[1], index=data.columns)
    init["baseline"] = first.run_baselines.iloc[0].to_numpy()
    settings = lm_settings(max_iterations)
    estimator = ParameterFitter(model, data, paradigm, memory_limit=memory_limit)
    # every run's mean joins the confounds, so the baseline drops out of the projected problem: it stays fixed and
    # the solver spends its passes on the HRF parameters only (the final weights refit it)
    fit = estimator.fit(init_pars=init, optimizer="lm",
                        confounds=np.hstack([inputs.confounds.to_numpy(), run_columns(data.index)]),
                        fixed_pars=["baseline"], noise_model=noise_model, progressbar=progressbar, **settings)
    hrf_parameters = fit[hrf_model.get_parameter_labels()].fillna(hrf_model.get_default_parameters())
    return hrf_parameters, estimator, settings


def _fitted_regressors(model, paradigm, hrf_parameters):
    """The regressors as the weights saw them (for the inference): the convolved (time × conditions) design, or
    for per-voxel HRFs their compact form, each condition's lagged copies and each voxel's kernel
    (:class:`~bids_encoder.inference.LaggedRegressors`, as :class:`~bids_encoder.optimize.WeightFitter` solves)."""
    conditions = paradigm.columns
    if isinstance(model, LinearModelWithBaseline) and not isinstance(model, LinearModelWithBaselineHRF):
        return paradigm.to_numpy().astype(np.float64)
    identity = pd.DataFrame(np.eye(len(conditions)), index=conditions, columns=conditions)
    if hrf_parameters is None:  # one HRF for all voxels: each condition's response is a "voxel"
        zero = pd.DataFrame({"baseline": np.zeros(len(conditions))}, index=conditions)
        return model.predict(paradigm, zero, identity).to_numpy().astype(np.float64)
    hrf_model = model.hrf_model
    labels = hrf_model.get_parameter_labels()
    kernels = hrf_model.get_kernel(tf.constant(hrf_parameters[labels].to_numpy(), tf.float32))  # (taps, voxels)
    shifted = model._lagged(tf.constant(paradigm.to_numpy()), hrf_model.get_kernel(), run_lengths(paradigm.index))
    return LaggedRegressors(shifted.numpy().astype(np.float64), kernels.numpy().T.astype(np.float64))
