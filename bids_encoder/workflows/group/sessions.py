"""Group level with sessions: participants' fixed effects over sessions as inputs, and paired session differences.

- A participant with several finished sessions of a group key enters the group GLM of a t contrast through its
  subject-level fixed-effects maps (``ses`` absent; :mod:`bids_encoder.workflows.sessions.fixed_effects`), never through an average of its
  session maps. Its other maps (R², HRF parameters, …) are still averaged over sessions, and its R²/cvR² thresholds
  apply per session: a fixed-effects voxel is kept where at least one session passes. A missing or stale set of
  fixed-effects maps (sessions differing from the finished ones) stops the group level (exit 66).
- Paired differences: for each pair of sessions (a, b) (sorted labels) that at least two participants of a group
  key both have, per participant the difference of its session effects of a t contrast, b − a, with variance the
  sum of the two sessions' variances; then the group model (mixed effects or OLS, the same covariates). Written as
  ``…_contrast-C_stat-{effect,variance,t,z,p}_desc-ses<B>MinusSes<A>_statmap`` (and ``betweenVariance``, the FDR
  and cluster-thresholded z with ``desc-ses<B>MinusSes<A>Fdr`` / ``…Cluster``; a covariate's slope appends its
  name: ``desc-ses2MinusSes1Age``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from itertools import combinations

import numpy as np
import pandas as pd

from ...bids.layout import InputError
from ...bids.participant_maps import fit_name, read_map
from ..sessions.fixed_effects import session_fingerprint
from .design import GroupDesign

logger = logging.getLogger(__name__)

__all__ = ["split_fixed_effects", "check_fixed_effects", "fixed_effects_values", "source_fits",
           "sessions_sidecar", "paired_differences", "pair_label", "COMBINED"]

COMBINED = ("effect", "variance")


def _has_rsquared(fit):
    return (None, "rsquared") in fit.maps or (None, "rsquared") in fit.sidecars


def split_fixed_effects(fits):
    """(fits, {(key, subject): fixed-effects fit}): the session-less fits without an R² map of a participant that
    has session fits of the same key are its fixed effects over sessions, not unfinished fits."""
    with_sessions = {(fit.key, fit.subject) for fit in fits if fit.session}
    fixed = {(fit.key, fit.subject): fit for fit in fits
             if fit.session is None and not _has_rsquared(fit) and (fit.key, fit.subject) in with_sessions}
    return [fit for fit in fits if (fit.key, fit.subject) not in fixed or fit.session], fixed


def _t_contrasts(fits):
    """Contrasts with effect and variance maps in every one of ``fits``."""
    return sorted({c for c, stat in fits[0].maps if c and stat == "effect"
                   and all((c, s) in fit.maps for fit in fits for s in COMBINED)})


def check_fixed_effects(groups, fixed):
    """InputError (66) for a multi-session participant without fixed-effects maps, or with stale ones."""
    for key, subjects in groups.items():
        for subject, fits in subjects.items():
            sessions = sorted(fit.session for fit in fits if fit.session)
            contrasts = _t_contrasts(fits) if len(sessions) > 1 else []
            if not contrasts:
                continue
            label = f"sub-{subject}_{fit_name(key)}"
            advice = f"re-run the participant level for sub-{subject} (it rewrites them)"
            fit = fixed.get((key, subject))
            if fit is None:
                raise InputError(f"{label} has sessions {', '.join(sessions)} but no fixed-effects maps over them: "
                                 + advice, exit_code=66)
            fingerprints = {f.session: session_fingerprint(f) for f in fits if f.session}
            for contrast in contrasts:
                for stat in COMBINED:
                    found, recorded = None, None
                    if (contrast, stat) in fit.maps and (contrast, stat) in fit.sidecars:
                        combined = fit.metadata(contrast, stat).get("FixedEffects", {})
                        found, recorded = combined.get("Sessions"), combined.get("SessionFits")
                    if found != sessions:
                        raise InputError(f"{label}: the fixed-effects {contrast} {stat} map is stale (over sessions "
                                         f"{', '.join(found) if found else 'none'}; finished sessions "
                                         f"{', '.join(sessions)}): " + advice, exit_code=66)
                    if recorded != fingerprints:
                        refitted = sorted(s for s in sessions if (recorded or {}).get(s) != fingerprints[s])
                        raise InputError(f"{label}: the fixed-effects {contrast} {stat} map predates the fit of "
                                         f"session(s) {', '.join(refitted)}: " + advice, exit_code=66)


def fixed_effects_values(maps, stat):
    """A participant's fixed-effects map of (contrast, effect|variance), flat, blanked where no session passes the
    R² thresholds; None when it has none."""
    path = maps.fixed.maps.get(stat)
    if path is None:
        return None
    values, geometry = read_map(path)
    if not geometry.same_as(maps.geometry):
        raise InputError(f"sub-{maps.subject}: the fixed-effects {stat[0]} {stat[1]} map is not on the grid of its "
                         "sessions' R² maps", exit_code=65)
    return np.where(np.any(maps.keep, axis=0), values, np.nan)


def source_fits(fits, fixed):
    """The fits a participant's group results come from, for their Sources: the sessions' own maps, except the
    combined effect and variance maps, which are the fixed-effects fit's."""
    if fixed is None:
        return fits
    combined = {stat for stat in fixed.maps if stat[1] in COMBINED}
    return [replace(fit, maps={s: p for s, p in fit.maps.items() if s not in combined}) for fit in fits] + [
        replace(fixed, maps={s: fixed.maps[s] for s in combined})]


