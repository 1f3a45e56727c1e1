"""Group-level tables: ``group/participants_summary.tsv`` and ROI summaries per participant and group."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from ..._version import __version__
from ...bids.derivatives import atomic_write, derivative_path, write_json
from ...decoding.metrics import ACCURACY_COLUMNS, accuracy
from ...inference import summaries as stats

logger = logging.getLogger(__name__)

__all__ = ["write_participants_summary", "write_decoding_accuracy", "RoiTables", "sources", "SUMMARY_COLUMNS",
           "CIRCULAR_STATS", "TESTED_STATS"]

CIRCULAR_STATS = ("polarAngle",)  # degrees: circular statistics
TESTED_STATS = ("effect",)  # one-sample t-test against 0

SUMMARY_COLUMNS = {
    "participant_id": "Participant", "session_id": "Session (n/a: none)", "task": "Task",
    "space": "Output space", "res": "Resolution entity of the space (n/a: none)", "model": "Encoding model",
    "runs": "Runs fitted jointly (comma-separated; n/a: no run entity)", "n_runs": "Number of runs",
    "volumes": "Number of volumes fitted (all runs)", "voxels_fitted": "Voxels (or vertices) fitted",
    "voxels_total": "Voxels (or vertices) in the maps' layout",
    "median_rsquared": "Median R² over the fitted voxels",
    "median_cvrsquared": "Median cross-validated R² over the fitted voxels (n/a: fitted with --cv none)",
    "hrf": "HRF choice of the fit (with --hrf auto: the one chosen)",
    "fraction_converged": "Fraction of fitted voxels whose fit converged (closed-form fits: 1)",
    "device": "Device TensorFlow ran on", "wall_time_s": "Wall time of the fit, loading included (seconds)",
    "software_version": "bids_encoder version of the participant level",
}


def _table(path, frame, columns, extra):
    """Write a TSV (n/a for missing values) and its JSON sidecar describing the columns."""
    atomic_write(path, lambda tmp: frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g"))
    sidecar = path.with_name(path.name[: -len(".tsv")] + ".json")
    write_json(sidecar, {**{name: {"Description": text} for name, text in columns.items()}, **extra,
                         "SoftwareVersion": __version__})
    return [path, sidecar]


def write_participants_summary(output_dir, fits):
    """One row per participant fit (per participant when each has one fit), from the fits' R² sidecars."""
    rows = []
    for fit in sorted(fits, key=lambda f: (f.subject, f.session or "", f.key)):
        metadata = fit.metadata()
        processing = metadata.get("Processing", {})
        key = dict(fit.key)
        runs = [run for run in metadata.get("Runs", []) if run is not None]
        wall = processing.get("WallTime") or {}
        rows.append({
            "participant_id": f"sub-{fit.subject}", "session_id": f"ses-{fit.session}" if fit.session else None,
            "task": key.get("task"), "space": key.get("space"), "res": key.get("res"), "model": key.get("model"),
            "runs": ",".join(map(str, runs)) or None, "n_runs": len(metadata.get("Runs", [])),
            "volumes": sum(processing.get("Volumes", [])) or None,
            "voxels_fitted": processing.get("VoxelsFitted"), "voxels_total": processing.get("VoxelsTotal"),
            "median_rsquared": metadata.get("MedianRSquared"),
            "median_cvrsquared": metadata.get("MedianCVRSquared"),
            "hrf": (metadata.get("HRF") or {}).get("Choice"),
            "fraction_converged": processing.get("FractionConverged"), "device": metadata.get("Device"),
            "wall_time_s": round(sum(wall.values()), 3) if wall else None,
            "software_version": metadata.get("SoftwareVersion"),
        })
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    path = output_dir / "group" / "participants_summary.tsv"
    return _table(path, frame, SUMMARY_COLUMNS, {})


def _decoding_table(fit):
    """The ``--decode`` table of a participant fit (beside its R² sidecar), or None."""
    marker = fit.sidecars.get((None, "rsquared"))
    if marker is None:
        return None
    path = marker.with_name(marker.name.replace("_stat-rsquared_statmap.json", "_decoding.tsv"))
    return path if path.is_file() else None


