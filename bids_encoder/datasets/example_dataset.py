"""Write a small fMRIPrep-like BIDS dataset with known ground truth (the tests; the README example: mni_example).

Layout (``space-MNI152NLin2009cAsym``, ``res-2``)::

    ROOT/dataset_description.json, participants.tsv, task-<task>_bold.json
    ROOT/sub-XX/func/sub-XX_task-<task>_run-N_events.tsv, …_bold.nii.gz (raw: small, same data)
    ROOT/derivatives/fmriprep/dataset_description.json (GeneratedBy fMRIPrep)
    ROOT/derivatives/fmriprep/sub-XX/func/sub-XX_task-<task>_run-N_space-S_res-2_desc-preproc_bold.nii.gz + .json
                                         …_space-S_res-2_desc-brain_mask.nii.gz
                                         …_desc-confounds_timeseries.tsv + .json
                                         …_hemi-{L,R}_space-fsaverage5_bold.func.gii + .json (``surface_vertices``
                                         > 0; odd subjects use fMRIPrep's current entity order, even ones the
                                         older ``space-fsaverage5_hemi-L``)
                                         …_space-fsLR_den-91k_bold.dtseries.nii + .json (tuning datasets with
                                         ``cifti=True``: the surface vertices as CIFTI grayordinates)

With ``n_sessions`` > 1 the same under ``sub-XX/ses-N/func/`` with ``sub-XX_ses-N_task-…`` names.

BOLD = baseline + Σ_c effect_c · regressor_c + slow drift + Gaussian noise, where regressor_c is the events of
condition c convolved at high resolution with the SPM HRF (nilearn's ``compute_regressor``), independent of
bids_encoder's own design code. Effects are smooth blobs inside a brain-shaped (ellipsoid) mask.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import compute_regressor

SPACE = "MNI152NLin2009cAsym"
FMRIPREP_VERSION = "23.2.1"
FSAVERAGE5_VERTICES = 10242


@dataclass
class ExampleTruth:
    """Ground truth of a generated dataset: effect maps (x, y, z) per subject and condition, and the mask."""

    root: Path
    conditions: list
    tr: float
    mask: np.ndarray
    effects: dict = field(default_factory=dict)  # (subject, condition) -> 3-D array
    affine: np.ndarray | None = None
    surface_effects: dict = field(default_factory=dict)  # (subject, condition) -> (vertices L then R,)


def _write_json(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def write_skeleton(root, name, tasks, tr, n_subjects):
    """The dataset-level files of a raw dataset and its fMRIPrep derivatives: both descriptions, one BOLD sidecar
    per task at the top level (inherited by every run), participants.tsv. Returns (subject labels, fMRIPrep
    folder)."""
    _write_json(root / "dataset_description.json", {
        "Name": name, "BIDSVersion": "1.9.0", "DatasetType": "raw", "License": "CC0", "Authors": ["bids_encoder"]})
    for task in tasks:
        _write_json(root / f"task-{task}_bold.json", {"RepetitionTime": tr, "TaskName": task})
    subjects = [f"{i + 1:02d}" for i in range(n_subjects)]
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    fmriprep = root / "derivatives" / "fmriprep"
    _write_json(fmriprep / "dataset_description.json", {
        "Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": FMRIPREP_VERSION}]})
    return subjects, fmriprep


def _events(rng, conditions, n_volumes, tr):
    """Events with onsets on a 0.1 s grid (not on volume boundaries), 1–3 s long, 4–8 s apart."""
    onsets, t = [], 6.0
    while t < n_volumes * tr - 20:
        onsets.append(round(t, 1))
        t += rng.uniform(4.0, 8.0)
    return pd.DataFrame({
        "onset": onsets,
        "duration": np.round(rng.uniform(1.0, 3.0, len(onsets)), 1),
        "trial_type": rng.choice(conditions, len(onsets)),
    })


def fmriprep_confounds(rng, n_volumes):
    """A confounds table with fMRIPrep's column names (motion + expansions, csf, white_matter, global_signal,
    framewise_displacement, std_dvars, cosines), n/a in the first row where fMRIPrep writes it."""
    motion = np.cumsum(rng.normal(0, 0.01, (n_volumes, 6)), axis=0)
    names = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    frame = pd.DataFrame(motion, columns=names)
    for name in names:
        frame[f"{name}_derivative1"] = frame[name].diff()  # first row n/a, as fMRIPrep writes it
        frame[f"{name}_power2"] = frame[name] ** 2
        frame[f"{name}_derivative1_power2"] = frame[f"{name}_derivative1"] ** 2
    frame["csf"] = rng.normal(0, 1, n_volumes)
    frame["white_matter"] = rng.normal(0, 1, n_volumes)
    frame["global_signal"] = rng.normal(0, 1, n_volumes)
    frame["framewise_displacement"] = np.r_[np.nan, np.abs(np.diff(motion[:, :3], axis=0)).sum(axis=1)]
    frame["std_dvars"] = np.r_[np.nan, rng.uniform(0.8, 1.2, n_volumes - 1)]
    n_cosine = 3
    for k in range(n_cosine):
        frame[f"cosine{k:02d}"] = np.sqrt(2 / n_volumes) * np.cos(np.pi * (np.arange(n_volumes) + 0.5) * (k + 1) / n_volumes)
    return frame


def _sphere(rng, n, hemi):
    """Vertex positions on the unit sphere: fsaverage5's own (nilearn bundles the mesh) for 10,242 vertices, so
    that effects are smooth on its surface; random points otherwise."""
    points = rng.standard_normal((n, 3))
    if n == FSAVERAGE5_VERTICES:
        from nilearn import datasets

        points = np.asarray(datasets.load_fsaverage("fsaverage5")["sphere"].parts[
            "left" if hemi == "L" else "right"].coordinates, dtype=np.float64)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _write_gifti(path, signal):
    """One data array per volume, as fMRIPrep writes BOLD on surfaces."""
    arrays = [nib.gifti.GiftiDataArray(column.astype(np.float32), intent="NIFTI_INTENT_TIME_SERIES",
                                       datatype="NIFTI_TYPE_FLOAT32") for column in signal]
    nib.save(nib.GiftiImage(darrays=arrays), str(path))


def write_volume_run(func, deriv, stem, signal, mask, affine, tr, task, rng):
    """One run's raw BOLD and fMRIPrep outputs (preprocessed BOLD, brain mask, sidecar, confounds from ``rng``)
    in the 2 mm template space."""
    image = nib.Nifti1Image(signal, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = tr
    image.to_filename(func / f"{stem}_bold.nii.gz")
    image.to_filename(deriv / f"{stem}_space-{SPACE}_res-2_desc-preproc_bold.nii.gz")
    nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(
        deriv / f"{stem}_space-{SPACE}_res-2_desc-brain_mask.nii.gz")
    _write_json(deriv / f"{stem}_space-{SPACE}_res-2_desc-preproc_bold.json",
                {"RepetitionTime": tr, "TaskName": task, "SkullStripped": True})
    write_confounds(deriv, stem, rng, signal.shape[-1])


def write_confounds(deriv, stem, rng, n_volumes):
    """fMRIPrep's confounds table of one run (from ``rng``) and its (empty) sidecar."""
    fmriprep_confounds(rng, n_volumes).to_csv(deriv / f"{stem}_desc-confounds_timeseries.tsv", sep="\t",
                                              index=False, na_rep="n/a")
    _write_json(deriv / f"{stem}_desc-confounds_timeseries.json", {})