def sessions_sidecar(fits_by_subject, fixed):
    """Group sidecar fields of participants with several sessions: what was done with them."""
    sessions = {f"sub-{s}": [fit.session for fit in fits] for s, fits in fits_by_subject.items() if len(fits) > 1}
    if not sessions:
        return {}
    combined = {}
    for subject, fits in fits_by_subject.items():
        fit = fixed.get((fits[0].key, subject)) if len(fits) > 1 else None
        effect = None if fit is None else next((stat for stat in fit.maps if stat[1] == "effect"), None)
        if effect is not None:
            combined[f"sub-{subject}"] = fit.metadata(*effect)["FixedEffects"]["Sessions"]
    return {"SessionsAveraged": sessions, "SessionFixedEffects": combined,
            "SessionHandling": "t contrasts' effect and variance inputs of the participants in SessionFixedEffects are "
                               "their subject-level fixed effects over those sessions (ses absent in their names); "
                               "their other maps (R², model parameters) are averaged over SessionsAveraged"}


def pair_label(a, b):
    """``ses2MinusSes1`` for sessions a = '1', b = '2' (b − a)."""
    return f"ses{b[:1].upper()}{b[1:]}MinusSes{a[:1].upper()}{a[1:]}"


def _covariates(design):
    if not design.covariates:
        return None
    return pd.DataFrame({name: {s.removeprefix("sub-"): v for s, v in info["Values"].items()}
                         for name, info in design.covariates.items()})


def _session_map(maps, fit, keep, stat):
    values, geometry = read_map(fit.maps[stat])
    if not geometry.same_as(maps.geometry):
        raise InputError(f"{fit.label}: the {stat[1]} map is not on the grid of its R² map", exit_code=65)
    return np.where(keep, values, np.nan)


