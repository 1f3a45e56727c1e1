"""Subject level: fixed effects of a participant's sessions, written as its own maps with ``ses`` absent.

At the end of a subject's participant job, for every group key (task, space, model, …) with at least two
*finished* session fits under OUTPUT_DIR (whether fitted by this job or an earlier one), every t contrast present
(effect and variance maps) in all those sessions is combined by precision-weighted fixed effects
(:func:`bids_encoder.inference.fixed_effects`) and written as
``sub-X_task-…_model-m_contrast-C_stat-{effect,variance,t,z,p}_statmap.<ext>`` in ``sub-X/func/`` with sidecars
(``FixedEffects``: sessions, method; ``DegreesOfFreedom``; ``Sources``: the session maps). F contrasts are not
combined (their sessions' F maps stay the inference; the sidecars say so). A subject with one session gets nothing,
and fixed-effects maps left from an earlier run are removed when fewer than two finished sessions remain.

All maps are written into a private folder first, then the previous fixed-effects maps are removed and the new
ones renamed into place (maps first, sidecars last); a failure or a signal on the way removes them all (the
previous set included, which may not match refitted sessions), so that no half-written or outdated set is left.
The sidecars record each session fit's fingerprint (the SHA-256 of its R² sidecar): the group level stops on a
missing set, or one whose sessions or fingerprints differ from the finished session fits (exit 66).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..._version import __version__
from ...bids.derivatives import map_paths, sidecar_path, write_json
from ...bids.participant_maps import find_participant_fits, read_map
from ...inference import fixed_effects
from ..common.interrupts import raise_if_interrupted
from ..common.naming import fit_marker, fit_name, remove_fit_outputs
from ..stats_models.dataset_nodes import stats_model_fits

logger = logging.getLogger(__name__)

__all__ = ["write_subject_fixed_effects", "session_fingerprint", "FIXED_EFFECTS_METHOD", "F_CONTRASTS_NOTE", "STATS"]

STATS = ("effect", "variance", "t", "z", "p")
FIXED_EFFECTS_METHOD = ("precision-weighted fixed effects (inverse-variance) over the sessions: effect = "
                        "sum(e/v) / sum(1/v), variance = 1 / sum(1/v), degrees of freedom the sum of the sessions' "
                        "(of the sessions with a value at the voxel), t = effect / sqrt(variance), z and one-sided "
                        "(upper-tail) p from t; a session without a value at a voxel drops out there")
F_CONTRASTS_NOTE = ("F contrasts are not combined across sessions: their F, z and p maps exist per session only")
OUT_OF_MASK = "NaN: voxels where no session has a value"


def session_fingerprint(fit):
    """SHA-256 of a session fit's R² sidecar (written last, anew by every fit): a refitted session changes it."""
    return hashlib.sha256(fit.sidecars[(None, "rsquared")].read_bytes()).hexdigest()


def _entities(subject, key):
    return {"subject": subject, **dict(key)}


def _uris(paths, output_dir):
    items = [p for value in paths for p in (value.values() if isinstance(value, dict) else [value])]
    return sorted(f"bids::{Path(p).relative_to(output_dir).as_posix()}" for p in items)


def write_subject_fixed_effects(output_dir, subject):
    """(Re)write the fixed-effects maps over sessions of every group key of ``subject``; returns the paths."""
    output_dir = Path(output_dir).resolve()
    if not (output_dir / "dataset_description.json").is_file() or not any(
            (output_dir / f"sub-{subject}").glob("ses-*")):
        return []
    by_key = {}
    ordinary, _ = stats_model_fits(find_participant_fits(output_dir, subjects=[subject]))
    for fit in ordinary:  # a BIDS Stats Model's fits: its own session/subject nodes say how to combine them
        by_key.setdefault(fit.key, []).append(fit)
    written = []
    for key, fits in sorted(by_key.items()):
        base = _entities(subject, key)
        if fit_marker(output_dir, base).exists():  # a session-less fit of its own: no sessions to combine
            continue
        sessions = sorted((fit for fit in fits if fit.session and fit.finished), key=lambda f: f.session)
        name, folder = fit_name(base, output_dir), fit_marker(output_dir, base).parent
        contrasts = sorted({c for c, stat in sessions[0].maps if c and stat == "effect"
                            and all((c, s) in fit.maps and (c, s) in fit.sidecars for fit in sessions
                                    for s in ("effect", "variance"))}) if len(sessions) >= 2 else []
        if not contrasts:
            if any(fit.session is None for fit in fits):
                logger.info("sub-%s %s: fewer than two finished sessions with t contrasts; fixed-effects maps of "
                            "an earlier run removed", subject, name)
                remove_fit_outputs(folder, name)
            continue
        try:
            written += _write_key(output_dir, folder, name, base, sessions, contrasts)
        except ValueError as error:  # sessions on different grids: the group level stops on them too (65)
            logger.warning("sub-%s %s: no fixed effects over sessions: %s", subject, name, error)
    return written


