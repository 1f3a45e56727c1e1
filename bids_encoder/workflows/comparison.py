"""Model comparison: which model predicts held-out data best, per voxel (participant level), and how often each
model wins across participants (group level: categorical, never averaged).

Participant level, after every ``--model`` of a fit is written: ``…_model-comparison_stat-bestmodel_statmap``
holds, per voxel, the number (1, 2, …, in ``--model`` order) of the model with the highest cross-validated R²
(NaN where no model has one); its sidecar's ``Levels`` maps numbers to model names. Group level: the mode over
participants (``desc-mode``, same numbering; ties: the lower number) and, per model, the fraction of participants
with a value whose best model it is (``stat-fraction_desc-<model>``).
"""

from __future__ import annotations

import logging

import numpy as np

from .._version import __version__
from ..bids.derivatives import map_paths, sidecar_path, write_json
from ..bids.participant_maps import read_map
from .outputs import output_entities

logger = logging.getLogger(__name__)

__all__ = ["COMPARISON", "best_model", "write_model_comparison", "group_comparison"]

COMPARISON = "comparison"  # the model entity of comparison outputs
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


def group_comparison(key, fits_by_subject, staging, common):
    """Group maps of the best-model maps: mode and fraction per model. Returns the paths written.

    Participants' levels are matched by model name (participants may have compared different sets of models).
    """
    import json

    names, per_subject, geometry = [], [], None
    for fits in fits_by_subject.values():
        fit = fits[0]  # sessions: the first (a categorical map cannot be averaged)
        values, geometry = read_map(fit.maps[(None, "bestmodel")])
        levels = json.loads(fit.sidecars[(None, "bestmodel")].read_text())["Levels"]
        for name in levels.values():
            if name not in names:
                names.append(name)
        named = np.full(values.shape, np.nan)
        for number, name in levels.items():
            named[values == float(number)] = names.index(name) + 1
        per_subject.append(named)
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
                                        "Statistic": "categorical: mode and fractions, never a mean"})
        written += (list(path.values()) if isinstance(path, dict) else [path]) + [sidecar_path(path)]
    return written