def write_surface_run(deriv, stem, values, number, tr, task):
    """One run's fsaverage5 BOLD (time × both hemispheres' vertices, left first) as two GIFTI files; odd-numbered
    subjects get fMRIPrep's other entity order (``space`` before ``hemi``)."""
    n_vertices = values.shape[1] // 2
    for offset, hemi in enumerate(("L", "R")):
        entities = f"hemi-{hemi}_space-fsaverage5" if number % 2 == 0 else f"space-fsaverage5_hemi-{hemi}"
        _write_gifti(deriv / f"{stem}_{entities}_bold.func.gii", values[:, offset * n_vertices:(offset + 1) * n_vertices])
        _write_json(deriv / f"{stem}_{entities}_bold.json", {"RepetitionTime": tr, "TaskName": task})


def write_cifti_run(deriv, stem, values, tr, task):
    """One run's BOLD (time × both hemispheres' vertices, left first) as a CIFTI-2 dtseries in ``space-fsLR``
    (``den-91k`` as fMRIPrep names it; the grayordinates are the given vertices, half per hemisphere)."""
    n_vertices = values.shape[1] // 2
    models = (nib.cifti2.BrainModelAxis.from_surface(np.arange(n_vertices), n_vertices, "CortexLeft")
              + nib.cifti2.BrainModelAxis.from_surface(np.arange(n_vertices), n_vertices, "CortexRight"))
    series = nib.cifti2.SeriesAxis(start=0.0, step=tr, size=values.shape[0], unit="SECOND")
    nib.Cifti2Image(values.astype(np.float32), header=(series, models)).to_filename(
        deriv / f"{stem}_space-fsLR_den-91k_bold.dtseries.nii")
    _write_json(deriv / f"{stem}_space-fsLR_den-91k_bold.json", {"RepetitionTime": tr, "TaskName": task})


