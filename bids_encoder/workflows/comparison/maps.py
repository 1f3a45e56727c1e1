"""Model comparison: which model predicts held-out data best, per voxel (participant level), and how often each
model wins across participants (group level: categorical, never averaged).

Participant level, after every ``--model`` of a fit is written: ``…_model-comparison_stat-bestmodel_statmap``
holds, per voxel, the number (1, 2, …, in ``--model`` order) of the model with the highest cross-validated R²
(NaN where no model has one); its sidecar's ``Levels`` maps numbers to model names. Group level: the mode over
participants (``desc-mode``, same numbering; ties: the lower number) and, per model, the fraction of participants
with a value whose best model it is (``stat-fraction_desc-<model>``). A participant with several sessions counts
once: each model's cvR² is averaged over the sessions (NaN-aware) and the best model taken from those averages.
"""

from __future__ import annotations

import logging

import numpy as np

from ..._version import __version__
from ...bids.derivatives import map_paths, sidecar_path, write_json
from ...bids.layout import InputError
from ...bids.participant_maps import read_map
from ..common.naming import output_entities

logger = logging.getLogger(__name__)

__all__ = ["COMPARISON", "best_model", "write_model_comparison", "group_comparison"]

COMPARISON = "comparison"  # the model entity of comparison outputs
SESSIONS = ("per participant, each model's cross-validated R² averaged over the participant's sessions "
            "(NaN-aware), then the best model of those averages: each participant counts once")
CRITERION = "highest cross-validated R² (stat-cvrsquared) of the models fitted on the same inputs"


def best_model(cvr2):
    """(models × voxels) cvR² → 1-based index of the best model per voxel (NaN where none has a value)."""
    cvr2 = np.asarray(cvr2, dtype=np.float64)
    finite = np.isfinite(cvr2)
    best = np.argmax(np.where(finite, cvr2, -np.inf), axis=0) + 1.0
    return np.where(finite.any(axis=0), best, np.nan)


def _levels(models):
    return {str(i + 1): model for i, model in enumerate(models)}


def _mask_writer(geometry, values):
    mask = np.isfinite(values) if geometry.kind == "volume" else np.ones(values.size, bool)
    return geometry.writer(mask), mask


def write_model_comparison(output_dir, runs, models, kind):
    """Write the best-model map of the fit of ``runs`` (maps of ``kind``: volume, gifti or cifti) from the cvR²
    maps of ``models``; returns the paths.

    Skipped, with a warning, when a model has no cvR² map (a finished fit from a run with ``--cv none``).
    """
    arrays, geometry, used = [], None, []
    for model in models:
        entities = {**output_entities(runs, model), "stat": "cvrsquared"}
        path = map_paths(output_dir, entities, kind)
        first = path["L"] if isinstance(path, dict) else path
        if not first.exists():
            logger.warning("Model comparison skipped: %s has no cross-validated R² map (%s)", model, first.name)
            return []
        values, geometry = read_map(path)
        arrays.append(values)
        used.append(first.relative_to(output_dir).as_posix())
    stacked = np.vstack(arrays)
    best = best_model(stacked)
    writer, mask = _mask_writer(geometry, best)
    entities = {**output_entities(runs, COMPARISON), "stat": "bestmodel"}
    path = map_paths(output_dir, entities, geometry.kind)
    writer.write(best[mask].astype(np.float32), path, name="bestmodel")
    finite = best[np.isfinite(best)]
    fractions = {model: (round(float(np.mean(finite == i + 1)), 4) if finite.size else None)
                 for i, model in enumerate(models)}
    medians = {model: (float(np.nanmedian(row)) if np.isfinite(row).any() else None)
               for model, row in zip(models, stacked, strict=True)}
    write_json(sidecar_path(path), {
        "Description": "Best model per voxel: the number of the model with the highest cross-validated R²",
        "Units": "category (see Levels)", "Levels": _levels(models), "Models": list(models), "Criterion": CRITERION,
        "FractionOfVoxelsWon": fractions, "MedianCVRSquared": medians,
        "OutOfMaskValue": "NaN: no model has a cross-validated R² at the voxel",
        "Sources": [f"bids::{p}" for p in used], "SoftwareVersion": __version__})
    logger.info("Model comparison: %s", ", ".join(f"{m} wins {f:.1%}" for m, f in fractions.items() if f is not None))
    written = list(path.values()) if isinstance(path, dict) else [path]
    return written + [sidecar_path(path)]


