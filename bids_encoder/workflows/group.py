"""Group level: aggregate the participants' maps of every (task, space, model) into group maps and tables.

Every input is checked before the first output is written: missing or unfinished participant fits, spaces that
differ across participants, native spaces without an atlas and groups of fewer than two participants all stop
the run with an :class:`~bids_encoder.bids.layout.InputError` naming what is wrong.

Per participant, maps of several sessions are averaged (circularly for angles) so that each participant counts
once, except the effect and variance maps of t contrasts, which come from its subject-level fixed effects over
sessions (see :mod:`.group_sessions`, which also writes the paired session differences); ``min_rsquared`` blanks a participant's voxels whose R² is below it (or NaN) in every map of that fit, and
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

import numpy as np
import pandas as pd

from .._version import __version__
from ..bids.atlas import Atlas, is_native
from ..bids.derivatives import map_paths, sidecar_path, write_json
from ..bids.layout import InputError, load_layout
from ..bids.participant_maps import find_participant_fits, fit_name, read_map
from ..inference import summaries as stats
from ..report.group import write_group_report
from .comparison import COMPARISON, group_comparison
from .group_model import GroupDesign, read_covariates
from .group_sessions import (
    check_fixed_effects,
    fixed_effects_values,
    paired_differences,
    sessions_sidecar,
    source_fits,
    split_fixed_effects,
)
from .group_tables import (
    CIRCULAR_STATS,
    TESTED_STATS,
    RoiTables,
    sources,
    write_decoding_accuracy,
    write_participants_summary,
)
from .group_thresholds import write_thresholded
from .interrupts import raise_if_interrupted
from .stats_models_group import run_dataset_nodes, stats_model_fits

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
    filters = {"task": options.task, "space": options.space, "model": options.model}
    fits = find_participant_fits(output_dir, subjects=options.participant_label or None, filters=filters)
    if not fits:
        chosen = ", ".join(f"{k} {v}" for k, v in filters.items() if v) or "any task, space and model"
        raise InputError(f"No participant outputs under {output_dir} for {chosen}"
                         + (f" and {', '.join('sub-' + s for s in options.participant_label)}"
                            if options.participant_label else ""), exit_code=18)
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


def _period(period, described):
    """The period of a circular map in the group sidecars: degrees, or the map's own units (vonmises1d's mu:
    radians)."""
    if described.get("Units") == "radians":
        return {"Period": period, "PeriodUnits": "radians"}
    return {"PeriodDegrees": period}


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


def _combine(arrays, period, variance=False):
    """Average a participant's sessions (one array each): NaN-aware, circular for angles (``period`` in degrees;
    None: linear); the variance of the average for sampling variances (sum / n²)."""
    if len(arrays) == 1:
        return arrays[0]
    stacked = np.vstack(arrays)
    if period == 360.0:
        return stats.circular_mean(stacked)
    if period is not None:
        scale = 360.0 / period
        return np.mod(stats.circular_mean(stacked * scale) / scale, period)
    finite = np.isfinite(stacked)
    n = finite.sum(axis=0)
    total = np.where(finite, stacked, 0.0).sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1) ** (2 if variance else 1), np.nan)


class _SubjectMaps:
    """Reads one participant's maps of a group key: R²-thresholded, sessions averaged, checked geometry."""

    def __init__(self, subject, fits, min_rsquared, min_cvrsquared=None, fixed=None):
        self.subject, self.sessions, self.fixed = subject, fits, fixed
        self.fits = source_fits(fits, fixed)  # what the Sources list: the fixed-effects maps for effects
        self.keep, self.r2 = [], []
        self.geometry = None
        for fit in fits:
            r2, geometry = read_map(fit.maps[(None, "rsquared")])
            self.r2.append(r2)
            if self.geometry is None:
                self.geometry = geometry
            elif not geometry.same_as(self.geometry):
                raise InputError(f"The sessions of sub-{subject} ({fit_name(fit.key)}) are on different "
                                 "grids", exit_code=65)
            keep = np.isfinite(r2)
            if min_rsquared is not None:
                keep &= np.where(keep, r2, -np.inf) >= min_rsquared
            if min_cvrsquared is not None:
                if (None, "cvrsquared") not in fit.maps:
                    raise InputError(f"--min-cvrsquared: {fit.label} has no cross-validated R² map (fitted with "
                                     "--cv none); refit it with cross-validation or drop --min-cvrsquared",
                                     exit_code=66)
                cvr2, geometry = read_map(fit.maps[(None, "cvrsquared")])
                if not geometry.same_as(self.geometry):
                    raise InputError(f"{fit.label}: the cvrsquared map is not on the grid of its R² map", exit_code=65)
                keep &= np.where(np.isfinite(cvr2), cvr2, -np.inf) >= min_cvrsquared
            self.keep.append(keep)

    def values(self, stat, period=None):
        """The participant's map of (contrast, stat), flat; None when none of its fits has it. ``period``
        (degrees): a circular map."""
        if self.fixed is not None and stat[0] and stat[1] in ("effect", "variance"):
            return fixed_effects_values(self, stat)
        arrays = []
        for fit, keep, r2 in zip(self.sessions, self.keep, self.r2, strict=True):
            if stat not in fit.maps:
                continue
            if stat == (None, "rsquared"):  # read once, in __init__
                arrays.append(np.where(keep, r2, np.nan))
                continue
            values, geometry = read_map(fit.maps[stat])
            if not geometry.same_as(self.geometry):
                raise InputError(f"{fit.label}: the {stat[1]} map is not on the grid of its R² map", exit_code=65)
            arrays.append(np.where(keep, values, np.nan))
        return _combine(arrays, period, variance=stat[1] == "variance") if arrays else None


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
        if group_maps is not None:
            group_maps.add(stat, values, described[stat], periods[stat])
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
    return {"Description": sidecar.get("Description", stat[1]), "Units": sidecar.get("Units"),
            "CircularPeriod": sidecar.get("CircularPeriod")}