def make_example_dataset(root, n_subjects=2, n_runs=2, n_volumes=100, tr=2.0, shape=(14, 16, 12),
                         conditions=("faces", "houses", "scenes"), task="localizer", noise=1.0, seed=0,
                         surface_vertices=0, mask_radius=0.95, shared_effects=False, n_sessions=1, session_gain=0.0,
                         session_noise=None):
    """Write the dataset under ``root`` and return its :class:`ExampleTruth`.

    By default every subject has each condition's effect somewhere else. With ``shared_effects``, a condition's
    effect sits in the same region for every subject (a blob cut to exactly zero beyond twice its width, its
    amplitude varying by ±10 % across subjects): what a group analysis should find, with true nulls elsewhere.

    With ``n_sessions`` > 1 every subject has sessions ``ses-1`` … ``ses-N`` (``n_runs`` runs each, BOLD under
    ``sub-XX/ses-N/func``); session ``s`` (from 1) has the effects of ``truth.effects`` times
    ``1 + session_gain * (s - 1)`` (a planted session difference) and noise of SD ``noise * session_noise[s - 1]``
    (``session_noise``: one factor per session; default all 1).

    Parameters
    ----------
    root : path
        Folder of the raw dataset (its fMRIPrep-like derivatives in ``derivatives/fmriprep``).
    n_subjects, n_runs, n_volumes : int
        Subjects, runs per session and volumes per run.
    tr : float
        Repetition time (s).
    shape : tuple of int
        The volume's grid (2 mm voxels); the brain mask is an ellipsoid filling it (``mask_radius``).
    conditions : sequence of str
        The events' ``trial_type`` values, one planted effect each.
    task : str
    noise : float
        Standard deviation of the Gaussian noise.
    seed : int
    surface_vertices : int
        With > 0, also fsaverage-like GIFTI pairs of that many vertices per hemisphere (10,242: fsaverage5).
    mask_radius : float
        Radius of the ellipsoidal brain mask, in units of the half box.
    shared_effects : bool
        The same effect regions for every subject (a group analysis' ground truth).
    n_sessions : int
    session_gain : float
        Relative gain of the effects per session after the first.
    session_noise : sequence of float, optional
        Noise factor of each session.

    Returns
    -------
    ExampleTruth
        The planted effects, the mask and the affine.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    conditions = list(conditions)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -np.array(shape) + 1.0
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    mask = (grid**2).sum(axis=-1) <= mask_radius**2  # an ellipsoid filling the box at radius 1
    truth = ExampleTruth(root=root, conditions=conditions, tr=tr, mask=mask, affine=affine)

    subjects, fmriprep = write_skeleton(root, "bids_encoder example", [task], tr, n_subjects)

    frame_times = np.arange(n_volumes) * tr
    sessions = [str(s) for s in range(1, n_sessions + 1)] if n_sessions > 1 else [None]
    sphere = {hemi: _sphere(rng, surface_vertices, hemi) for hemi in ("L", "R")} if surface_vertices else None
    shared = {condition: rng.uniform(-0.4, 0.4, 3) for condition in conditions} if shared_effects else None
    for number, subject in enumerate(subjects):
        for index, condition in enumerate(conditions):
            centre = shared[condition] if shared_effects else rng.uniform(-0.4, 0.4, 3)
            distance2 = ((grid - centre) ** 2).sum(axis=-1)
            blob = np.exp(-distance2 / (2 * 0.25**2))
            amplitude = 1.5 + index
            if shared_effects:
                blob = np.where(distance2 <= 0.5**2, blob, 0.0)
                amplitude *= rng.uniform(0.9, 1.1)
            truth.effects[(subject, condition)] = np.where(mask, amplitude * blob, 0.0)
            if sphere is not None:
                truth.surface_effects[(subject, condition)] = np.concatenate([
                    amplitude * np.exp(-((points - centre / np.linalg.norm(centre)) ** 2).sum(axis=1) / 0.5)
                    for points in sphere.values()])
        baseline = np.where(mask, rng.uniform(80, 120, shape), 0.0)
        for session, run in [(s, r) for s in sessions for r in range(1, n_runs + 1)]:
            folder = f"sub-{subject}" + (f"/ses-{session}" if session else "") + "/func"
            func, deriv = root / folder, fmriprep / folder
            func.mkdir(parents=True, exist_ok=True)
            deriv.mkdir(parents=True, exist_ok=True)
            gain = 1.0 + session_gain * (int(session) - 1) if session else 1.0
            run_noise = noise * (session_noise[int(session) - 1] if session and session_noise else 1.0)
            stem = f"sub-{subject}" + (f"_ses-{session}" if session else "") + f"_task-{task}_run-{run}"
            events = _events(rng, conditions, n_volumes, tr)
            events.to_csv(func / f"{stem}_events.tsv", sep="\t", index=False, float_format="%.1f")
            signal = np.repeat(baseline[..., np.newaxis].astype(np.float32), n_volumes, axis=-1)
            for condition in conditions:
                chosen = events[events["trial_type"] == condition]
                regressor, _ = compute_regressor(
                    np.vstack([chosen["onset"], chosen["duration"], np.ones(len(chosen))]), "spm", frame_times)
                signal += (gain * truth.effects[(subject, condition)][..., np.newaxis]
                           * regressor[:, 0]).astype(np.float32)
            drift = np.linspace(-1, 1, n_volumes) * rng.normal(0, 1)
            inside = signal[mask]  # (voxels, time): noise and drift only where the brain is
            inside += (drift + rng.normal(0, run_noise, inside.shape)).astype(np.float32)
            signal[mask] = inside
            del inside
            write_volume_run(func, deriv, stem, signal, mask, affine, tr, task, rng)
            if sphere is not None:
                surface = 100.0 + np.outer(drift, np.ones(2 * surface_vertices))
                surface += rng.normal(0, run_noise, surface.shape)
                for condition in conditions:
                    chosen = events[events["trial_type"] == condition]
                    regressor, _ = compute_regressor(
                        np.vstack([chosen["onset"], chosen["duration"], np.ones(len(chosen))]), "spm", frame_times)
                    surface += np.outer(regressor[:, 0], gain * truth.surface_effects[(subject, condition)])
                write_surface_run(deriv, stem, surface, number, tr, task)
    return truth
