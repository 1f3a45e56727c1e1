"""The plan of the participant level: the subjects, the runs of each fit (one per session × task, runs fitted
jointly; resting-state runs left out), all checked before anything is fitted, and what ``--dry-run`` lists."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ...bids.confounds import parse_strategy
from ...bids.derivatives import NameTooLongError, condition_labels
from ...bids.images import run_volumes, space_kind
from ...bids.layout import InputError, find_runs, load_layout
from ..common.naming import check_fit_names, fit_marker, fit_name, output_entities
from ..fits.glm_inference import EFFECTS_OF_INTEREST
from ..fits.kinds import MODEL_KINDS
from ..stats_models.participant_nodes import select_model_inputs
from .options import check_model_options

logger = logging.getLogger(__name__)


def dry_run_lines(plan, output_dir, options, fits=None):
    """What ``--dry-run`` prints: one line per fit (runs, volumes, model, outputs), and whether it would be
    skipped as finished. ``fits``: (runs, entities, model text) of each fit when not one per group of runs and
    model (a model file's run-node outputs)."""
    if fits is None:
        fits = [(runs, output_entities(runs, model), model) for groups in plan.values() for runs in groups
                for model in options.model_list]
    lines = []
    for runs, entities, model in fits:
        name = fit_name(entities, output_dir)
        marker = fit_marker(output_dir, entities)
        volumes = "+".join(str(run_volumes(run)) for run in runs)
        state = ("finished: skipped (--overwrite refits it)" if marker.exists() and not options.overwrite
                 else "to fit")
        glm = str(model).startswith("glm") or options.stats_model is not None
        runs_fitted = (", each run fitted on its own (fixed effects, "
                       f"{options.run_weights or 'equal'} weights)" if glm and options.run_model == "fixed-effects"
                       and options.stats_model is None and len(runs) > 1 else "")
        lines.append(f"{name}: {len(runs)} run(s) ({', '.join(run.bold.name for run in runs)}), {volumes} "
                     f"volumes, model {model}, HRF {options.hrf}{runs_fitted}, {cv_text(options.cv, len(runs))} → "
                     f"{marker.parent}/{name}_* ({state})")
    return lines


def cv_text(cv, n_runs):
    """What ``--cv`` runs on a fit of ``n_runs`` runs, for --dry-run."""
    scheme = ("loro" if n_runs >= 2 else "split-half") if cv == "auto" else cv
    return {"loro": f"cross-validation loro (leave one run out: {n_runs} folds)",
            "split-half": "cross-validation split-half (two contiguous halves of every run: 2 folds)",
            "none": "no cross-validation (--cv none)"}.get(scheme, f"cross-validation {scheme}")


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


#: the longest map names of a GLM fit without a contrast (the contrasts' are checked by their labels)
GLM_STATS = ("hrfDispersion", "cvrsquared")


def check_names(output_dir, entities, kind, contrasts=(), glm=True):
    """Exit 73 (before anything is fitted) when a fit's output names or paths would be too long for the file
    system of OUTPUT_DIR; ``contrasts``: its contrast names (conditions' labels, --contrast and --f-contrast)."""
    try:
        if glm:
            check_fit_names(output_dir, entities, kind, contrasts, GLM_STATS)
        else:
            check_fit_names(output_dir, entities, kind)
    except NameTooLongError as error:
        raise InputError(str(error), exit_code=73) from error


def _planned_contrasts(runs, options):
    """The contrast names a GLM fit of ``runs`` will have: its conditions' labels (read from the events files;
    unreadable ones are left to the fit, which reports them), the --contrast and --f-contrast names."""
    conditions = set()
    for run in runs:
        if run.events is None:
            continue
        try:
            values = pd.read_csv(run.events, sep="\t", dtype=str, na_values=["n/a"],
                                 usecols=lambda column: column == options.condition_column)
        except (OSError, ValueError):
            continue
        if options.condition_column in values:
            conditions |= set(values[options.condition_column].dropna().str.strip())
    labels = list(condition_labels(sorted(c for c in conditions if c), warn=False).values())
    return labels + [name for name, _ in (*options.contrasts, *options.f_contrasts)] + [EFFECTS_OF_INTEREST]


def _check_plan_names(fits, output_dir, options, kind):
    for groups in fits.values():
        for runs in groups:
            if options.stats_model is not None:  # its run nodes' names are checked when each is fitted
                check_names(output_dir, output_entities(runs, options.stats_model.label), kind, glm=True)
                continue
            for model in options.model_list:
                glm = MODEL_KINDS[model] == "glm"
                check_names(output_dir, output_entities(runs, model), kind,
                            _planned_contrasts(runs, options) if glm else (), glm=glm)


def _plan(bids_dir, options, output_dir=None):
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
    if output_dir is not None:
        _check_plan_names(fits, output_dir, options, kind)
    return fits, {"raw": bids_dir, "fmriprep": derivatives}, layout
