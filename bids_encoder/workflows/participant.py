"""Participant level: for each subject, find its runs, assemble inputs, fit, write BIDS-Derivatives.

One fit per (session, task) of a subject: its runs are fitted jointly (see :mod:`bids_encoder.bids.inputs`).
A fit whose R² sidecar exists is finished and skipped unless ``overwrite``. A subject with several finished
sessions then gets its fixed effects over sessions (:mod:`.subject_fixed_effects`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bids.confounds import parse_strategy
from ..bids.derivatives import write_dataset_description
from ..bids.images import space_kind
from ..bids.inputs import assemble_inputs
from ..bids.layout import InputError, find_runs, load_layout
from ..report.participant import fit_section, write_participant_report
from .comparison import write_model_comparison
from .crossval import CrossValidationError, fit_with_cv
from .decode import decode_inputs
from .decode_outputs import write_decoding
from .fit import MODEL_KINDS, MODELS
from .inference import add_inference, contrast_specs, scale_inputs
from .interrupts import raise_if_interrupted
from .outputs import fit_marker, fit_name, fit_sources, output_entities, remove_fit_outputs, write_fit
from .stats_models import design_contrast_specs, fit_stats_model, select_model_inputs, stats_model_sidecar
from .subject_fixed_effects import write_subject_fixed_effects
from .summary import PROGRESS, fit_record

logger = logging.getLogger(__name__)

__all__ = ["ParticipantOptions", "plan_fits", "run_participant", "runnable_fits", "select_subjects"]

STIMULUS_PERIODS = (180.0, 360.0)


@dataclass
class ParticipantOptions:
    """Options of the participant level (the CLI fills them; defaults are the CLI's)."""

    derivatives: Path | None = None
    participant_label: tuple = ()
    session_label: tuple = ()
    task: str | None = None
    run: tuple = ()
    filters: dict = field(default_factory=dict)
    space: str = "MNI152NLin2009cAsym"
    res: str | None = None
    model: str = "glm"
    hrf: str = "canonical"
    cv: str = "auto"
    confounds: str = "motion,high_pass,wm_csf"
    confounds_parameters: dict = field(default_factory=dict)
    noise_model: str = "ssq"
    max_iterations: int | None = None
    alpha: float = 0.0
    smoothing_fwhm: float | None = None
    work_dir: Path | None = None
    memory_limit: int = 4_000_000_000
    overwrite: bool = False
    progressbar: bool = True
    device: str = "CPU"
    seed: int | None = None
    report: bool = True
    condition_column: str = "trial_type"  # the events.tsv column naming the GLM's conditions
    models: tuple = ()  # several models on the same inputs (model comparison); () means (model,)
    stimulus_column: str | None = None  # 1-D tuning models: the events.tsv column with each event's value
    stimulus_period: float | None = None  # vonmises1d: the period of the values, degrees
    nuisance_trial_types: tuple = ()  # 1-D tuning models: trial types entered as nuisance regressors
    positive_amplitude: bool = False  # pRF and tuning models: amplitudes constrained positive
    decode: bool = False  # 1-D tuning models: leave-one-run-out decoding of the stimulus (workflows.decode)
    decode_voxels: int = 200  # voxels per decoding fold
    decode_betas: str = "lsa"  # single-trial responses: 'lsa' or 'lss'

    @property
    def model_list(self):
        """The models to fit, in order, without repeats."""
        return list(dict.fromkeys(self.models or (self.model,)))
    contrasts: tuple = ()  # GLM: (name, expression) t contrasts beside one per condition
    f_contrasts: tuple = ()  # GLM: (name, "a, b, …") F contrasts beside effectsOfInterest
    glm_noise_model: str = "ar1"  # GLM inference: ar1 or ols
    signal_scaling: str = "psc"  # GLM: psc (percent signal change per run) or none
    stats_model: object = None  # a bids.stats_models.StatsModel (--model-file): its nodes replace the GLM's design


def select_subjects(layout, labels):
    """The subjects to process: ``labels`` (checked against the fMRIPrep outputs), else every subject there."""
    available = sorted(layout.get_subjects(scope="derivatives"))
    if not labels:
        if not available:
            raise InputError("The fMRIPrep derivatives hold no subject", exit_code=18)
        return available
    missing = [label for label in labels if label not in available]
    if missing:
        raise InputError(f"Participant(s) {', '.join('sub-' + m for m in missing)} not found in the fMRIPrep "
                         f"derivatives (available: {', '.join(available) or 'none'})", exit_code=18)
    return list(dict.fromkeys(labels))


def _groups(runs):
    groups = {}
    for run in runs:
        groups.setdefault((run.session, run.task), []).append(run)
    return list(groups.values())


def runnable_fits(plan):
    """{subject: runs} → {subject: [runs of one fit, …]}, leaving out — with a warning — the fits none of whose runs
    has an events.tsv (resting state, or a task whose events are not shared); InputError (66) when none is left.

    A fit with events for some of its runs only still fails when those without are read (66, naming the run).
    """
    fits, skipped = {}, []
    for subject, runs in plan.items():
        fits[subject] = []
        for group in _groups(runs):
            if all(run.events is None for run in group):
                skipped.append(group)
            else:
                fits[subject].append(group)
    names = [_group_label(group) for group in skipped]
    if not any(fits.values()):
        raise InputError(f"No events.tsv for any run of {', '.join(names)}: nothing to fit (the models need events; "
                         "choose a task that has them with --task)", exit_code=66)
    for name in names:
        logger.warning("%s: no events.tsv for any run; skipped (the models need events)", name)
    return {subject: groups for subject, groups in fits.items() if groups}


def _group_label(runs):
    """'sub-01_ses-a_task-rest' for messages."""
    return "_".join(f"{key}-{value}" for key, value in (("sub", runs[0].subject), ("ses", runs[0].session),
                                                         ("task", runs[0].task)) if value is not None)


def _confound_settings(strategy, parameters, inputs):
    return {"Strategy": list(strategy), "Parameters": parameters,
            "Interface": "nilearn.interfaces.fmriprep.load_confounds",
            "NumberOfRegressors": int(inputs.confounds.shape[1]), "VolumesCensored": int(inputs.n_censored),
            "PerRun": inputs.confounds_per_run,
            "Handling": "block-diagonal per run, fitted with the model; censored volumes as spike regressors"}


def check_model_options(options):
    """Usage errors (64) of --model and the options of the tuning models."""
    models = options.model_list
    unknown = [model for model in models if model not in MODELS]
    if unknown:
        raise InputError(f"Unknown model {', '.join(map(repr, unknown))}; choose from {', '.join(MODELS)}",
                         exit_code=64)
    tuning = [model for model in models if MODEL_KINDS[model] == "tuning"]
    if tuning and not options.stimulus_column:
        raise InputError(f"--model {', '.join(tuning)} needs --stimulus-column (the events.tsv column with each "
                         "event's stimulus value)", exit_code=64)
    if "vonmises1d" in models and options.stimulus_period not in STIMULUS_PERIODS:
        raise InputError("--model vonmises1d needs --stimulus-period 180 (orientation) or 360 (direction, "
                         "degrees)", exit_code=64)
    if options.nuisance_trial_types and not tuning:
        raise InputError("--nuisance-trial-type adds nuisance regressors to the 1-D tuning models "
                         "(gauss1d, loggauss1d, vonmises1d); the GLM models every trial type already", exit_code=64)
    if len(models) > 1 and options.cv == "none":
        raise InputError("Several --model values are compared by cross-validated R²: they cannot run with "
                         "--cv none", exit_code=64)
    if options.decode and len(tuning) < len(models):
        raise InputError(f"--decode decodes the 1-D tuning models (gauss1d, loggauss1d, vonmises1d), not --model "
                         f"{', '.join(m for m in models if m not in tuning)}", exit_code=64)


def plan_fits(bids_dir, options):
    """The fits of the selection, checked: ({subject: [runs of one fit, …]}, roots of the Sources URIs).

    Raises InputError with a BIDS-Apps exit code on bad input; reads no image data and writes nothing.
    """
    fits, roots, _ = _plan(bids_dir, options)
    return fits, roots


def _plan(bids_dir, options):
    bids_dir = Path(bids_dir).resolve()
    check_model_options(options)
    parse_strategy(options.confounds)  # a bad strategy fails before any work
    kind = space_kind(options.space)
    derivatives = Path(options.derivatives).resolve() if options.derivatives else bids_dir / "derivatives" / "fmriprep"
    database_dir = None if options.work_dir is None else Path(options.work_dir) / "pybids"
    layout = load_layout(bids_dir, derivatives, database_dir=database_dir)
    subjects = select_subjects(layout, options.participant_label)
    plan = {}
    for subject in subjects:  # check every subject's inputs before the first fit
        filters = dict(options.filters)
        if options.session_label:
            filters["session"] = list(options.session_label)
        if options.run:
            filters["run"] = [int(r) for r in options.run]
        plan[subject] = find_runs(layout, subject, task=options.task, space=options.space, res=options.res,
                                  filters=filters, kind=kind)
    if options.stats_model is not None:
        plan = select_model_inputs(plan, options.stats_model)
    fits = runnable_fits(plan)
    if options.decode:  # leave one run out: every fit needs two runs
        single = [_group_label(group) for groups in fits.values() for group in groups if len(group) < 2]
        if single:
            raise InputError(f"--decode needs at least two runs per fit (each run is decoded by a model trained on "
                             f"the others); {', '.join(single)} has one", exit_code=65)
    return fits, {"raw": bids_dir, "fmriprep": derivatives}, layout


def run_participant(bids_dir, output_dir, options, records=None):
    """Fit every selected subject; returns {subject: [written paths]}. ``records``, a list, receives one
    :class:`~bids_encoder.workflows.summary.FitRecord` per fit (done or skipped) for the end-of-run summary.

    Raises InputError with a BIDS-Apps exit code on bad input.
    """
    bids_dir, output_dir = Path(bids_dir).resolve(), Path(output_dir).resolve()
    plan, roots, layout = _plan(bids_dir, options)
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


def fit_entities(runs, options, design=None):
    """Entities of a fit's outputs: its runs' common ones and the model; a model file's name as the model, and the
    run of a run-node output that is one run."""
    if design is None:
        return output_entities(runs, options.model)
    entities = output_entities(runs, options.stats_model.label)
    if design.one_run:
        entities["run"] = runs[0].run
    return entities


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
        try:
            add_inference(inputs, result, specs, noise_model=options.glm_noise_model,
                          scaling=options.signal_scaling, memory_limit=options.memory_limit)
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
            "summary": _summary_rows(runs, inputs, result, settings, options, timings, fitted),
            "convergence": [("Iterations", result.fitter.get("ParameterFitter", {}).get("Iterations", "n/a")),
                            ("Stopping rule met", result.fitter.get("ParameterFitter", {}).get("Converged", "n/a")),
                            ("Fraction of voxels converged", "n/a" if converged is None else f"{converged:.3f}"),
                            ("Median R²", f"{median:.4f}"),
                            ("Median cvR²", "n/a" if median_cv is None else f"{median_cv:.4f}"),
                            ("Fraction of voxels with cvR² > 0", "n/a" if cv.get("FractionPositive") is None
                             else f"{cv['FractionPositive']:.3f}")], "decoding": decoding})
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
                         seed=options.seed, betas=options.decode_betas)


