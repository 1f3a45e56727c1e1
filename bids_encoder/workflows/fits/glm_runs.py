"""The GLM's runs as FitLins, nilearn and FSL combine them (``--run-model fixed-effects``).

Each run is fitted on its own: the design gets one column per condition *and run* (zero outside its run; a run
without events of a condition has no column for it), beside the run's own confounds, censored volumes and
intercept, which are per run already. Least squares then decouples into one fit per run, so the weights, R², the
report's fits and the per-voxel HRFs (``--hrf fit``: one HRF per voxel for all its runs) come from one joint call.

Inference (:func:`add_fixed_effects_inference`) fits every run's GLM on its own rows — its AR(1) coefficient, its
residual variance, its degrees of freedom — and combines the per-run contrasts by fixed effects, as nilearn's
``FirstLevelModel.compute_contrast`` does for a list of runs: a t contrast enters from the runs that have every
condition it weighs; with equal weights (the default, SPM's and nilearn's convention) the effect is the mean of
the runs' effects and its variance the sum of their variances over the number of runs squared (t = Σe / √Σv);
with ``precision`` weights (FSL's) ``Σ(e/v) / Σ(1/v)`` and ``1 / Σ(1/v)``; degrees of freedom the sum of the runs'.
F contrasts combine each run's row effects and their covariances (:func:`~bids_encoder.inference.f_fixed_effects`).

The cross-validation predicts a held-out run with each condition's mean weight over the training runs that have it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import pandas as pd

from ...bids.derivatives import condition_labels, short_label
from ...inference import ContrastError, first_level, fixed_effects
from ...inference.f_fixed_effects import f_fixed_effects
from ...inference.voxel_designs import LaggedRegressors
from ...optimize._inputs import meaningful_voxels
from .glm import fit_glm
from .glm_inference import NOISE_MODEL_NAMES, SCALING, _described, censored_volumes
from .results import MapSpec

logger = logging.getLogger(__name__)

__all__ = ["RUN_MODELS", "RUN_WEIGHTS", "fit_glm_fixed_effects", "add_fixed_effects_inference", "split_by_run"]

RUN_MODELS = ("joint", "fixed-effects")
RUN_WEIGHTS = ("equal", "precision")
DESCRIPTIONS = {
    "equal": "each run that has the contrast's conditions counts equally: effect = mean of the runs' effects, "
             "variance = sum of their variances / number of runs^2 (nilearn FirstLevelModel on a list of runs, SPM)",
    "precision": "runs weighted by their precision: effect = sum(e / v) / sum(1 / v), variance = 1 / sum(1 / v) "
                 "(FSL's fixed effects)",
}


def _run_numbers(index):
    return index.get_level_values("run").to_numpy()


def split_by_run(inputs):
    """The inputs with one regressor per (condition, run) — the condition's column on that run's rows, zero
    elsewhere — for the (condition, run) pairs whose column is not zero; returns ``(inputs, [(condition, run)])``.

    The exact convolved design (``inputs.convolved``) is split with the same columns."""
    runs = _run_numbers(inputs.data.index)
    frames = [f for f in (inputs.paradigm, inputs.convolved) if f is not None]
    pairs = []
    for run in np.unique(runs):
        rows = runs == run
        for condition in inputs.paradigm.columns:
            if any(np.any(frame[condition].to_numpy()[rows] != 0) for frame in frames):
                pairs.append((condition, int(run)))
    names = [f"{condition}_run{run}" for condition, run in pairs]

    def split(frame):
        if frame is None:
            return None
        values = np.column_stack([frame[c].to_numpy() * (runs == r) for c, r in pairs]) if pairs else \
            np.zeros((len(frame), 0), frame.to_numpy().dtype)
        return pd.DataFrame(values.astype(frame.to_numpy().dtype), index=frame.index, columns=names)

    convolved = None if inputs.convolved is None else (
        split(inputs.paradigm) if inputs.convolved is inputs.paradigm else split(inputs.convolved))
    paradigm = split(inputs.paradigm)
    if inputs.convolved is inputs.paradigm:
        convolved = paradigm
    return dataclasses.replace(inputs, paradigm=paradigm, convolved=convolved), pairs


def _spread(inputs, pairs):
    """Inputs whose paradigm has the training fit's (condition, run) columns, each the condition's own column
    divided by the number of training runs that have it: the split fit's weights then predict with each
    condition's mean weight over those runs (the model is linear in its paradigm)."""
    counts = {}
    for condition, _ in pairs:
        counts[condition] = counts.get(condition, 0) + 1
    names = [f"{condition}_run{run}" for condition, run in pairs]

    def spread(frame):
        if frame is None:
            return None
        values = np.column_stack([frame[c].to_numpy() / counts[c] for c, _ in pairs]) if pairs else \
            np.zeros((len(frame), 0), np.float32)
        return pd.DataFrame(values.astype(np.float32), index=frame.index, columns=names)

    paradigm = spread(inputs.paradigm)
    convolved = paradigm if inputs.convolved is inputs.paradigm else spread(inputs.convolved)
    return dataclasses.replace(inputs, paradigm=paradigm, convolved=convolved)


