"""Cross-validated R² of a fit, and the HRF choice that wins out of sample (``--cv``, ``--hrf auto``).

Schemes:

- ``loro`` (leave one run out; the default with ≥ 2 runs): fit on the other runs, predict the held-out run.
- ``split-half`` (the default with one run): two contiguous halves of every run (interleaved halves would leak
  through the autocorrelation of the BOLD). The held-out half is censored out of the training fit with one spike
  regressor per volume — the same as deleting it from the least squares — so the stimulus history, and with it
  the HRF's response to events before the held-out half, stays intact.

Each held-out block is scored after projecting its own confounds and run intercepts out of both the data and the
prediction (the confounds are nuisance, not model); cvR² = 1 − ΣSSE / ΣSST over all held-out blocks together.
Everything estimated from data (weights, pRF parameters, HRF parameters, grid starts) comes from the training
fold only. cvR² can be negative (a prediction worse than the held-out mean) and is never clipped.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import pandas as pd

from ...optimize._inputs import confound_basis
from .dispatch import fit_model
from .kinds import HRF_CHOICES
from .results import run_columns

logger = logging.getLogger(__name__)

__all__ = ["CV_SCHEMES", "CrossValidationError", "cross_validate", "fit_with_cv", "make_folds"]

CV_SCHEMES = ("auto", "loro", "split-half", "none")
SCORE_CHUNK = 16384  # voxels scored at once


class CrossValidationError(ValueError):
    """A cross-validation that cannot run on these inputs (a usage error of --cv or --hrf auto)."""


@dataclasses.dataclass
class Fold:
    number: int
    test: np.ndarray  # bool over the rows (time points) of the inputs
    description: str


def make_folds(index, scheme="auto"):
    """``(scheme, folds)`` for a (run, volume) index; ``auto`` is ``loro`` with ≥ 2 runs, else ``split-half``."""
    runs = index.get_level_values("run").to_numpy()
    labels = list(dict.fromkeys(runs.tolist()))
    if scheme == "auto":
        scheme = "loro" if len(labels) >= 2 else "split-half"
    if scheme == "loro":
        if len(labels) < 2:
            raise CrossValidationError("--cv loro needs at least two runs in the fit; use --cv split-half for one run")
        return scheme, [Fold(i + 1, runs == run, f"run {run} held out") for i, run in enumerate(labels)]
    if scheme != "split-half":
        raise CrossValidationError(f"Unknown cross-validation scheme {scheme!r}; choose from {', '.join(CV_SCHEMES)}")
    position = np.concatenate([np.arange((runs == run).sum()) for run in labels])
    length = np.concatenate([np.full((runs == run).sum(), (runs == run).sum()) for run in labels])
    first = position < length // 2
    if (length < 8).any():
        raise CrossValidationError("split-half cross-validation needs runs of at least 8 volumes")
    return scheme, [Fold(1, first, "first half of every run held out"),
                    Fold(2, ~first, "second half of every run held out")]


def training_inputs(inputs, fold, scheme):
    """The inputs of the training fit: the other runs (loro), or every run with the held-out half censored."""
    if scheme == "loro":
        keep = ~fold.test
        confounds = inputs.confounds[keep]
        confounds = confounds.loc[:, (confounds != 0).any(axis=0).to_numpy()]
        kept_runs = set(inputs.data.index.get_level_values("run")[keep])
        return dataclasses.replace(
            inputs, runs=[run for i, run in enumerate(inputs.runs) if i + 1 in kept_runs],
            data=inputs.data[keep], paradigm=inputs.paradigm[keep], confounds=confounds,
            convolved=None if inputs.convolved is None else inputs.convolved[keep])
    held = np.flatnonzero(fold.test)
    spikes = np.zeros((len(fold.test), held.size))
    spikes[held, np.arange(held.size)] = 1.0
    spikes = pd.DataFrame(spikes, index=inputs.confounds.index, columns=[f"cv_heldout_{i:04d}" for i in held])
    return dataclasses.replace(inputs, confounds=pd.concat([inputs.confounds, spikes], axis=1))


def _held_out_basis(inputs, test):
    """Orthonormal basis of the held-out rows' own confounds and run intercepts (censored volumes included)."""
    confounds = inputs.confounds.to_numpy()[test]
    confounds = confounds[:, np.any(confounds != 0, axis=0)]
    intercepts = run_columns(inputs.data.index[test])
    return confound_basis(np.hstack([confounds, intercepts]), int(test.sum()))


def score_fold(inputs, test, prediction):
    """Per-voxel SSE and SST of the held-out rows ``test``, nuisance projected out of data and prediction."""
    basis = _held_out_basis(inputs, test)
    data = inputs.data.to_numpy()
    rows = np.flatnonzero(test)
    sse = np.zeros(data.shape[1])
    sst = np.zeros(data.shape[1])
    for start in range(0, data.shape[1], SCORE_CHUNK):
        chunk = slice(start, start + SCORE_CHUNK)
        y = data[rows, chunk].astype(np.float64)
        residual = y - prediction[:, chunk]
        if basis is not None:
            y = y - basis @ (basis.T @ y)
            residual = residual - basis @ (basis.T @ residual)
        sse[chunk] = np.sum(residual**2, axis=0)
        sst[chunk] = np.sum(y**2, axis=0)
    return sse, sst


