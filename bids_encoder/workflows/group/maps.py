"""The maps of one group key: each participant's maps read, thresholded by R²/cvR² and averaged over its sessions
(:class:`_SubjectMaps`), then the group maps, their tests (mixed effects or OLS, circular statistics for angles)
and thresholded z maps (:class:`_GroupMaps`)."""

from __future__ import annotations

import logging

import numpy as np

from ...bids.derivatives import map_paths, sidecar_path, write_json
from ...bids.layout import InputError
from ...bids.participant_maps import fit_name, read_map
from ...inference import summaries as stats
from ..common.thresholds import write_thresholded
from .sessions import (
    fixed_effects_values,
    source_fits,
)
from .tables import (
    TESTED_STATS,
    sources,
)

logger = logging.getLogger(__name__)


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

    def standard_errors(self, stat):
        """The participant's standard-error map of (contrast, stat) (``desc-se``, pRF and tuning fits), masked
        like its values and combined over sessions (the error of their average); None without one."""
        variances = []
        for fit, keep in zip(self.sessions, self.keep, strict=True):
            path = fit.standard_errors.get(stat)
            if path is None:
                continue
            values, geometry = read_map(path)
            if not geometry.same_as(self.geometry):
                raise InputError(f"{fit.label}: the {stat[1]} standard-error map is not on the grid of its R² map",
                                 exit_code=65)
            variances.append(np.where(keep, values, np.nan) ** 2)
        return np.sqrt(_combine(variances, None, variance=True)) if variances else None


WEIGHTED_TESTS = {
    "weightedMean": "Inverse-variance weighted mean across participants (weights 1 / se², from each participant's "
                    "desc-se map; participants without a standard error at a voxel are left out there). It assumes "
                    "one true value shared by the participants (no between-participant variance)",
    "weightedMeanSe": "Standard error of the inverse-variance weighted mean, sqrt(1 / sum of the weights) "
                      "(fixed effects: no between-participant variance)",
}


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
        self.contrasts = {}  # contrast label → the participants' Contrast (name, label, condition), for sidecars
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
                               "stat": entities["stat"],
                               "caption": sidecar["Description"], "units": sidecar.get("Units"), "path": path})
        self.writer.write(values.astype(np.float32), path, name=entities.get("stat", "value"))
        named = {"Contrast": self.contrasts[entities["contrast"]]} if entities.get("contrast") in self.contrasts else {}
        write_json(sidecar_path(path), {**sidecar, **named, **self.common, "OutOfMaskValue": OUT_OF_GROUP,
                                        "Sources": used})
        self.written.extend(list(path.values()) if isinstance(path, dict) else [path])
        self.written.append(sidecar_path(path))

    def add(self, stat, values_by_subject, described, period=None, errors_by_subject=None):
        """Summaries (and for effects t and z) of ``stat`` from each participant's map (None: has none);
        circular with ``period`` (degrees) for angles. With ``errors_by_subject`` (their standard-error maps,
        ``--weight-by-se``), also the inverse-variance weighted mean and its standard error."""
        contrast, name = stat
        if contrast and described.get("Contrast"):
            self.contrasts[contrast] = described["Contrast"]
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
        if errors_by_subject and not circular:
            errors = np.vstack([_or_nan(e, self.size) for e in errors_by_subject.values()])[:, self.mask]
            weights = np.where(np.isfinite(errors) & (errors > 0) & np.isfinite(values), 1.0 / errors**2, 0.0)
            total = weights.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                weighted = np.where(total > 0, (weights * np.nan_to_num(values)).sum(axis=0) / total, np.nan)
                error = np.where(total > 0, 1.0 / np.sqrt(total), np.nan)
            weighted_in = [f"sub-{s}" for s, row in zip(errors_by_subject, weights, strict=True) if row.any()]
            for desc, result in (("weightedMean", weighted), ("weightedMeanSe", error)):
                self._write({**entities, "desc": desc}, result, {
                    "Description": f"{WEIGHTED_TESTS[desc]} of: {described['Description']}",
                    "Units": described["Units"], "Test": {"Name": desc, "Definition": WEIGHTED_TESTS[desc]},
                    "ParticipantsWithValues": weighted_in}, used)

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


def _period(period, described):
    """The period of a circular map in the group sidecars: degrees, or the map's own units (vonmises1d's mu:
    radians)."""
    if described.get("Units") == "radians":
        return {"Period": period, "PeriodUnits": "radians"}
    return {"PeriodDegrees": period}
