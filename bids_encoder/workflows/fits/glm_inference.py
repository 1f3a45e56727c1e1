"""First-level inference of a GLM fit: contrasts over its conditions, statistic maps and their sidecars.

The contrasts of a fit are one t contrast per condition (named by its BIDS label, as the effect maps always were),
the ``--contrast NAME=EXPRESSION`` ones, an ``effectsOfInterest`` F contrast over all conditions and the
``--f-contrast`` ones. The numeric work is :func:`bids_encoder.inference.first_level`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...bids.derivatives import condition_labels, short_label
from ...inference import ContrastError, first_level, parse_expression, parse_f_expression
from ...inference.glm import percent_signal_change
from ...inference.voxel_designs import LaggedRegressors
from ...optimize._inputs import meaningful_voxels
from .results import MapSpec

logger = logging.getLogger(__name__)

__all__ = ["ContrastSpec", "contrast_specs", "add_inference", "scale_inputs", "NOISE_MODEL_NAMES",
           "EFFECTS_OF_INTEREST"]

EFFECTS_OF_INTEREST = "effectsOfInterest"
NOISE_MODEL_NAMES = {
    "ar1": {"Name": "AR(1)", "Description": "per voxel and per run, the lag-one autocorrelation of the OLS residuals "
            "(pairs within a run only; censored volumes left out); then generalised least squares with each "
            "voxel's exact Prais-Winsten whitening (no binning, no autocorrelation across runs)"},
    "ols": {"Name": "OLS", "Description": "ordinary least squares, independent errors of equal variance"},
}
SCALING = {"psc": "percent signal change: each voxel's data of each run as 100 * (y / mean - 1), the mean over the "
                  "run's uncensored volumes (nilearn's signal_scaling=0)",
           "none": "none: BOLD signal units"}


@dataclass
class ContrastSpec:
    name: str
    kind: str  # 't' or 'F'
    expression: str
    weights: np.ndarray  # over the conditions: (conditions,) or (rows × conditions)
    default: bool = False
    condition: str | None = None  # a condition's own contrast: the condition's name (its trial_type value)


def contrast_specs(conditions, contrasts=(), f_contrasts=()):
    """The contrasts of a fit over ``conditions`` (its regressors' original names, in design order).

    ``contrasts`` and ``f_contrasts`` are (name, expression) pairs. Raises ContrastError (a usage error) for bad
    expressions, unknown conditions or a name used twice.
    """
    labels = {label: condition for condition, label in condition_labels(conditions).items()}
    specs = [ContrastSpec(label, "t", label, np.eye(len(labels))[i], default=True, condition=condition)
             for i, (label, condition) in enumerate(labels.items())]
    for name, expression in contrasts:
        specs.append(ContrastSpec(name, "t", expression, parse_expression(expression, labels)))
    if labels:
        specs.append(ContrastSpec(EFFECTS_OF_INTEREST, "F", ", ".join(labels), np.eye(len(labels)), default=True))
    for name, expression in f_contrasts:
        specs.append(ContrastSpec(name, "F", expression, parse_f_expression(expression, labels)))
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ContrastError(f"Contrast name(s) {', '.join(twice)} used twice (the conditions' own contrasts and "
                            f"{EFFECTS_OF_INTEREST} are reserved)")
    return specs


def censored_volumes(inputs):
    """Volumes with a spike column (censored by the confound strategy)."""
    spikes = [c for c in inputs.confounds.columns if str(c).startswith("censored_run")]
    if not spikes:
        return np.zeros(len(inputs.data), bool)
    return (inputs.confounds[spikes].to_numpy() != 0).any(axis=1)


def scale_inputs(inputs, scaling):
    """``psc``: the inputs with their data in percent signal change (their mean image kept for the report)."""
    mean = inputs.data.to_numpy().T.mean(axis=1)  # along each voxel's contiguous series
    if scaling == "none":
        inputs.signal_mean = mean
        return inputs
    runs = inputs.data.index.get_level_values("run").to_numpy()
    scaled, _ = percent_signal_change(inputs.data.to_numpy(), runs, keep=~censored_volumes(inputs))
    inputs.data = pd.DataFrame(scaled, index=inputs.data.index, columns=inputs.data.columns, copy=False)
    inputs.signal_mean = mean
    return inputs


def _voxels(values, chosen):
    """The columns ``chosen`` of a (time × voxels) array, voxel-major as the frame keeps it: the array itself when
    every voxel is chosen, else one gather of contiguous series (no strided copy)."""
    if chosen.size == values.shape[1]:
        return values
    return np.take(values.T, chosen, axis=0).T


def _weights_over(columns, n_conditions, weights):
    full = np.zeros((np.atleast_2d(weights).shape[0], len(columns)))
    full[:, :n_conditions] = np.atleast_2d(weights)
    return full


def add_inference(inputs, result, specs, noise_model="ar1", scaling="psc", memory_limit=1_000_000_000):
    """Replace the fit's effect maps by the maps of every contrast (t: effect, variance, t, z, p; F: F, z, p).

    ``result.regressors`` is the design's regressors as fitted: a (time × conditions) frame, or for per-voxel HRFs
    a :class:`~bids_encoder.inference.LaggedRegressors` (lagged copies, and one kernel per voxel of the data).
    """
    start = time.perf_counter()
    data = inputs.data
    conditions = [str(c) for c in inputs.paradigm.columns]
    runs = data.index.get_level_values("run").to_numpy()
    indicators = (runs[:, None] == np.unique(runs)[None, :]).astype(float)
    columns = conditions + [str(c) for c in inputs.confounds.columns] + [f"intercept_run{r}" for r in np.unique(runs)]
    valid = meaningful_voxels(data)
    chosen = np.flatnonzero(valid)
    regressors = result.regressors
    if isinstance(regressors, LaggedRegressors):
        shared = np.zeros((len(data), len(conditions)))
        voxel_regressors = regressors.subset(chosen)
    else:
        shared, voxel_regressors = np.asarray(regressors, dtype=np.float64), None
    design = np.hstack([shared, inputs.confounds.to_numpy(), indicators])
    t_specs = [spec for spec in specs if spec.kind == "t"]
    f_specs = [spec for spec in specs if spec.kind == "F"]
    try:
        fitted = first_level(
            _voxels(data.to_numpy(), chosen), design, runs,
            {spec.name: _weights_over(columns, len(conditions), spec.weights)[0] for spec in t_specs},
            {spec.name: _weights_over(columns, len(conditions), spec.weights) for spec in f_specs},
            noise_model=noise_model, censored=censored_volumes(inputs), voxel_regressors=voxel_regressors,
            memory_limit=memory_limit)
    except ValueError as error:
        raise ContrastError(str(error)) from error
    units = "percent signal change" if scaling == "psc" else "BOLD signal units"
    maps = [spec for spec in result.maps if spec.stat != "effect"]
    new = []
    for spec in specs:
        weights = _weights_over(columns, len(conditions), spec.weights)
        described = (f"condition {spec.condition}" if spec.condition is not None else
                     f"contrast {spec.name} ({spec.expression})")
        sidecar = {"Contrast": {"Name": spec.name, "Label": short_label(spec.name),
                                **({} if spec.condition is None else {"Condition": spec.condition}),
                                "Type": spec.kind, "Expression": spec.expression,
                                "ContrastWeights": ([dict(zip(columns, row, strict=True)) for row in weights]
                                                    if spec.kind == "F" else dict(zip(columns, weights[0],
                                                                                      strict=True)))},
                   "DegreesOfFreedom": fitted.df, "NoiseModel": NOISE_MODEL_NAMES[noise_model]["Name"],
                   "NoiseModelDescription": NOISE_MODEL_NAMES[noise_model]["Description"],
                   "SignalScaling": SCALING[scaling],
                   "RunModel": {"Name": "joint", "Runs": [run.run for run in inputs.runs],
                                "Description": "the runs in one design: each condition one column over all runs, each "
                                               "run its own intercept, confounds, censored volumes and AR(1) "
                                               "coefficient, one residual variance"}}
        if spec.kind == "F":
            sidecar["NumeratorDegreesOfFreedom"] = int(fitted.f_rows.get(spec.name, weights.shape[0]))
        stats = fitted.contrasts[spec.name]
        for stat, description, unit in _described(spec, described, units):
            values = np.full(data.shape[1], np.nan, np.float32)
            values[chosen] = stats[stat]
            new.append(MapSpec(stat, values, description, unit, contrast=spec.name, sidecar=sidecar,
                               in_report=stat in ("effect", "z")))
    order = {"effect": 0, "z": 1}  # the report shows the first maps: effects, then z maps
    result.maps = sorted(new, key=lambda m: order.get(m.stat, 2)) + maps
    result.inference = {"NoiseModel": NOISE_MODEL_NAMES[noise_model]["Name"], "DegreesOfFreedom": fitted.df,
                        "SignalScaling": scaling, "Contrasts": [spec.name for spec in specs],
                        "MedianAR1": None if fitted.rho is None else round(float(np.median(fitted.rho)), 4)}
    result.timings["inference"] = time.perf_counter() - start
    logger.info("Inference (%s): %d contrasts, %g degrees of freedom, %.1f s", noise_model, len(specs), fitted.df,
                result.timings["inference"])
    return result


def _described(spec, described, units):
    if spec.kind == "F":
        return [("F", f"F statistic of {described}", "F"),
                ("z", f"z score with the upper-tail p-value of the F statistic of {described}", "z"),
                ("p", f"Upper-tail p-value of the F statistic of {described}", "probability")]
    effect = ("GLM effect (regression weight) of " + described if spec.default else f"GLM effect of {described}")
    return [("effect", effect, f"{units} per unit regressor"),
            ("variance", f"Sampling variance of the effect of {described}", f"({units} per unit regressor)^2"),
            ("t", f"t statistic of {described}", "t"),
            ("z", f"z score with the one-sided (upper-tail) p-value of the t statistic of {described}; sign of t",
             "z"),
            ("p", f"One-sided (upper-tail) p-value of the t statistic of {described}", "probability")]