def fit_glm_fixed_effects(inputs, hrf, alpha, max_iterations, noise_model, memory_limit, progressbar):
    """:func:`~bids_encoder.workflows.fits.glm.fit_glm` with one regressor per condition and run; its effect maps
    are each condition's mean weight over the runs that have it."""
    split, pairs = split_by_run(inputs)
    result = fit_glm(split, hrf, alpha, max_iterations, noise_model, memory_limit, progressbar)
    result.run_columns = pairs
    per_run = [spec for spec in result.maps if spec.stat == "effect"]  # one per (condition, run), in order
    conditions = list(dict.fromkeys(condition for condition, _ in pairs))
    labels = condition_labels([str(c) for c in conditions], warn=False)
    effects = []
    for condition in conditions:
        stacked = np.vstack([spec.values for spec, (c, _) in zip(per_run, pairs, strict=True) if c == condition])
        effects.append(MapSpec("effect", stacked.mean(axis=0).astype(np.float32),
                               f"GLM effect (regression weight) of condition {condition}: mean over the runs "
                               "fitted separately", "BOLD signal units per unit regressor",
                               contrast=labels[str(condition)]))
    result.maps = effects + [spec for spec in result.maps if spec.stat != "effect"]
    fitted = result.predict_runs
    result.predict_runs = lambda held_out, runs: fitted(_spread(held_out, pairs), runs)
    return result


def _run_design(inputs, result, run, chosen):
    """Rows, design, voxel regressors and conditions of one run's own GLM."""
    runs = _run_numbers(inputs.data.index)
    rows = runs == run
    columns = [k for k, (_, r) in enumerate(result.run_columns) if r == run]
    conditions = [str(result.run_columns[k][0]) for k in columns]
    confounds = inputs.confounds.to_numpy()[rows]
    confounds = confounds[:, np.any(confounds != 0, axis=0)]
    regressors = result.regressors
    if isinstance(regressors, LaggedRegressors):
        voxel = LaggedRegressors(regressors.lagged[columns][:, rows], np.asarray(regressors.kernels)[chosen])
        shared = np.zeros((int(rows.sum()), len(columns)))
    else:
        voxel, shared = None, np.asarray(regressors, dtype=np.float64)[rows][:, columns]
    design = np.hstack([shared, confounds, np.ones((int(rows.sum()), 1))])
    return rows, design, voxel, conditions


def _enters(weights, conditions, present):
    """The weights of ``weights`` (over ``conditions``) over a run's ``present`` conditions, or None when the run
    lacks a condition they weigh."""
    weigh = {c: w for c, w in zip(conditions, weights, strict=True) if w != 0}
    if not set(weigh) <= set(present):
        return None
    return np.array([weigh.get(c, 0.0) for c in present])