def _model_arguments(options):
    """The fit options of the pRF and tuning models (the GLM takes none)."""
    if MODEL_KINDS[options.model] == "glm":
        return {}
    arguments = {"positive_amplitude": options.positive_amplitude}
    if MODEL_KINDS[options.model] == "tuning":
        arguments["stimulus_period"] = options.stimulus_period
    return arguments


def _summary_rows(runs, inputs, result, settings, options, timings, fitted):
    confounds = settings["confounds"]
    return [
        ("Runs", ", ".join(run.label for run in runs)),
        ("BOLD files", ", ".join(Path(p).name for run in runs for p in ([*run.surfaces.values()] or [run.bold]))),
        ("Repetition time", f"{inputs.tr:g} s"),
        ("Volumes per run", " + ".join(map(str, inputs.n_volumes))),
        ("Space", runs[0].space + (f" (res-{runs[0].entities['res']})" if runs[0].entities.get("res") else "")),
        ("Voxels fitted / total", f"{int(fitted.sum())} / {fitted.size}"),
        ("Confounds", f"{', '.join(confounds['Strategy']) or 'none'}: {confounds['NumberOfRegressors']} regressors, "
                      f"{confounds['VolumesCensored']} censored volumes"),
        ("Model", f"{options.model} ({result.model_class})"),
        ("HRF", _hrf_summary(result.hrf)),
        ("Cross-validation", _cv_summary(result.cv)),
        *([("Inference", f"{result.inference['NoiseModel']} noise model, {result.inference['DegreesOfFreedom']:g} "
                         f"degrees of freedom, signal scaling {result.inference['SignalScaling']}, median AR(1) "
                         f"{result.inference['MedianAR1']}; contrasts {', '.join(result.inference['Contrasts'])}")]
          if result.inference else []),
        ("Fitter", result.fitter),  # a dict: the report shows one row per setting
        ("Device", settings.get("device")),
        ("Wall time per stage", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())),
    ]


def _hrf_summary(hrf):
    text = f"{hrf['Choice']}: {hrf['Model']}" + (" — fitted per voxel" if hrf.get("Fitted") else "")
    if hrf.get("FractionAtBound"):
        text += "; at a bound: " + ", ".join(f"{k} {v:.0%}" for k, v in hrf["FractionAtBound"].items()
                                           if v is not None)
    if hrf.get("Auto"):
        medians = hrf["Auto"]["MedianCVRSquared"]
        text += ("; chosen by --hrf auto (median cvR² " + ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in medians.items()) + ")")
    return text


def _cv_summary(cv):
    if cv is None:
        return "none (--cv none)"
    folds = "; ".join(f"{fold['HeldOut']}" for fold in cv["Folds"])
    median = "n/a" if cv["MedianCVRSquared"] is None else f"{cv['MedianCVRSquared']:.4f}"
    return f"{cv['Scheme']} ({len(cv['Folds'])} folds: {folds}); median cvR² {median}; {cv['WallTime']:.1f} s"