def write_decoding_accuracy(staging, groups, output_dir):
    """Per group key whose participants were decoded (``--decode``): one row per participant fit with its
    accuracy (from its ``_decoding.tsv``) and a ``group`` row, the mean over participants (sessions averaged
    first; ``n_trials``: their total). Returns (written paths, [(name, frame)] for the report)."""
    written, shown = [], []
    for key, subjects in groups.items():
        rows, used, circular = [], [], False
        for subject, fits in sorted(subjects.items()):
            for fit in fits:
                path = _decoding_table(fit)
                if path is None:
                    continue
                sidecar = json.loads(path.with_name(path.name[: -len(".tsv")] + ".json").read_text())
                grid = sidecar.get("Grid", {})
                circular, period = bool(grid.get("Circular")), grid.get("PeriodDegrees")
                table = pd.read_csv(path, sep="\t", na_values=["n/a"])
                found = accuracy(table["true_value"], table["posterior_mean"], table["posterior_sd"],
                                 table["interval_lower"], table["interval_upper"], circular, period)
                chance = accuracy(table["true_value"], table["chance_posterior_mean"], circular=circular,
                                  period=period)
                chance = {f"Chance{k}": v for k, v in chance.items()}
                rows.append({"participant_id": f"sub-{subject}",
                             "session_id": f"ses-{fit.session}" if fit.session else None,
                             **{column: {**found, **chance}[name] for column, (name, _) in ACCURACY_COLUMNS.items()}})
                used.append(f"bids::{path.relative_to(output_dir).as_posix()}")
        if not rows:
            continue
        frame = pd.DataFrame(rows)
        metrics = [column for column in ACCURACY_COLUMNS if column != "n_trials"]
        per_participant = frame.groupby("participant_id")[metrics].mean()
        group = {"participant_id": "group", "session_id": None,
                 "n_trials": int(frame["n_trials"].sum()), **per_participant.mean().to_dict()}
        frame = pd.concat([frame, pd.DataFrame([group])], ignore_index=True)
        columns = {"participant_id": "Participant (group: the mean over participants)",
                   "session_id": "Session (n/a: none, or the group row)",
                   **{column: text for column, (_, text) in ACCURACY_COLUMNS.items()}}
        columns["n_trials"] += " (group row: the total)"
        path = derivative_path(staging, {**dict(key), "desc": "accuracy"}, suffix="decoding", extension=".tsv")
        extra = {"Description": "Decoding accuracy (--decode, leave one run out) per participant fit and its group "
                                "mean", "Circular": circular, "NumberOfParticipants": int(len(per_participant)),
                 "GroupSD": {k: (float(v) if v is not None and np.isfinite(v) else None)
                             for k, v in per_participant.std(ddof=1).to_dict().items()},
                 "Sources": sorted(used)}
        written += _table(path, frame, columns, extra)
        shown.append((path.name, frame))
        logger.info("%s: decoding accuracy of %d participant(s), mean r %.3f", path.name, len(per_participant),
                    group["correlation"])
    return written, shown


def sources(subjects, stats_used, output_dir):
    """``bids::`` URIs (this dataset) of the participant maps behind a group result."""
    uris = []
    for maps in subjects.values():
        for fit in maps.fits:
            for stat in stats_used:
                value = fit.maps.get(stat)
                for path in [] if value is None else value.values() if isinstance(value, dict) else [value]:
                    uris.append(f"bids::{path.relative_to(output_dir).as_posix()}")
    return sorted(uris)


def _column(stat):
    contrast, name = stat
    return name if contrast is None else f"{name}_{contrast}"


def _roi_means(labels, values, indices, period=None):
    """Mean of ``values`` over each label in ``indices`` (finite values only).

    ``period`` (in the values' units, e.g. 360 for polar angle, 180 for orientation): a circular mean — the
    direction of the mean resultant vector of the values mapped onto the full circle, back in (−180, 180] for a
    period of 360 and in [0, period) otherwise, as :func:`bids_encoder.inference.summaries.circular_summary`. None: linear.
    """
    finite = np.isfinite(values) & (labels > 0)
    size = int(max(indices.max(initial=0), labels.max(initial=0))) + 1
    counts = np.bincount(labels[finite], minlength=size)[indices]
    with np.errstate(invalid="ignore", divide="ignore"):
        if period is not None:
            scale = 360.0 / float(period)
            radians = np.radians(values[finite] * scale)
            cos = np.bincount(labels[finite], np.cos(radians), minlength=size)[indices]
            sin = np.bincount(labels[finite], np.sin(radians), minlength=size)[indices]
            mean = np.degrees(np.arctan2(sin, cos))
            mean = mean if float(period) == 360.0 else np.mod(mean / scale, period)
            return np.where(counts > 0, mean, np.nan), counts
        total = np.bincount(labels[finite], values[finite], minlength=size)[indices]
        return np.where(counts > 0, total / counts, np.nan), counts