def add_fixed_effects_inference(inputs, result, specs, noise_model="ar1", scaling="psc", memory_limit=1_000_000_000,
                                run_weights="equal"):
    """The maps of every contrast (as :func:`~bids_encoder.workflows.fits.glm_inference.add_inference`), each run's
    GLM fitted on its own and the runs' contrasts combined by fixed effects (``run_weights``: equal or precision)."""
    start = time.perf_counter()
    data = inputs.data
    conditions = [str(c) for c in inputs.paradigm.columns]
    valid = meaningful_voxels(data)
    chosen = np.flatnonzero(valid)
    censored = censored_volumes(inputs)
    runs = [int(r) for r in np.unique(_run_numbers(data.index))]
    labels = {run: inputs.runs[run - 1].run for run in runs}
    per_run = {}  # run → (fitted, conditions, {t name: entered}, {F name: [row indices]})
    for run in runs:
        rows, design, voxel, present = _run_design(inputs, result, run, chosen)
        t, f_rows = {}, {}
        zeros = np.zeros(design.shape[1] - len(present))  # confounds, spikes and intercept: never weighed
        for spec in specs:
            if spec.kind == "t":
                weights = _enters(spec.weights, conditions, present)
                if weights is not None:
                    t[spec.name] = np.r_[weights, zeros]
                continue
            rows_in = [i for i, row in enumerate(np.atleast_2d(spec.weights))
                       if _enters(row, conditions, present) is not None]
            f_rows[spec.name] = rows_in
            vectors = {i: np.r_[_enters(spec.weights[i], conditions, present), zeros] for i in rows_in}
            for i in rows_in:
                t[f"{spec.name}\0{i}"] = vectors[i]
                for j in rows_in:
                    if j > i:
                        t[f"{spec.name}\0{i}\0{j}"] = vectors[i] + vectors[j]
        try:
            fitted = first_level(data.to_numpy()[rows][:, chosen], design, np.full(int(rows.sum()), run), t, {},
                                 noise_model=noise_model, censored=censored[rows], voxel_regressors=voxel,
                                 memory_limit=memory_limit)
        except ValueError as error:
            raise ContrastError(f"run {labels[run]}: {error}") from error
        per_run[run] = (fitted, f_rows)
    units = "percent signal change" if scaling == "psc" else "BOLD signal units"
    maps = [spec for spec in result.maps if spec.stat != "effect"]
    new, degrees = [], []
    for spec in specs:
        if spec.kind == "t":
            entered = [run for run in runs if spec.name in per_run[run][0].contrasts]
            stats = _combine_t(spec.name, entered, per_run, len(chosen), run_weights)
        else:
            entered = [run for run in runs if per_run[run][1].get(spec.name)]
            stats = _combine_f(spec, entered, per_run, len(chosen), run_weights)
        df = float(sum(per_run[run][0].df for run in entered))
        degrees.append(df)
        sidecar = _sidecar(spec, conditions, entered, labels, per_run, df, noise_model, scaling, run_weights, stats)
        described = (f"condition {spec.condition}" if spec.condition is not None else
                     f"contrast {spec.name} ({spec.expression})")
        for stat, description, unit in _described(spec, described, units):
            values = np.full(data.shape[1], np.nan, np.float32)
            values[chosen] = stats[stat]
            new.append(MapSpec(stat, values, description + ", fixed effects over the runs fitted separately", unit,
                               contrast=spec.name, sidecar=sidecar, in_report=stat in ("effect", "z")))
        if not entered:
            logger.warning("Contrast %s is not estimable in any run (no run has all its conditions): NaN maps",
                           spec.name)
    order = {"effect": 0, "z": 1}
    result.maps = sorted(new, key=lambda m: order.get(m.stat, 2)) + maps
    rho = [per_run[run][0].rho for run in runs if per_run[run][0].rho is not None]
    result.inference = {"NoiseModel": NOISE_MODEL_NAMES[noise_model]["Name"],
                        "DegreesOfFreedom": max(degrees) if degrees else 0.0, "SignalScaling": scaling,
                        "Contrasts": [spec.name for spec in specs], "RunModel": f"fixed effects ({run_weights})",
                        "MedianAR1": round(float(np.median(np.vstack(rho))), 4) if rho else None}
    result.timings["inference"] = time.perf_counter() - start
    logger.info("Inference (%s, fixed effects of %d runs, %s weights): %d contrasts, %.1f s", noise_model,
                len(runs), run_weights, len(specs), result.timings["inference"])
    return result


