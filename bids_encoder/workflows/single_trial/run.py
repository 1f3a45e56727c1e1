"""One ``--model singletrial`` fit: the runs' BOLD, confounds and events → single-trial betas (GLMsingle's method,
:func:`~bids_encoder.decoding.single_trial.estimator.fit_single_trials`) → BIDS-Derivatives and a report section.

Maps (``…_model-singletrial_stat-<s>_statmap``): ``beta`` (4-D, :mod:`.outputs`), ``hrfIndex`` (the library
entry), ``hrfTimeToPeak`` and ``hrfFWHM`` (s), ``ridgeFraction``, ``betaScale`` and ``betaOffset`` (the affine
map of the ridge betas onto the least-squares betas), ``reliability`` (split-half correlation of repeated
conditions, the final betas) and ``reliability<Stage>`` after every earlier stage, ``noisePool``, ``rsquared``
(the single-trial model's R² on the variance the nuisance and noise components leave) and ``cvrsquared`` (the
on/off model's leave-one-run-out cvR² with the voxel's HRF and the noise components). The sidecars hold every
choice (``SingleTrial``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from ...bids.derivatives import write_dataset_description
from ...bids.inputs import assemble_inputs
from ...decoding.single_trial.estimator import fit_single_trials
from ...report.participant import fit_section
from ..common.interrupts import raise_if_interrupted
from ..common.naming import fit_entities, fit_sources
from ..common.records import PROGRESS
from ..fits.outputs import write_fit
from ..fits.results import FitResult, MapSpec
from .outputs import write_betas
from .trials import read_trials

logger = logging.getLogger(__name__)

__all__ = ["fit_single_trial_group", "single_trial_result"]

MODEL_CLASS = "single-trial GLM, GLMsingle's method (bids_encoder.decoding.single_trial.fit_single_trials)"


def _estimator_options(options):
    stages = set(options.single_trial_stages)
    return {"hrf": "library" if "hrf" in stages else "canonical", "denoise": "denoise" in stages,
            "ridge": "ridge" in stages, "scaling": None if options.signal_scaling == "none" else "psc",
            "memory_limit": options.memory_limit}


def fit_single_trial_group(runs, output_dir, options, strategy, kind, bids_dir, roots, name, warnings, writing,
                           confound_settings, summary_rows):
    """Fit, write and report one single-trial fit (the participant level's ``_fit`` for ``--model singletrial``);
    returns the paths written, the R² sidecar (the fit's marker) last. ``confound_settings`` and ``summary_rows``:
    the participant level's own (its sidecar and report rows, shared with the other models)."""
    started = time.perf_counter()
    timings = {}
    PROGRESS.info("%s: single-trial betas of %d run(s), stages %s", name, len(runs),
                  "+".join(options.single_trial_stages) or "none")
    start = time.perf_counter()
    inputs = assemble_inputs(runs, "glm", hrf="canonical", strategy=strategy,
                             confound_parameters=options.confounds_parameters, smoothing_fwhm=options.smoothing_fwhm,
                             kind=kind, condition_column=options.condition_column)
    table, trials, frame_times, nuisance = read_trials(inputs, options.condition_column, options.single_trial_types,
                                                       options.repeat_column)
    confounds = inputs.confounds if nuisance is None else pd.concat([nuisance, inputs.confounds], axis=1)
    timings["load"] = time.perf_counter() - start
    logger.info("%s: %d voxels × %d volumes, %d trials, %d confounds", name, inputs.data.shape[1],
                inputs.data.shape[0], len(trials), confounds.shape[1])
    start = time.perf_counter()
    estimate = fit_single_trials(inputs.data.to_numpy(), frame_times, trials, confounds.to_numpy(),
                                 condition_column="repeat", **_estimator_options(options))
    timings.update({f"fit_{key}": value for key, value in estimate.timings.items()})
    timings["fit"] = time.perf_counter() - start
    result = single_trial_result(estimate, inputs, confounds, options)
    settings = {"confounds": confound_settings(strategy, options.confounds_parameters, inputs),
                "device": options.device}
    settings["confounds"]["NuisanceEvents"] = [] if nuisance is None else [str(c) for c in nuisance.columns]
    fitted = np.isfinite(result.r2)
    extra = {"Processing": {"VoxelsFitted": int(fitted.sum()), "VoxelsTotal": int(fitted.size),
                            "FractionConverged": 1.0 if fitted.any() else None,
                            "Volumes": [int(n) for n in inputs.n_volumes], "SmoothingFWHM": options.smoothing_fwhm,
                            "Seed": options.seed, "Trials": len(trials),
                            "WallTime": {k: round(v, 3) for k, v in timings.items()}},
             "SingleTrial": result.fitter}
    raise_if_interrupted()
    write_dataset_description(output_dir, roots)  # nothing is written before the fit is done
    writing.append(name)
    start = time.perf_counter()
    entities = fit_entities(runs, options)
    written, finish = write_fit(output_dir, inputs, result, "singletrial", settings, roots, extra=extra,
                                entities=entities)
    sidecar = {"Description": "Single-trial response amplitudes (betas): one volume per trial, in the order of the "
                              "trials TSV; the peak response to a trial of the reference duration",
               "Units": "percent signal change" if options.signal_scaling == "psc" else "BOLD units",
               "Sources": fit_sources(inputs, roots), "Model": {"Name": "singletrial", "Class": MODEL_CLASS},
               "HRF": result.hrf, "SingleTrial": result.fitter, "Confounds": settings["confounds"],
               "Runs": [run.run for run in inputs.runs], "RepetitionTime": inputs.tr, **extra}
    from ..._version import __version__

    sidecar["SoftwareVersion"] = __version__
    written += write_betas(output_dir, entities, inputs.writer, estimate.betas,
                           table.assign(estimated=estimate.trials["estimated"].to_numpy()), sidecar)
    timings["write"] = time.perf_counter() - start
    logger.info("%s: %d trials, %d noise component(s), median reliability %s; total %.1f s", name, len(trials),
                estimate.n_components, _medians_text(result.fitter.get("MedianReliability")),
                time.perf_counter() - started)
    if options.report:
        rows = summary_rows(runs, inputs, result, settings, options, timings, fitted)
        rows[9:9] = _single_trial_rows(estimate, result)
        fit_section(output_dir, runs[0].subject, name, inputs, result, {
            "model": "singletrial", "space": entities.get("space", ""), "warnings": list(warnings),
            "summary": rows,
            "convergence": [("Median R²", f"{np.nanmedian(result.r2):.4f}" if fitted.any() else "n/a"),
                            ("Median cvR² (on/off model)", f"{result.cv['MedianCVRSquared']:.4f}"
                             if result.cv["MedianCVRSquared"] is not None else "n/a"),
                            ("Median reliability by stage", _medians_text(result.fitter.get("MedianReliability")))],
            "decoding": None})
    raise_if_interrupted()
    written.append(finish())
    return written


def _medians_text(medians):
    if not medians:
        return "n/a (no repeated conditions)"
    return ", ".join(f"{stage} {value:.3f}" for stage, value in medians.items())


def _single_trial_rows(estimate, result):
    fitter = result.fitter
    rows = [("Single-trial stages", "+".join(estimate.stages)),
            ("Trials", f"{len(estimate.trials)} ({int(estimate.trials['estimated'].sum())} estimated)"),
            ("Repeated conditions", fitter["Repeats"]),
            ("Noise components", f"{estimate.n_components} per run" + (
                f" ({fitter['Denoise'].get('Selection', fitter['Denoise'].get('Reason', ''))})"
                if fitter.get("Denoise") else " (stage off)")),
            ("Ridge fraction", "stage off" if fitter.get("Ridge") is None else
             f"median {np.nanmedian(estimate.fraction):.2f} ({fitter['Ridge']['Selection']})")]
    medians = fitter.get("MedianReliability")
    if medians:
        rows.append(("Median reliability after each stage", _medians_text(medians)
                     + f" (split-half, over the {fitter['RespondingVoxels']} voxels whose on/off model predicts "
                       "held-out data beyond chance)"))
    return rows


def single_trial_result(estimate, inputs, confounds, options):
    """The estimator's maps and choices as a :class:`~bids_encoder.workflows.fits.results.FitResult`."""
    library = estimate.library.parameters
    index = estimate.hrf_index
    chosen = index >= 0
    peak = np.full(index.shape, np.nan, np.float32)
    fwhm = np.full(index.shape, np.nan, np.float32)
    peak[chosen] = library["time_to_peak"].to_numpy()[index[chosen]]
    fwhm[chosen] = library["fwhm"].to_numpy()[index[chosen]]
    hrf_index = np.where(chosen, index, np.nan).astype(np.float32)
    maps = [MapSpec("hrfIndex", hrf_index, "Index of the voxel's HRF in the library (HRF.Library.Entries)", "index",
                    in_report=False),
            MapSpec("hrfTimeToPeak", peak, "Time to peak of the voxel's HRF (library entry)", "s"),
            MapSpec("hrfFWHM", fwhm, "Full width at half maximum of the voxel's HRF (library entry)", "s",
                    in_report=False)]
    if "ridge" in estimate.stages:
        maps += [MapSpec("ridgeFraction", estimate.fraction, "Fraction of the least-squares norm kept by the "
                         "voxel's ridge regression (chosen by cross-validation)", "fraction"),
                 MapSpec("betaScale", estimate.scale, "Scale of the affine map of the ridge betas onto the "
                         "least-squares betas", "ratio", in_report=False),
                 MapSpec("betaOffset", estimate.offset, "Offset of the affine map of the ridge betas onto the "
                         "least-squares betas", "percent signal change", in_report=False)]
    if estimate.stage_reliability:
        maps.append(MapSpec("reliability", estimate.reliability, "Split-half reliability of the betas: Pearson "
                            "correlation, across repeated conditions, of the mean betas of their odd and even "
                            "occurrences", "correlation"))
        for stage, values in estimate.stage_reliability.items():
            if stage != estimate.stages[-1]:
                maps.append(MapSpec(f"reliability_{stage}", values, f"Split-half reliability after the {stage} "
                                    "stage (least squares; see reliability)", "correlation", in_report=False))
    maps.append(MapSpec("noisePool", estimate.noise_pool.astype(np.float32), "1: in the noise pool (on/off "
                        "cvR² <= 0 for every HRF), 0: not", "boolean", in_report=False))
    fitted = estimate.fitted
    cvr2 = np.where(fitted, estimate.cvr2, np.nan).astype(np.float32)
    finite = cvr2[np.isfinite(cvr2)]
    runs = [run.run for run in inputs.runs]
    cv = {"cvr2": cvr2, "Scheme": "loro" if len(runs) > 1 else "split-half",
          "Model": "the on/off model (all trials one regressor) with the voxel's HRF and the noise components; "
                   "each held-out run's nuisance fitted on itself",
          "Folds": [{"HeldOut": f"run {run}"} for run in runs] if len(runs) > 1 else
          [{"HeldOut": "first half"}, {"HeldOut": "second half"}],
          "MedianCVRSquared": float(np.median(finite)) if finite.size else None,
          "FractionPositive": float(np.mean(finite > 0)) if finite.size else None, "WallTime": 0.0}
    table = estimate.stage_table()
    medians = {stage: round(float(v), 4) for stage, v in table["median_reliability"].items()} \
        if not table.empty else None
    fitter = {"Estimator": "bids_encoder.decoding.single_trial.fit_single_trials",
              "Stages": list(estimate.stages), "NoiseComponents": int(estimate.n_components),
              "Denoise": estimate.choices.get("Denoise"), "Ridge": estimate.choices.get("Ridge"),
              "Repeats": estimate.choices.get("Repeats"), "Scaling": estimate.choices.get("Scaling"),
              "PolynomialDegree": estimate.choices.get("PolynomialDegree"),
              "RepeatColumn": options.repeat_column or options.condition_column,
              "SingleTrialTypes": list(options.single_trial_types) or "every event with a "
                                                                      f"{options.condition_column}",
              "MedianReliability": medians, "RespondingVoxels": int(estimate.responding.sum()),
              "RespondingThreshold": round(estimate.responding_threshold, 6)}
    hrf = {"Choice": "library" if "hrf" in estimate.stages else "canonical",
           "Model": "SPM double gamma: " + ("one library entry per voxel" if "hrf" in estimate.stages
                                            else "canonical"),
           "Fitted": False, "RepetitionTime": inputs.tr, **estimate.choices["HRF"],
           "Counts": {str(k): int(v) for k, v in zip(*np.unique(index[chosen], return_counts=True), strict=True)}}
    on_off = pd.DataFrame({"allTrials": _on_off_regressor(estimate, inputs)}, index=inputs.data.index)
    design = pd.concat([on_off, confounds], axis=1)
    r2 = np.where(fitted, estimate.r2, np.nan).astype(np.float32)
    return FitResult(maps=maps, r2=r2, model_class=MODEL_CLASS, hrf=hrf, fitter=fitter, design=design, cv=cv)


def _on_off_regressor(estimate, inputs):
    """All trials summed, convolved with the canonical HRF (the design TSV's model regressor)."""
    from ...decoding import trial_regressors

    values = np.zeros(len(inputs.data))
    runs = inputs.data.index.get_level_values("run").to_numpy()
    for number, run in enumerate(inputs.runs):
        rows = estimate.trials["run"].to_numpy() == number
        if not rows.any():
            continue
        times = run.start_time + np.arange(int((runs == number + 1).sum())) * inputs.tr
        values[runs == number + 1] = trial_regressors(estimate.trials["onset"][rows],
                                                      estimate.trials["duration"][rows], times).sum(axis=1)
    return values
