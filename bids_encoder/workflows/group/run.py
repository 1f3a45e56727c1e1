"""Group level: aggregate the participants' maps of every (task, space, model) into group maps and tables.

Every input is checked before the first output is written: missing or unfinished participant fits, spaces that
differ across participants, native spaces without an atlas and groups of fewer than two participants all stop
the run with an :class:`~bids_encoder.bids.layout.InputError` naming what is wrong.

Per participant, maps of several sessions are averaged (circularly for angles) so that each participant counts
once, except the effect and variance maps of t contrasts, which come from its subject-level fixed effects over
sessions (see :mod:`.sessions`, which also writes the paired session differences); ``min_rsquared`` blanks a participant's voxels whose R² is below it (or NaN) in every map of that fit, and
``min_cvrsquared`` those whose cross-validated R² is below it (or NaN); with both, a voxel must pass both.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..._version import __version__
from ...bids.atlas import Atlas, is_native
from ...bids.derivatives import (
    MAX_LABEL,
    MAX_TASK_LABEL,
    NameTooLongError,
    check_names,
    derivative_path,
    map_paths,
    short_label,
)
from ...bids.layout import InputError, load_layout
from ...bids.participant_maps import find_participant_fits, fit_name
from ...report.group import write_group_report
from ..common.interrupts import raise_if_interrupted
from ..comparison.maps import COMPARISON, group_comparison
from ..stats_models.dataset_nodes import run_dataset_nodes, stats_model_fits
from .design import GroupDesign, read_covariates
from .maps import _GroupMaps, _SubjectMaps
from .sessions import (
    check_fixed_effects,
    paired_differences,
    sessions_sidecar,
    split_fixed_effects,
)
from .tables import (
    CIRCULAR_STATS,
    RoiTables,
    write_decoding_accuracy,
    write_participants_summary,
)

logger = logging.getLogger(__name__)

__all__ = ["GroupOptions", "run_group"]

#: participant statistics the group never averages: it aggregates effects (with their variances), never t, z or p
NOT_AGGREGATED = ("variance", "t", "z", "p", "F")


@dataclass
class GroupOptions:
    """Options of the group level (the CLI fills them)."""

    participant_label: tuple = ()
    task: str | None = None
    space: str | None = None  # None: every space found
    model: str | None = None  # None: every model found
    min_rsquared: float | None = None
    min_cvrsquared: float | None = None
    atlas: str | None = None
    atlas_labels: Path | None = None
    work_dir: Path | None = None
    report: bool = True
    group_model: str = "mixed"  # mixed effects where the participants have variance maps, else OLS
    covariates: tuple = ()  # participants.tsv columns, demeaned
    fdr_q: float = 0.05
    cluster_extent: int = 10  # voxels, at one-sided p < 0.001 (volumes)
    stats_model: object = None  # --model-file: a bids.stats_models.StatsModel whose dataset nodes run here
    weight_by_se: bool = False  # pRF/tuning parameters: also their inverse-variance weighted mean (desc-se maps)


def _expected_subjects(bids_dir, tasks, options):
    """{task: subjects that must be in the group}: the labels given, else the raw dataset's subjects with BOLD
    of that task."""
    if options.participant_label:
        return {task: set(options.participant_label) for task in tasks}
    database_dir = None if options.work_dir is None else Path(options.work_dir) / "pybids"
    layout = load_layout(bids_dir, database_dir=database_dir, raw_only=True)
    return {task: set(layout.get_subjects(task=task, suffix="bold")) for task in tasks}


def _check(fits, expected, atlas):
    """Group the fits by key, subject → fits; raise on anything that prevents a sound group result."""
    problems = [f"{fit.label} is unfinished (no R² sidecar)" for fit in fits if not fit.finished]
    if problems:
        raise InputError("Participant outputs are incomplete: " + "; ".join(problems) + " — re-run the "
                         "participant level for them", exit_code=66)
    groups = {}
    for fit in fits:
        groups.setdefault(fit.key, {}).setdefault(fit.subject, []).append(fit)
    by_analysis = {}  # (task, model, …) without space → {space key: subjects}
    for key, subjects in groups.items():
        analysis = tuple(item for item in key if item[0] not in ("space", "res", "den"))
        by_analysis.setdefault(analysis, {})[key] = set(subjects)
    for analysis, spaces in by_analysis.items():
        task = dict(analysis).get("task")
        wanted = expected.get(task, set()) | set().union(*spaces.values())
        label = fit_name(analysis)
        if len(spaces) > 1 and not set.intersection(*spaces.values()):
            where = "; ".join(f"{fit_name(key)}: " + ", ".join(f"sub-{s}" for s in sorted(subjects))
                              for key, subjects in spaces.items())
            raise InputError(f"Participants' outputs for {label} are in different spaces ({where}); run the "
                             "participant level with the same --space for everyone, or pick one with --space",
                             exit_code=65)
        for key, subjects in spaces.items():
            missing = sorted(wanted - subjects)
            if missing:
                raise InputError(f"No finished participant outputs {fit_name(key)} for "
                                 f"{', '.join('sub-' + s for s in missing)}: run the participant level for them, "
                                 "or leave them out with --participant-label", exit_code=66)
    for key, subjects in groups.items():
        space = dict(key).get("space", "")
        if len(subjects) < 2:
            raise InputError(f"{fit_name(key)} has {len(subjects)} participant (sub-{next(iter(subjects))}): a "
                             "group needs at least 2", exit_code=18)
        if is_native(space) and atlas is None:
            raise InputError(f"space-{space} is each participant's own space: its maps cannot be averaged voxel "
                             "by voxel; give --atlas with a per-participant label image ({subject} in its path)",
                             exit_code=64)
        if is_native(space) and not atlas.per_subject:
            raise InputError(f"space-{space} needs one atlas per participant: write {{subject}} in the --atlas "
                             "path where the participant label goes", exit_code=64)
    return groups


def run_group(bids_dir, output_dir, options):
    """Aggregate the participant outputs under ``output_dir``; returns the written paths."""
    bids_dir, output_dir = Path(bids_dir).resolve(), Path(output_dir).resolve()
    atlas = Atlas(options.atlas, options.atlas_labels) if options.atlas else None
    filters = {"task": None if options.task is None else short_label(options.task, MAX_TASK_LABEL),
               "space": options.space, "model": options.model}
    fits = find_participant_fits(output_dir, subjects=options.participant_label or None, filters=filters)
    if not fits:
        chosen = ", ".join(f"{k} {v}" for k, v in filters.items() if v) or "any task, space and model"
        raise InputError(f"No participant outputs under {output_dir} for {chosen}"
                         + (f" and {', '.join('sub-' + s for s in options.participant_label)}"
                            if options.participant_label else ""), exit_code=18)
    single = [fit for fit in fits if dict(fit.key).get("model") == "singletrial"]
    if single:  # one response per trial of each participant: nothing to aggregate across participants
        logger.warning("%d participant fit(s) of --model singletrial left out: single-trial betas belong to each "
                       "participant's own trials (for decoding and RSA); the group level does not aggregate them",
                       len(single))
        fits = [fit for fit in fits if dict(fit.key).get("model") != "singletrial"]
        if not fits:
            raise InputError(f"Only --model singletrial outputs under {output_dir}: the group level aggregates "
                             "maps of the other models, not single-trial betas", exit_code=18)
    fits, made = stats_model_fits(fits)
    modelled = made.pop(options.stats_model.name, []) if options.stats_model is not None else []
    for name in made:
        logger.warning("Participant outputs of the BIDS Stats Model %s are left out: give its file with --model-file "
                       "to run its dataset nodes", name)
    if not fits and not modelled:
        raise InputError(f"No participant outputs under {output_dir} to aggregate but those of the BIDS Stats "
                         f"Model(s) {', '.join(made)}: give the model's file with --model-file", exit_code=18)
    if options.stats_model is not None and not modelled:
        raise InputError(f"No participant outputs of the BIDS Stats Model {options.stats_model.name} under "
                         f"{output_dir}: run the participant level with the same --model-file first", exit_code=66)
    comparisons = {}
    for fit in [fit for fit in fits if dict(fit.key).get("model") == COMPARISON]:
        comparisons.setdefault(fit.key, {}).setdefault(fit.subject, []).append(fit)
    fits, fixed = split_fixed_effects([fit for fit in fits if dict(fit.key).get("model") != COMPARISON])
    expected = _expected_subjects(bids_dir, {dict(fit.key).get("task") for fit in fits}, options)
    groups = _check(fits, expected, atlas) if fits else {}
    check_fixed_effects(groups, fixed)
    covariates = read_covariates(bids_dir, options.covariates)
    designs = {key: GroupDesign(sorted(subjects), covariates, fit_name(key)) for key, subjects in groups.items()}
    for subjects in groups.values() if atlas is not None else []:
        atlas.check(subjects, _kind(subjects))
    _check_names(groups, output_dir, atlas)
    # Everything is written into a private folder that replaces OUTPUT_DIR/group at the end: a failed or
    # interrupted run leaves the previous group results whole, never a mix.
    staging = Path(tempfile.mkdtemp(prefix=".group-", dir=output_dir))
    try:
        written, shown = [], []
        for key, subjects in groups.items():
            written += _aggregate(key, subjects, output_dir, staging, options, atlas, shown, designs[key], fixed)
        for key, subjects in comparisons.items():  # categorical: mode and fractions, never a mean
            if len(subjects) < 2 or is_native(dict(key).get("space", "")):
                logger.warning("%s: %d participant(s)%s: no group model comparison", fit_name(key), len(subjects),
                               " in a native space" if len(subjects) >= 2 else "")
                continue
            written += group_comparison(key, subjects, staging, _common_sidecar(subjects, options))
        if modelled:
            written += run_dataset_nodes(bids_dir, options.stats_model, modelled, staging, output_dir, options,
                                         shown, {"SoftwareVersion": __version__})
        written += write_participants_summary(staging, [fit for fits in groups.values()
                                                         for subject in fits.values() for fit in subject])
        decoding_written, decoding_tables = write_decoding_accuracy(staging, groups, output_dir)
        written += decoding_written
        (staging / "group").chmod(0o755)
        final = output_dir / "group"
        raise_if_interrupted()
        if final.exists():
            os.replace(final, staging / "previous")
        os.replace(staging / "group", final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written = [final / path.relative_to(staging / "group") for path in written]
    logger.info("Group level: %d group(s), %d file(s) written to %s", len(groups), len(written), final)
    if options.report:
        start = time.perf_counter()
        for item in shown:
            item["path"] = ({hemi: final / p.relative_to(staging / "group") for hemi, p in item["path"].items()}
                            if isinstance(item["path"], dict) else final / item["path"].relative_to(staging / "group"))
        written.append(write_group_report(output_dir, shown, tables=decoding_tables, clusters=_clusters(written)))
        logger.info("Report group.html written in %.1f s", time.perf_counter() - start)
    return written




def _check_names(groups, output_dir, atlas):
    """Exit 73 before anything is written when a group output's name or path would be too long for the file
    system (checked with the longest statistic and a description of the longest label)."""
    longest_desc = "x" * MAX_LABEL  # covariates, session pairs and thresholds: desc labels are cut to MAX_LABEL
    for key, subjects in groups.items():
        kind = _kind(subjects)
        paths = []
        for contrast, stat in {item for fits in subjects.values() for fit in fits for item in fit.maps}:
            entities = {**dict(key), "contrast": contrast, "stat": "betweenVariance" if contrast else stat,
                        "desc": longest_desc if contrast else "median"}
            path = map_paths(output_dir, entities, kind)
            paths.append(path["L"] if isinstance(path, dict) else path)
        if atlas is not None:
            paths.append(derivative_path(output_dir, {**dict(key), "atlas": atlas.name, "desc": "participants"},
                                         suffix="rois", extension=".tsv"))
        try:
            check_names(paths, f"group {fit_name(key)}")
        except NameTooLongError as error:
            raise InputError(str(error), exit_code=73) from error


def _clusters(written):
    """(name, table) of every non-empty clusters TSV written, for the report."""
    tables = []
    for path in written:
        if path.name.endswith("_clusters.tsv"):
            table = pd.read_csv(path, sep="\t")
            if len(table):
                tables.append((path.name[: -len("_clusters.tsv")], table))
    return tables


def _kind(subjects):
    first = next(iter(subjects.values()))[0]
    path = first.maps[(None, "rsquared")]
    return "gifti" if isinstance(path, dict) else "cifti" if str(path).endswith(".dscalar.nii") else "volume"


def _aggregate(key, fits_by_subject, output_dir, staging, options, atlas, shown, design, fixed=None):
    """Group maps (template spaces) and ROI tables (with an atlas) of one group key."""
    fixed = {} if fixed is None else fixed
    subjects = {subject: _SubjectMaps(subject, fits, options.min_rsquared, options.min_cvrsquared,
                                      fixed.get((key, subject)) if len(fits) > 1 else None)
                for subject, fits in sorted(fits_by_subject.items())}
    reference = next(iter(subjects.values())).geometry
    native = is_native(dict(key).get("space", ""))
    if not native:
        for subject, maps in subjects.items():
            if not maps.geometry.same_as(reference):
                raise InputError(f"sub-{subject}'s {fit_name(key)} maps are on {maps.geometry.describe()}, "
                                 f"the others' on {reference.describe()}", exit_code=65)
    stat_keys = sorted({stat for fits in fits_by_subject.values() for fit in fits for stat in fit.maps
                        if stat[1] not in NOT_AGGREGATED},
                       key=lambda s: (s[1] == "rsquared", s[1], s[0] or ""))
    first_fit = next(iter(fits_by_subject.values()))[0]
    described = {stat: _participant_description(first_fit, stat) for stat in stat_keys}
    periods = {stat: 360.0 if stat[1] in CIRCULAR_STATS else described[stat].get("CircularPeriod")
               for stat in stat_keys}
    common = _common_sidecar(fits_by_subject, options, fixed)
    group_maps = None if native else _GroupMaps(key, subjects, reference, output_dir, staging, common, shown,
                                                design, options.group_model, options.fdr_q,
                                                options.cluster_extent)
    rois = None if atlas is None else RoiTables(atlas, subjects)
    for stat in stat_keys:  # each participant map is read once, for the group maps and the ROI tables alike
        values = {subject: maps.values(stat, periods[stat]) for subject, maps in subjects.items()}
        errors = None
        if options.weight_by_se:
            errors = {subject: maps.standard_errors(stat) for subject, maps in subjects.items()}
            errors = errors if any(e is not None for e in errors.values()) else None
        if group_maps is not None:
            group_maps.add(stat, values, described[stat], periods[stat], errors_by_subject=errors)
        if rois is not None:
            rois.add(stat, values, periods[stat])
    written = []
    if group_maps is not None:
        paired_differences(subjects, group_maps, design, options.group_model, described)
        written += group_maps.written
        logger.info("%s: %d participants, %d maps, %d voxels with a value", fit_name(key), len(subjects),
                    len(stat_keys), int(group_maps.mask.sum()))
    if rois is not None:
        written += rois.write(key, subjects, stat_keys, described, output_dir, staging, common)
    return written


def _participant_description(fit, stat):
    try:
        sidecar = fit.metadata(*stat)
    except (KeyError, OSError, ValueError):
        return {"Description": stat[1], "Units": None}
    contrast = {key: value for key, value in (sidecar.get("Contrast") or {}).items()
                if key in ("Name", "Label", "Condition", "Type", "Expression")}
    return {"Description": sidecar.get("Description", stat[1]), "Units": sidecar.get("Units"),
            "CircularPeriod": sidecar.get("CircularPeriod"), **({"Contrast": contrast} if contrast else {})}


def _common_sidecar(fits_by_subject, options, fixed=None):
    participants = [f"sub-{s}" for s in sorted(fits_by_subject)]
    return {"Participants": participants, "NumberOfParticipants": len(participants),
            "MinRSquared": options.min_rsquared, "MinCVRSquared": options.min_cvrsquared,
            "SoftwareVersion": __version__, **sessions_sidecar(fits_by_subject, fixed or {})}


