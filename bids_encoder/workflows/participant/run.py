"""Participant level: for each subject, find its runs, assemble inputs, fit, write BIDS-Derivatives.

One fit per (session, task) of a subject: its runs are fitted jointly (see :mod:`bids_encoder.bids.inputs`).
A fit whose R² sidecar exists is finished and skipped unless ``overwrite``. A subject with several finished
sessions then gets its fixed effects over sessions (:mod:`bids_encoder.workflows.sessions.fixed_effects`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path

import numpy as np

from ...bids.confounds import parse_strategy
from ...bids.derivatives import write_dataset_description
from ...bids.images import space_kind
from ...bids.inputs import assemble_inputs
from ...bids.layout import InputError
from ...report.participant import fit_section, write_participant_report
from ..common.interrupts import raise_if_interrupted
from ..common.naming import (
    fit_entities,
    fit_marker,
    fit_name,
    fit_sources,
    output_entities,
    remove_fit_outputs,
)
from ..common.records import PROGRESS, fit_record
from ..comparison.maps import write_model_comparison
from ..decoding.decode import decode_inputs
from ..decoding.outputs import write_decoding
from ..fits.crossval import CrossValidationError, fit_with_cv
from ..fits.glm_inference import add_inference, contrast_specs, scale_inputs
from ..fits.glm_runs import add_fixed_effects_inference
from ..fits.kinds import MODEL_KINDS
from ..fits.outputs import write_fit
from ..sessions.fixed_effects import write_subject_fixed_effects
from ..stats_models.participant_nodes import (
    design_contrast_specs,
    fit_stats_model,
    stats_model_sidecar,
)
from .plan import _plan, check_names
from .summary import _confound_settings, _summary_rows

logger = logging.getLogger(__name__)

__all__ = ["run_participant"]


def run_participant(bids_dir, output_dir, options, records=None):
    """Fit every selected subject; returns {subject: [written paths]}. ``records``, a list, receives one
    :class:`~bids_encoder.workflows.common.records.FitRecord` per fit (done or skipped) for the end-of-run summary.

    Raises InputError with a BIDS-Apps exit code on bad input.
    """
    bids_dir, output_dir = Path(bids_dir).resolve(), Path(output_dir).resolve()
    plan, roots, layout = _plan(bids_dir, options, output_dir)
    strategy, kind = parse_strategy(options.confounds), space_kind(options.space)
    records = [] if records is None else records
    written = {}
    models = options.model_list
    graph = None if options.stats_model is None else options.stats_model.graph(layout)
    for subject, groups in plan.items():
        written[subject] = []
        report = output_dir / f"sub-{subject}.html" if options.report else None
        if graph is not None:
            fit = functools.partial(_fit_group, output_dir=output_dir, options=options, strategy=strategy, kind=kind,
                                    bids_dir=bids_dir, roots=roots)
            written[subject] += fit_stats_model(graph, options.stats_model, groups, output_dir, fit, records,
                                                report, kind, options)
            groups = []
        for group in groups:
            cache = {}  # inputs per kind of paradigm, shared by the models of this fit
            for model in models:
                raise_if_interrupted()
                started = time.perf_counter()
                model_options = dataclasses.replace(options, model=model, models=())
                paths = _fit_group(group, output_dir, model_options, strategy, kind, bids_dir, roots, cache)
                entities = output_entities(group, model)
                records.append(fit_record(fit_name(entities, output_dir), fit_marker(output_dir, entities),
                                          "done" if paths else "skipped", time.perf_counter() - started, report))
                written[subject] += paths
            if len(models) > 1:
                raise_if_interrupted()
                written[subject] += write_model_comparison(output_dir, group, models, kind)
        raise_if_interrupted()  # every finished session on disk, not only this job's: ses absent
        written[subject] += write_subject_fixed_effects(output_dir, subject)
        if options.report:
            raise_if_interrupted()
            start = time.perf_counter()
            path = write_participant_report(output_dir, subject)
            written[subject].append(path)
            logger.info("Report %s written in %.1f s", path.name, time.perf_counter() - start)
    return written


class _Collect(logging.Handler):
    """Keeps the warnings logged during one fit, for its report."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(f"{record.name}: {record.getMessage()}")


def _fit_group(runs, output_dir, options, strategy, kind, bids_dir, roots, cache=None, design=None):
    entities = fit_entities(runs, options, design)
    marker = fit_marker(output_dir, entities)
    name = fit_name(entities, output_dir)
    if marker.exists() and not options.overwrite:
        logger.info("%s is finished (%s exists): skipped; --overwrite refits it", name, marker.name)
        return []
    collected = _Collect()
    logging.getLogger().addHandler(collected)
    writing = []
    try:
        return _fit(runs, output_dir, options, strategy, kind, bids_dir, roots, name, collected.messages, writing,
                    {} if cache is None else cache, design)
    except BaseException:  # an error, Ctrl-C or SIGTERM while writing: remove what this fit wrote so far
        if writing:
            remove_fit_outputs(marker.parent, name, marker)
            remove_fit_outputs(output_dir / f"sub-{runs[0].subject}" / "figures", name)
        raise
    finally:
        logging.getLogger().removeHandler(collected)