def _r2(sse, sst):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)


def cross_validate(inputs, fit, scheme="auto"):
    """Cross-validated R² per voxel of ``fit`` (inputs → FitResult) on ``inputs``.

    Returns
    -------
    dict with ``Scheme``, ``Folds`` (what each held out, its volumes, its median R²), ``cvr2`` (array, NaN for
    voxels not fitted in a fold) and ``WallTime``.
    """
    started = time.perf_counter()
    scheme, folds = make_folds(inputs.data.index, scheme)
    n_voxels = inputs.data.shape[1]
    sse, sst = np.zeros(n_voxels), np.zeros(n_voxels)
    valid = np.ones(n_voxels, dtype=bool)
    described = []
    for fold in folds:
        result = fit(training_inputs(inputs, fold, scheme))
        runs = sorted(set(inputs.data.index.get_level_values("run")[fold.test]))
        rows, prediction = result.predict_runs(inputs, runs)
        prediction = prediction[fold.test[rows]]
        scored = inputs if result.confounds_for is None else dataclasses.replace(
            inputs, confounds=result.confounds_for(inputs))  # the nuisance regressors as the fit used them
        fold_sse, fold_sst = score_fold(scored, fold.test, prediction)
        valid &= np.isfinite(np.asarray(result.r2)) & np.isfinite(fold_sse)
        sse += np.nan_to_num(fold_sse)
        sst += fold_sst
        fold_r2 = _r2(fold_sse, fold_sst)[valid]
        described.append({"Fold": fold.number, "HeldOut": fold.description,
                          "TrainingVolumes": int((~fold.test).sum()), "HeldOutVolumes": int(fold.test.sum()),
                          "MedianCVRSquared": float(np.nanmedian(fold_r2)) if fold_r2.size else None})
        logger.info("cross-validation fold %d/%d (%s): median held-out R² %s", fold.number, len(folds),
                    fold.description, described[-1]["MedianCVRSquared"])
    cvr2 = np.where(valid, _r2(sse, sst), np.nan).astype(np.float32)
    finite = cvr2[np.isfinite(cvr2)]
    return {"Scheme": scheme, "Folds": described, "cvr2": cvr2,
            "MedianCVRSquared": float(np.median(finite)) if finite.size else None,
            "FractionPositive": float((finite > 0).mean()) if finite.size else None,
            "WallTime": round(time.perf_counter() - started, 3)}


def fit_with_cv(inputs, model, hrf="canonical", cv="auto", **fit_options):
    """Fit ``model`` with ``hrf`` (or ``auto``: the HRF choice with the best median cvR²) and its cvR².

    The full-data fit gives the maps; ``result.cv`` holds the cross-validation (None with ``cv='none'``).
    """
    if hrf == "auto":
        if cv == "none":
            raise CrossValidationError("--hrf auto chooses by cross-validated R²: it cannot run with --cv none")
        return _choose_hrf(inputs, model, cv, fit_options)
    result = fit_model(inputs, model, hrf=hrf, **fit_options)
    if cv != "none":
        result.cv = cross_validate(inputs, lambda train: fit_model(train, model, hrf=hrf, **fit_options), cv)
    return result


def _choose_hrf(inputs, model, cv, fit_options):
    """Fit every HRF choice with its cvR²; keep the one with the highest median cvR² over the voxels with cvR² > 0
    under any of them."""
    candidates = {}
    for choice in HRF_CHOICES:
        start = time.perf_counter()
        result = fit_with_cv(inputs, model, hrf=choice, cv=cv, **fit_options)
        result.timings["total"] = time.perf_counter() - start
        candidates[choice] = result
    stacked = np.vstack([candidates[choice].cv["cvr2"] for choice in HRF_CHOICES])
    voxels = np.any(stacked > 0, axis=0)
    medians = {choice: (float(np.nanmedian(row[voxels])) if voxels.any() else float("-inf"))
               for choice, row in zip(HRF_CHOICES, stacked, strict=True)}
    winner = max(HRF_CHOICES, key=lambda choice: (medians[choice], -HRF_CHOICES.index(choice)))
    result = candidates[winner]
    result.hrf["Auto"] = {
        "Chosen": winner, "Candidates": list(HRF_CHOICES),
        "MedianCVRSquared": {choice: (None if not np.isfinite(value) else round(value, 6))
                             for choice, value in medians.items()},
        "Voxels": int(voxels.sum()),
        "Rule": "highest median cross-validated R² over the voxels with cvR² > 0 under any candidate (ties: the "
                "simpler HRF)",
        "Selection": "the choice is made on the same held-out data whose cvR² is reported: the winner's cvR² is "
                     "optimistic by the selection among three candidates",
        "WallTime": {choice: round(candidates[choice].timings["total"], 3) for choice in HRF_CHOICES}}
    logger.info("--hrf auto: %s wins (median cvR² %s)", winner,
                ", ".join(f"{c} {m:.4f}" for c, m in medians.items()))
    return result