def _period(stat, period):
    """The circular period of a statistic: the one given (from its sidecar's ``CircularPeriod``), else 360 for
    the :data:`CIRCULAR_STATS`, else None (linear)."""
    if period is not None:
        return float(period)
    return 360.0 if stat[1] in CIRCULAR_STATS else None


class RoiTables:
    """Per-participant and group ROI summaries of one group key, filled one statistic at a time, then written
    (TSV + JSON each, under ``staging``)."""

    def __init__(self, atlas, subjects):
        self.atlas = atlas
        self.labelled, names, shared = {}, {}, None
        for subject, maps in subjects.items():
            if atlas.per_subject or shared is None:
                shared = atlas.labels(maps.geometry, subject if atlas.per_subject else None)
            self.labelled[subject] = shared[0]
            names.update(shared[1])
        self.indices = np.unique(np.concatenate([labels[labels > 0] for labels in self.labelled.values()]))
        if self.indices.size == 0:
            raise ValueError(f"The atlas {atlas.template} has no label inside the maps")
        self.region_names = [names.get(int(i), str(int(i))) for i in self.indices]
        self.frames, self.periods = {}, {}
        for subject, maps in subjects.items():
            _, n_voxels = _roi_means(self.labelled[subject], maps.values((None, "rsquared")), self.indices)
            self.frames[subject] = pd.DataFrame({"participant_id": f"sub-{subject}", "index": self.indices,
                                                 "name": self.region_names, "n_voxels": n_voxels})

    def add(self, stat, values_by_subject, period=None):
        """Region means of ``stat`` from each participant's map (None: the participant has none); circular with
        ``period`` (the map sidecar's ``CircularPeriod``; polar angle: 360 when not given)."""
        period = self.periods[stat] = _period(stat, period)
        for subject, values in values_by_subject.items():
            self.frames[subject][_column(stat)] = np.nan if values is None else _roi_means(
                self.labelled[subject], values, self.indices, period)[0]

    def write(self, key, subjects, stat_keys, described, output_dir, staging, common):
        """Write both tables; returns their paths (TSV and JSON each)."""
        atlas, per_subject = self.atlas, self.frames
        participants = pd.concat(list(per_subject.values()), ignore_index=True)
        base = {**dict(key), "atlas": atlas.name}
        atlas_info = {"Atlas": {"Name": atlas.name, "Image": atlas.template,
                                "Labels": None if atlas.labels_file is None else str(atlas.labels_file)}}
        columns = {"participant_id": "Participant", "index": "Atlas label", "name": "Region name",
                   "n_voxels": "Voxels of the region with a value (R² at least MinRSquared when set)"}
        periods = {stat: self.periods.get(stat, _period(stat, None)) for stat in stat_keys}
        columns.update({_column(stat): f"Mean over the region's voxels"
                        f"{'' if periods[stat] is None else f' (circular, period {periods[stat]:g})'} of: "
                        f"{described[stat]['Description']} ({described[stat]['Units']})" for stat in stat_keys})
        common = {**common, "Sources": sources(subjects, stat_keys, output_dir)}
        written = _table(derivative_path(staging, {**base, "desc": "participants"}, suffix="rois",
                                         extension=".tsv"), participants, columns, {**atlas_info, **common})

        group = pd.DataFrame({"index": self.indices, "name": self.region_names})
        group["n_participants"] = np.vstack([(f["n_voxels"] > 0).to_numpy()
                                             for f in per_subject.values()]).sum(axis=0)
        group_columns = {"index": "Atlas label", "name": "Region name",
                         "n_participants": "Participants with at least one voxel of the region"}
        for stat in stat_keys:
            column = _column(stat)
            values = np.vstack([f[column].to_numpy(dtype=np.float64) for f in per_subject.values()])
            circular = periods[stat] is not None
            summary = stats.circular_summary(values, periods[stat]) if circular else stats.linear_summary(values)
            for desc, result in summary.items():
                group[f"{column}_{desc}"] = result
                group_columns[f"{column}_{desc}"] = (
                    f"{f'Circular (period {periods[stat]:g}) ' if circular else ''}{desc} across participants of "
                    f"the region means of {column}")
            if stat[1] in TESTED_STATS:
                t, z, _ = stats.one_sample_t(values)
                group[f"{column}_t"], group[f"{column}_z"] = t, z
                group_columns[f"{column}_t"] = f"One-sample t statistic (mean = 0) of the region means of {column}"
                group_columns[f"{column}_z"] = f"z score with the upper-tail p-value of {column}_t"
        written += _table(derivative_path(staging, {**base, "desc": "group"}, suffix="rois", extension=".tsv"),
                          group, group_columns, {**atlas_info, **common})
        return written