def _model_map(bestmodel_path, model):
    """The path(s) of ``model``'s cvR² map beside a best-model map (a dict hemi → path for GIFTI)."""
    def one(path):
        name = path.name.replace(f"_model-{COMPARISON}_stat-bestmodel_", f"_model-{model}_stat-cvrsquared_")
        return path.with_name(name)

    if isinstance(bestmodel_path, dict):
        return {hemi: one(path) for hemi, path in bestmodel_path.items()}
    return one(bestmodel_path)


def _participant_best(fits, names):
    """(best model per voxel, numbered as ``names``, geometry) of one participant; ``names`` (the models seen so
    far, in order) gains the participant's models.

    One session: the participant's best-model map. Several: each model's cvR² averaged over the sessions that
    have it (NaN-aware), then the best model of those averages.
    """
    import json

    levels = [json.loads(fit.sidecars[(None, "bestmodel")].read_text())["Levels"] for fit in fits]
    for model in [model for session in levels for model in session.values()]:
        if model not in names:
            names.append(model)
    if len(fits) == 1:
        values, geometry = read_map(fits[0].maps[(None, "bestmodel")])
        named = np.full(values.shape, np.nan)
        for number, model in levels[0].items():
            named[values == float(number)] = names.index(model) + 1
        return named, geometry
    sums, counts, geometry = {}, {}, None
    for fit, session in zip(fits, levels, strict=True):
        for model in session.values():
            path = _model_map(fit.maps[(None, "bestmodel")], model)
            first = path["L"] if isinstance(path, dict) else path
            if not first.is_file():
                raise InputError(f"{fit.label}: the best-model map names {model}, whose cross-validated R² map "
                                 f"{first.name} is missing; re-run the participant level", exit_code=66)
            values, geometry = read_map(path)
            finite = np.isfinite(values)
            sums[model] = sums.get(model, 0.0) + np.where(finite, values, 0.0)
            counts[model] = counts.get(model, 0) + finite
    stacked = np.full((len(names), values.size), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for model in sums:
            stacked[names.index(model)] = np.where(counts[model] > 0, sums[model] / np.maximum(counts[model], 1),
                                                   np.nan)
    return best_model(stacked), geometry


def group_comparison(key, fits_by_subject, staging, common):
    """Group maps of the best-model maps: mode and fraction per model. Returns the paths written.

    Per participant, each model's cvR² is averaged over the participant's sessions (NaN-aware) and the best model
    per voxel is taken from those averages, so that a participant counts once; with one session this is the
    participant's own best-model map. Participants' models are matched by name (participants may have compared
    different sets of models).
    """
    names, per_subject, geometry = [], [], None
    for fits in fits_by_subject.values():
        best, geometry = _participant_best(fits, names)
        per_subject.append(best)
    stacked = np.vstack(per_subject)
    counts = np.stack([(stacked == i + 1).sum(axis=0) for i in range(len(names))])  # models × voxels
    present = np.isfinite(stacked).sum(axis=0)
    mode = np.where(present > 0, np.argmax(counts, axis=0) + 1.0, np.nan)
    writer, mask = _mask_writer(geometry, mode)
    base = {**dict(key), "stat": "bestmodel"}
    written = []
    outputs = [({**base, "desc": "mode"}, mode, {
        "Description": "Most frequent best model across participants (ties: the lower number)",
        "Units": "category (see Levels)", "Levels": _levels(names)})]
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, name in enumerate(names):
            outputs.append(({**dict(key), "stat": "fraction", "desc": name}, counts[i] / np.where(present, present, 1),
                            {"Description": f"Fraction of the participants with a value whose best model is {name}",
                             "Units": "fraction"}))
    for entities, values, sidecar in outputs:
        values = np.where(present > 0, values, np.nan)
        path = map_paths(staging, entities, geometry.kind)
        writer.write(values[mask].astype(np.float32), path, name=entities["stat"])
        write_json(sidecar_path(path), {**sidecar, **common, "Criterion": CRITERION,
                                        "Statistic": "categorical: mode and fractions, never a mean",
                                        "Sessions": SESSIONS})
        written += (list(path.values()) if isinstance(path, dict) else [path]) + [sidecar_path(path)]
    return written