def _common_sidecar(fits_by_subject, options, fixed=None):
    participants = [f"sub-{s}" for s in sorted(fits_by_subject)]
    return {"Participants": participants, "NumberOfParticipants": len(participants),
            "MinRSquared": options.min_rsquared, "MinCVRSquared": options.min_cvrsquared,
            "SoftwareVersion": __version__, **sessions_sidecar(fits_by_subject, fixed or {})}


SUMMARY_TESTS = {
    "mean": "Mean across participants", "median": "Median across participants",
    "sd": "Standard deviation across participants (n - 1 denominator)",
}
CIRCULAR_TESTS = {
    "mean": "Circular mean across participants (direction of the mean resultant vector)",
    "median": "Circular median across participants (the angle minimising the summed arc distance; ties: their "
              "circular mean)",
    "sd": "Circular standard deviation across participants, sqrt(-2 ln R)",
}


class _GroupMaps:
    """Voxel-wise group maps of one group key (written under ``staging``), one statistic at a time; the
    participant count map first."""

    def __init__(self, key, subjects, geometry, output_dir, staging, common, shown, design, group_model, fdr_q=0.05,
                 cluster_extent=10):
        self.key, self.subjects, self.output_dir, self.staging = key, subjects, output_dir, staging
        self.design, self.group_model = design, group_model
        self.fdr_q, self.cluster_extent = fdr_q, cluster_extent
        self.common, self.shown, self.kind = common, shown, geometry.kind
        self.base = dict(key)
        self.written = []
        r2 = np.vstack([maps.values((None, "rsquared")) for maps in subjects.values()])
        self.size = r2.shape[1]
        self.mask = np.isfinite(r2).any(axis=0) if self.kind == "volume" else np.ones(self.size, bool)
        self.writer = geometry.writer(self.mask)
        n = stats.count(r2[:, self.mask])
        self._write({**self.base, "stat": "count"}, n.astype(np.float64), {
            "Description": "Number of participants with a value at each voxel"
                           + (" (R² at least MinRSquared)" if common["MinRSquared"] is not None else "")
                           + (" (cvR² at least MinCVRSquared)" if common["MinCVRSquared"] is not None else ""),
            "Units": "participants", "Test": {"Name": "count"}}, self._sources((None, "rsquared")))

    def _sources(self, stat):
        return sources(self.subjects, sorted({stat, (None, "rsquared")}, key=str), self.output_dir)

    def _write(self, entities, values, sidecar, used):
        path = map_paths(self.staging, entities, self.kind)
        if _in_report(entities):
            label = " ".join(str(entities[k]) for k in ("contrast", "stat", "desc") if entities.get(k))
            self.shown.append({"group": fit_name(self.key), "space": self.base.get("space", ""), "label": label,
                               "stat": "count" if entities["stat"] in ("count", "rsquared") else entities["stat"],
                               "caption": sidecar["Description"], "path": path})
        self.writer.write(values.astype(np.float32), path, name=entities.get("stat", "value"))
        write_json(sidecar_path(path), {**sidecar, **self.common, "OutOfMaskValue": OUT_OF_GROUP, "Sources": used})
        self.written.extend(list(path.values()) if isinstance(path, dict) else [path])
        self.written.append(sidecar_path(path))

    def add(self, stat, values_by_subject, described, period=None):
        """Summaries (and for effects t and z) of ``stat`` from each participant's map (None: has none);
        circular with ``period`` (degrees) for angles."""
        contrast, name = stat
        values = np.vstack([_or_nan(v, self.size) for v in values_by_subject.values()])[:, self.mask]
        included = [f"sub-{s}" for s, row in zip(values_by_subject, values, strict=True) if np.isfinite(row).any()]
        entities = {**self.base, "stat": name, **({"contrast": contrast} if contrast else {})}
        used = self._sources(stat)
        circular = period is not None
        summary = stats.circular_summary(values, period) if circular else stats.linear_summary(values)
        tests = CIRCULAR_TESTS if circular else SUMMARY_TESTS
        for desc, result in summary.items():
            self._write({**entities, "desc": desc}, result, {
                "Description": f"{tests[desc]} of: {described['Description']}",
                "Units": described["Units"], "Test": {"Name": desc, "Definition": tests[desc],
                                                      "Circular": circular,
                                                      **(_period(period, described) if circular else {})},
                "ParticipantsWithValues": included}, used)
        if name in TESTED_STATS:
            self._group_model(contrast, values, entities, described, included)

    def _group_model(self, contrast, values, entities, described, included):
        """The group GLM of an effect: mixed effects with the participants' variance maps, else OLS."""
        variance_maps = [maps.values((contrast, "variance")) for maps in self.subjects.values()]
        variances = (None if any(v is None for v in variance_maps) or self.group_model == "ols" else
                     np.vstack(variance_maps)[:, self.mask])
        results, used = self.design.fit(values, variances, self.group_model)
        stat = (contrast, "effect")
        used_maps = self._sources(stat) if variances is None else sources(
            self.subjects, sorted({stat, (contrast, "variance"), (None, "rsquared")}, key=str), self.output_dir)
        texts = {"effect": ("Group estimate", described["Units"]),
                 "variance": ("Sampling variance of the group estimate", f"({described['Units']})^2"),
                 "t": ("t statistic", "t"),
                 "z": ("z score with the one-sided (upper-tail) p-value of the t statistic; sign of t", "z"),
                 "p": ("One-sided (upper-tail) p-value of the t statistic", "probability")}
        for column in self.design.names:
            test = self.design.test(used, column)
            what = "" if column == "mean" else f" (slope of the demeaned covariate {column})"
            for stat_name, (text, units) in texts.items():
                target = {**entities, "stat": stat_name, **({} if column == "mean" else {"desc": column})}
                sidecar = {"Description": f"{text}{what}, {test['Name']}, of: {described['Description']}",
                           "Units": units, "Test": test, "ParticipantsWithValues": included}
                self._write(target, results[column][stat_name], sidecar, used_maps)
                if stat_name == "z":
                    self._thresholded(target, results[column]["z"], sidecar, used_maps)
        if used == "mixed":
            self._write({**entities, "stat": "betweenVariance"}, results["tau2"], {
                "Description": f"REML between-participant variance of: {described['Description']}",
                "Units": f"({described['Units']})^2", "Test": self.design.test(used, "mean"),
                "ParticipantsWithValues": included}, used_maps)


    def _thresholded(self, target, z, sidecar, used):
        """FDR-thresholded z (every geometry) and, for volumes, the cluster-extent map and its clusters table."""
        self.written += write_thresholded(self._write, self.staging, self.kind, self.writer, target, z, sidecar,
                                          used, self.fdr_q, self.cluster_extent, self.common)


OUT_OF_GROUP = ("NaN: voxels where no participant has a value (outside every participant's mask, or R² below "
                "MinRSquared); SD, t and z also where fewer than two participants have one")


def _in_report(entities):
    """Report figures: participant counts, mean R², z of the effects, and means of the other parameters."""
    stat, desc = entities["stat"], entities.get("desc")
    if stat in ("count", "z"):
        return True
    return desc == "mean" and stat not in TESTED_STATS and stat != "baseline"


def _or_nan(values, size):
    return np.full(size, np.nan) if values is None else values