def _combine_t(name, entered, per_run, n_voxels, run_weights):
    if not entered:
        nan = np.full(n_voxels, np.nan)
        return {"effect": nan, "variance": nan, "t": nan, "z": nan, "p": nan}
    effects = np.vstack([per_run[run][0].contrasts[name]["effect"] for run in entered])
    variances = np.vstack([per_run[run][0].contrasts[name]["variance"] for run in entered])
    combined = fixed_effects(effects, variances, [per_run[run][0].df for run in entered],
                             precision_weighted=run_weights == "precision")
    return {"effect": combined.effect, "variance": combined.variance, "t": combined.t, "z": combined.z,
            "p": combined.p}


def _combine_f(spec, entered, per_run, n_voxels, run_weights):
    q = np.atleast_2d(spec.weights).shape[0]
    effects = np.full((len(entered), q, n_voxels), np.nan)
    covariances = np.zeros((len(entered), q, q, n_voxels))
    for k, run in enumerate(entered):
        fitted, f_rows = per_run[run]
        rows = f_rows[spec.name]
        for i in rows:
            single = fitted.contrasts[f"{spec.name}\0{i}"]
            effects[k, i], covariances[k, i, i] = single["effect"], single["variance"]
        for i in rows:
            for j in rows:
                if j > i:
                    pair = fitted.contrasts[f"{spec.name}\0{i}\0{j}"]["variance"]
                    covariances[k, i, j] = covariances[k, j, i] = (pair - covariances[k, i, i]
                                                                   - covariances[k, j, j]) / 2
    combined = f_fixed_effects(effects, covariances, [per_run[run][0].df for run in entered],
                               precision_weighted=run_weights == "precision")
    return combined


def _sidecar(spec, conditions, entered, labels, per_run, df, noise_model, scaling, run_weights, stats):
    weights = np.atleast_2d(spec.weights)
    by_condition = [dict(zip(conditions, row.tolist(), strict=True)) for row in weights]
    sidecar = {"Contrast": {"Name": spec.name, "Label": short_label(spec.name),
                            **({} if spec.condition is None else {"Condition": spec.condition}),
                            "Type": spec.kind, "Expression": spec.expression,
                            "ContrastWeights": by_condition if spec.kind == "F" else by_condition[0]},
               "DegreesOfFreedom": df, "NoiseModel": NOISE_MODEL_NAMES[noise_model]["Name"],
               "NoiseModelDescription": NOISE_MODEL_NAMES[noise_model]["Description"],
               "SignalScaling": SCALING[scaling],
               "RunModel": {"Name": "fixed-effects", "Weights": run_weights, "Definition": DESCRIPTIONS[run_weights],
                            "Runs": [labels[run] for run in entered],
                            "RunDegreesOfFreedom": [per_run[run][0].df for run in entered],
                            "Description": "each run's GLM fitted on its own (its AR(1) coefficient, confounds, "
                                           "censored volumes and intercept); a run enters a contrast when it has "
                                           "events of every condition the contrast weighs (an F contrast: of its "
                                           "rows)"}}
    if spec.kind == "F":
        sidecar["NumeratorDegreesOfFreedom"] = stats["rows"]
    return sidecar