def _write_key(output_dir, folder, name, base, sessions, contrasts):
    """Stage every map of one group key, then swap them in for the previous ones."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-fixedeffects-", dir=folder))
    labels = [fit.session for fit in sessions]
    moves = []  # (staged, final): maps, then sidecars
    try:
        for contrast in contrasts:
            moves += _stage_contrast(output_dir, staging, base, sessions, labels, contrast)
        moves.sort(key=lambda pair: pair[1].suffix == ".json")
        raise_if_interrupted()
        remove_fit_outputs(folder, name)
        for staged, final in moves:
            os.replace(staged, final)
        raise_if_interrupted()
    except BaseException:  # no set at all rather than an old one that may not match refitted sessions
        remove_fit_outputs(folder, name)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("sub-%s: fixed effects over sessions %s of %d contrast(s) of %s", base["subject"],
                ", ".join(labels), len(contrasts), name)
    return [final for _, final in moves]


def _stage_contrast(output_dir, staging, base, sessions, labels, contrast):
    arrays, geometry = {}, None
    for stat in ("effect", "variance"):
        rows = []
        for fit in sessions:
            values, found = read_map(fit.maps[(contrast, stat)])
            if geometry is None:
                geometry = found
            elif not found.same_as(geometry):
                raise ValueError(f"{fit.label}: the {contrast} {stat} map is not on the grid of the other sessions")
            rows.append(values)
        arrays[stat] = np.vstack(rows)
    described = {stat: sessions[0].metadata(contrast, stat) for stat in STATS if (contrast, stat) in
                 sessions[0].sidecars}
    dofs = [float(fit.metadata(contrast, "effect")["DegreesOfFreedom"]) for fit in sessions]
    result = fixed_effects(arrays["effect"], arrays["variance"], dofs)
    first = described["effect"]
    common = {key: first[key] for key in ("NoiseModel", "NoiseModelDescription", "SignalScaling", "HRF")
              if key in first}
    if "Contrast" in first:  # the weights are over each session's own design columns: see the Sources' sidecars
        common["Contrast"] = {k: v for k, v in first["Contrast"].items() if k != "ContrastWeights"}
    model = dict(first.get("Model") or {})
    writer = geometry.writer(np.ones(int(np.prod(geometry.shape)), bool))
    sources = _uris([fit.maps[(contrast, s)] for fit in sessions for s in ("effect", "variance")], output_dir)
    moves = []
    for stat in STATS:
        final = map_paths(output_dir, {**base, "contrast": contrast, "stat": stat}, geometry.kind)
        staged = ({hemi: staging / path.name for hemi, path in final.items()} if isinstance(final, dict)
                  else staging / final.name)
        writer.write(getattr(result, stat).astype(np.float32), staged, name=stat)
        session_sidecar = described.get(stat, {})
        sidecar = {
            "Description": (f"Subject-level fixed effects over sessions {', '.join(labels)}: "
                            + session_sidecar.get("Description", stat)),
            "Units": session_sidecar.get("Units"),
            **common,
            "Model": {**model, "Parameter": stat, "Contrast": contrast},
            "FixedEffects": {"Sessions": labels, "Method": FIXED_EFFECTS_METHOD,
                             "Implementation": "bids_encoder.inference.fixed_effects (numpy); z and p from "
                                               "scipy.stats.t log-probabilities",
                             "SessionDegreesOfFreedom": dict(zip(labels, dofs, strict=True)),
                             "SessionFits": {fit.session: session_fingerprint(fit) for fit in sessions},
                             "FContrasts": F_CONTRASTS_NOTE},
            "DegreesOfFreedom": float(np.sum(dofs)),
            "OutOfMaskValue": OUT_OF_MASK,
            "Sources": sources,
            "SoftwareVersion": __version__,
        }
        write_json(sidecar_path(staged), sidecar)
        items = list(final.items()) if isinstance(final, dict) else [(None, final)]
        moves += [(staged[hemi] if hemi else staged, path) for hemi, path in items]
        moves.append((sidecar_path(staged), sidecar_path(final)))
    return moves