def _fit(runs, output_dir, options, strategy, kind, bids_dir, roots, name, warnings, writing, cache, design=None):
    if options.model == "singletrial":  # one response per event: its own stage (workflows.single_trial)
        from ..single_trial.run import fit_single_trial_group

        return fit_single_trial_group(runs, output_dir, options, strategy, kind, bids_dir, roots, name, warnings,
                                      writing, _confound_settings, _summary_rows)
    started = time.perf_counter()
    timings = {}
    PROGRESS.info("%s: fitting %d run(s) with model %s, HRF %s", name, len(runs), options.model, options.hrf)
    start = time.perf_counter()
    paradigm_kind = MODEL_KINDS[options.model]
    if (paradigm_kind, options.hrf) not in cache:  # models of the same kind share their inputs
        cache[(paradigm_kind, options.hrf)] = assemble_inputs(
            runs, paradigm_kind, hrf=options.hrf, strategy=strategy, confound_parameters=options.confounds_parameters,
            smoothing_fwhm=options.smoothing_fwhm, stimuli_dir=bids_dir / "stimuli", kind=kind,
            condition_column=options.condition_column, stimulus_column=options.stimulus_column,
            nuisance_trial_types=options.nuisance_trial_types, design=design)
    inputs = cache[(paradigm_kind, options.hrf)]
    specs = None
    if design is not None:  # a model file's contrasts, checked before anything is fitted
        specs = design_contrast_specs(design, options.stats_model, name)
    elif options.model == "glm":  # contrasts checked against the conditions before anything is fitted
        try:
            specs = contrast_specs([str(c) for c in inputs.paradigm.columns], options.contrasts,
                                   options.f_contrasts)
        except ValueError as error:
            raise InputError(f"{name}: {error}", exit_code=64) from error
    check_names(output_dir, fit_entities(runs, options, design), kind,  # the exact names, before the fit
                [spec.name for spec in specs or ()], glm=paradigm_kind == "glm")
    if options.model == "glm":
        inputs = scale_inputs(inputs, options.signal_scaling)
    timings["load"] = time.perf_counter() - start
    logger.info("%s: %d voxels × %d volumes, %d regressors, %d confounds, %d censored volumes (%.1f s)", name,
                inputs.data.shape[1], inputs.data.shape[0], inputs.paradigm.shape[1], inputs.confounds.shape[1],
                inputs.n_censored, timings["load"])
    try:
        result = fit_with_cv(inputs, options.model, hrf=options.hrf, cv=options.cv, alpha=options.alpha,
                             max_iterations=options.max_iterations, noise_model=options.noise_model,
                             memory_limit=options.memory_limit, progressbar=options.progressbar,
                             **_model_arguments(options))
    except CrossValidationError as error:
        raise InputError(f"{name}: {error}", exit_code=64) from error
    if specs is not None and options.alpha == 0:
        per_run = {} if result.run_columns is None else {"run_weights": options.run_weights or "equal"}
        try:
            (add_fixed_effects_inference if per_run else add_inference)(
                inputs, result, specs, noise_model=options.glm_noise_model, scaling=options.signal_scaling,
                memory_limit=options.memory_limit, **per_run)
        except ValueError as error:
            raise InputError(f"{name}: {error}", exit_code=64) from error
    elif specs is not None:
        logger.warning("%s: --alpha %g (ridge): effect maps only, no variance, t, z or p (their inference assumes "
                       "least squares)", name, options.alpha)
    timings.update({f"fit_{key}": value for key, value in result.timings.items()})
    if result.cv is not None:
        timings["cross_validation"] = result.cv["WallTime"]
    decoding = _decode(inputs, options, name) if options.decode else None
    if decoding is not None:
        timings["decoding"] = sum(decoding.timings.values())
    start = time.perf_counter()
    settings = {"confounds": _confound_settings(strategy, options.confounds_parameters, inputs),
                "device": options.device}
    r2 = result.r2
    fitted = np.isfinite(r2)
    if not fitted.any():
        converged = None
    elif result.converged is None:  # closed-form weights
        converged = 1.0
    else:
        converged = float(result.converged[fitted].mean())
    solver = result.fitter.get("ParameterFitter", {})
    if solver.get("Converged") is False:  # said where it is read (console, report warnings), not only a "no"
        logger.warning("%s: Levenberg-Marquardt stopped at its cap of %s iterations before its stopping rule was met "
                       "(%s of the voxels converged); --max-iterations raises the cap", name,
                       solver.get("MaxIterations", solver.get("Iterations")),
                       "n/a" if converged is None else f"{converged:.0%}")
    extra = {"Processing": {
        "VoxelsFitted": int(fitted.sum()), "VoxelsTotal": int(r2.size), "FractionConverged": converged,
        "Volumes": [int(n) for n in inputs.n_volumes], "SmoothingFWHM": options.smoothing_fwhm,
        "Seed": options.seed, "WallTime": {k: round(v, 3) for k, v in timings.items()}}}
    # Nothing is written before the first fit's inputs loaded and its model fitted: bad input leaves OUTPUT_DIR as
    # it was. Concurrent participant jobs write the same description (atomically).
    raise_if_interrupted()
    write_dataset_description(output_dir, roots)
    writing.append(name)  # from here on, a failure removes what this fit wrote
    if design is not None:
        extra["StatsModel"] = stats_model_sidecar(options.stats_model, design)
    written, finish = write_fit(output_dir, inputs, result, options.model, settings, roots, extra=extra,
                                entities=fit_entities(runs, options, design))
    if decoding is not None:
        written += write_decoding(output_dir, output_entities(runs, options.model), decoding, options.model,
                                  fit_sources(inputs, roots), options.decode_betas)
    timings["write"] = time.perf_counter() - start
    # the R² sidecar, written last, has every stage (the others were written with the stages before writing)
    extra["Processing"]["WallTime"]["write"] = round(timings["write"], 3)
    median = float(np.nanmedian(r2)) if fitted.any() else float("nan")
    cv = result.cv or {}
    median_cv = cv.get("MedianCVRSquared")
    logger.info("%s: median R² %.3f, cvR² %s (%s); stages %s; total %.1f s", name, median,
                "n/a" if median_cv is None else f"{median_cv:.3f}", cv.get("Scheme", "no cross-validation"),
                {k: round(v, 2) for k, v in timings.items()}, time.perf_counter() - started)
    if options.report:
        start = time.perf_counter()
        entities = fit_entities(runs, options, design)
        fit_section(output_dir, runs[0].subject, name, inputs, result, {
            "model": entities["model"], "space": entities.get("space", ""), "warnings": list(warnings),
            "signal_scaling": options.signal_scaling if paradigm_kind == "glm" else None,
            "summary": _summary_rows(runs, inputs, result, settings, options, timings, fitted),
            "convergence": [("Iterations", result.fitter.get("ParameterFitter", {}).get("Iterations", "n/a")),
                            ("Stopping rule met", result.fitter.get("ParameterFitter", {}).get("Converged", "n/a")),
                            ("Fraction of voxels converged", "n/a" if converged is None else f"{converged:.3f}"),
                            ("Median R²", f"{median:.4f}"),
                            ("Median cvR²", "n/a" if median_cv is None else f"{median_cv:.4f}"),
                            ("Fraction of voxels with cvR² > 0", "n/a" if cv.get("FractionPositive") is None
                             else f"{cv['FractionPositive']:.3f}")], "decoding": decoding})
        extra["Processing"]["WallTime"]["report"] = round(time.perf_counter() - start, 3)
        logger.info("%s: report figures drawn in %.1f s", name, time.perf_counter() - start)
    raise_if_interrupted()  # a signal lost while writing: the fit must not be marked finished
    written.append(finish())  # the R² sidecar, last: the fit is finished
    return written


def _decode(inputs, options, name):
    """``--decode`` of one fit (before anything is written: its errors leave OUTPUT_DIR as it was)."""
    PROGRESS.info("%s: decoding the stimulus (leave one run out, %d voxels)", name, options.decode_voxels)
    return decode_inputs(inputs, options.model, n_voxels=options.decode_voxels, period=options.stimulus_period,
                         condition_column=options.condition_column, positive_amplitude=options.positive_amplitude,
                         max_iterations=options.max_iterations, memory_limit=options.memory_limit,
                         seed=options.seed, betas=options.decode_betas,
                         single_trial_stages=options.single_trial_stages)


def _model_arguments(options):
    """The fit options of the pRF and tuning models (the GLM takes none)."""
    if MODEL_KINDS[options.model] == "glm":  # a model file's run nodes are one run or joint, as it says
        return {"run_model": "joint" if options.stats_model is not None else options.run_model}
    arguments = {"positive_amplitude": options.positive_amplitude, "min_grid_rsquared": options.min_grid_rsquared}
    if MODEL_KINDS[options.model] == "tuning":
        arguments["stimulus_period"] = options.stimulus_period
    return arguments