def paired_differences(subjects, group_maps, design, group_model, described):
    """Group maps of the paired session differences of every t contrast (written through ``group_maps``)."""
    sessions = {subject: {fit.session: (fit, keep) for fit, keep in zip(maps.sessions, maps.keep, strict=True)
                          if fit.session} for subject, maps in subjects.items()}
    labels = sorted({label for found in sessions.values() for label in found})
    for a, b in combinations(labels, 2):
        members = [s for s in subjects if a in sessions[s] and b in sessions[s]]
        if len(members) < 2:
            continue
        contrasts = _t_contrasts([sessions[s][label][0] for s in members for label in (a, b)])
        pair = pair_label(a, b)
        try:
            pair_design = GroupDesign(members, _covariates(design), f"{fit_name(group_maps.key)} {pair}")
        except InputError as error:
            logger.warning("No paired session difference %s: %s", pair, error)
            continue
        for contrast in contrasts:
            rows, variances, used_maps = [], [], []
            for subject in members:
                (fit_a, keep_a), (fit_b, keep_b) = sessions[subject][a], sessions[subject][b]
                keep = keep_a & keep_b
                maps = subjects[subject]
                effect_a, effect_b = (_session_map(maps, fit, keep, (contrast, "effect")) for fit in (fit_a, fit_b))
                variance_a, variance_b = (_session_map(maps, fit, keep, (contrast, "variance"))
                                          for fit in (fit_a, fit_b))
                rows.append(effect_b - effect_a)
                variances.append(variance_a + variance_b)
                used_maps += [fit.maps[stat] for fit in (fit_a, fit_b)
                              for stat in ((contrast, "effect"), (contrast, "variance"), (None, "rsquared"))]
            mask = group_maps.mask
            effects = np.vstack(rows)[:, mask]
            variances = None if group_model == "ols" else np.vstack(variances)[:, mask]
            _write_pair(group_maps, pair_design, group_model, contrast, pair, (a, b), members, effects, variances,
                        described[(contrast, "effect")], _uris(used_maps, group_maps.output_dir))
        logger.info("%s: paired session differences %s (%d participants, %d contrasts)", fit_name(group_maps.key),
                    pair, len(members), len(contrasts))


def _uris(paths, output_dir):
    items = [p for value in paths for p in (value.values() if isinstance(value, dict) else [value])]
    return sorted(f"bids::{p.relative_to(output_dir).as_posix()}" for p in items)


def _write_pair(group_maps, design, group_model, contrast, pair, sessions, members, effects, variances, described,
                used):
    a, b = sessions
    results, model = design.fit(effects, variances, group_model)
    included = [f"sub-{s}" for s, row in zip(members, effects, strict=True) if np.isfinite(row).any()]
    what = f"paired session difference ses-{b} minus ses-{a} of: {described['Description']}"
    texts = {"effect": ("Group estimate", described["Units"]),
             "variance": ("Sampling variance of the group estimate", f"({described['Units']})^2"),
             "t": ("t statistic", "t"),
             "z": ("z score with the one-sided (upper-tail) p-value of the t statistic; sign of t", "z"),
             "p": ("One-sided (upper-tail) p-value of the t statistic", "probability")}
    paired = {"Minuend": b, "Subtrahend": a, "Participants": [f"sub-{s}" for s in members],
              "Definition": "per participant, its effect in session Minuend minus its effect in session Subtrahend, "
                            "with variance the sum of the two sessions' variances (independent sessions); then the "
                            "group model; a voxel counts where both sessions pass the R² thresholds"}
    base = {**group_maps.base, "contrast": contrast}
    for column in design.names:
        test = {**design.test(model, column), "PairedSessions": paired}
        slope = "" if column == "mean" else f" (slope of the demeaned covariate {column})"
        desc = pair if column == "mean" else pair + column[:1].upper() + column[1:]
        for stat, (text, units) in texts.items():
            target = {**base, "stat": stat, "desc": desc}
            sidecar = {"Description": f"{text}{slope}, {test['Name']}, of the {what}", "Units": units,
                       "Test": test, "ParticipantsWithValues": included}
            group_maps._write(target, results[column][stat], sidecar, used)
            if stat == "z":
                group_maps._thresholded(target, results[column]["z"], sidecar, used)
    if model == "mixed":
        group_maps._write({**base, "stat": "betweenVariance", "desc": pair}, results["tau2"], {
            "Description": f"REML between-participant variance of the {what}", "Units": f"({described['Units']})^2",
            "Test": {**design.test(model, "mean"), "PairedSessions": paired}, "ParticipantsWithValues": included},
            used)
