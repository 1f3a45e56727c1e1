"""fMRIPrep-like derivatives around a real raw BIDS layout (for tests and examples on real metadata).

Real raw layouts (bids-examples: their real events, sidecars and names, often with empty placeholder images) are
copied (:func:`copy_raw`: text copied, images linked) and given an fMRIPrep-like derivatives tree
(:func:`build_fmriprep`): a small BOLD per run as long as its events imply at the sidecar's TR (inherited sidecars
read), a brain mask, confounds with fMRIPrep's column names, derivative sidecars with StartTime when the raw data
have SliceTiming, and a planted effect per condition (SPM HRF, nilearn's ``compute_regressor``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..bids.derivatives import bids_label
from .example_dataset import fmriprep_confounds

__all__ = ["copy_raw", "build_fmriprep", "SPACE", "SHAPE"]

SPACE = "MNI152NLin2009cAsym"
SHAPE = (6, 6, 6)
ENTITY = re.compile(r"([a-z]+)-([a-zA-Z0-9]+)")


def _entities(name):
    return dict(ENTITY.findall(name.split(".")[0].rsplit("_", 1)[0]))


def _inherited(raw, path, suffix, extension):
    """The files of ``suffix`` + ``extension`` that apply to ``path`` by BIDS inheritance, top level first."""
    entities = _entities(path.name)
    found, folder = [], raw
    for part in (None, *path.relative_to(raw).parent.parts):
        folder = folder if part is None else folder / part
        for candidate in sorted(folder.glob(f"*_{suffix}{extension}")):
            if _entities(candidate.name).items() <= entities.items():
                found.append(candidate)
    return found


def copy_raw(source, target, subject):
    """Copy a raw BIDS layout's top-level files and the tree of some subjects: text copied, images linked.

    Parameters
    ----------
    source : str or pathlib.Path
        The raw layout (its images are often 0-byte placeholders).
    target : str or pathlib.Path
        Where to copy; it may hold another subject's copy already (top-level files are overwritten).
    subject : str or list of str
        Subject label(s), without ``sub-``.
    """
    source, target = Path(source), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            shutil.copy(path, target / path.name)
    subjects = [subject] if isinstance(subject, str) else list(subject)
    for path in [p for label in subjects for p in (source / f"sub-{label}").rglob("*")]:
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        elif path.name.endswith((".nii.gz", ".nii")):
            if destination.is_symlink() or destination.exists():  # copied before: link again
                destination.unlink()
            destination.symlink_to(path.resolve())
        else:
            shutil.copy(path, destination)


def build_fmriprep(raw, subject, task, condition_column="trial_type", unpad_runs=False, derivative_sidecars=True,
                   seed=0, shape=SHAPE, noise=0.05, autocorrelation=None, effect_spread=False):
    """fMRIPrep-like outputs (``raw/derivatives/fmriprep``) for the BOLD runs of ``subject`` and ``task``.

    Parameters
    ----------
    raw : str or pathlib.Path
        A raw BIDS layout (for example a :func:`copy_raw` copy): its sidecars (inherited ones read) give the TR
        and slice timing, its events the run length and the planted effects.
    subject, task : str
        Labels, without ``sub-`` and ``task-``.
    condition_column : str
        The events column whose values are the conditions; condition k (in sorted order) gets effect ``1 + k``.
    unpad_runs : bool
        Write ``run-1`` for a raw ``run-01`` (as some pipelines do).
    derivative_sidecars : bool
        Write the preprocessed BOLD's JSON sidecar (TR, TaskName, StartTime with slice timing).
    seed : int
        Seed of the noise, the AR(1) coefficients and the effect scales.
    shape : tuple of 3 int
        Volume shape (the brain mask is a centred ellipsoid).
    noise : float
        SD of the noise (the BOLD baseline is 100).
    autocorrelation : (low, high), optional
        AR(1) noise whose coefficient is drawn per voxel between them; None: white noise.
    effect_spread : bool
        Scale each voxel's effects by a factor drawn uniformly in [0, 1] (the same for every run), so that z
        ranges from none to strong.

    Returns
    -------
    dict
        Run stem → (n_volumes, {condition label: planted effect}).
    """
    from nilearn.glm.first_level import compute_regressor

    raw = Path(raw)
    rng = np.random.default_rng(seed)
    out = raw / "derivatives" / "fmriprep"
    (out).mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(json.dumps({
        "Name": "fMRIPrep", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": "23.2.1"}]}))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    mask = (grid**2).sum(axis=-1) <= 1.2
    n_mask = int(mask.sum())
    scale = rng.uniform(0, 1, n_mask) if effect_spread else np.ones(n_mask)
    rho = None if autocorrelation is None else rng.uniform(*autocorrelation, n_mask)
    planted = {}
    for bold in sorted(raw.glob(f"sub-{subject}/**/func/sub-{subject}_*task-{task}_*bold.nii.gz")):
        metadata = {}
        for sidecar in _inherited(raw, bold, "bold", ".json"):
            metadata.update(json.loads(sidecar.read_text()))
        tr = float(metadata["RepetitionTime"])
        slice_times = metadata.get("SliceTiming")
        start_time = (min(slice_times) + max(slice_times)) / 2 if slice_times else 0.0
        events_files = _inherited(raw, bold, "events", ".tsv")
        events = pd.read_csv(events_files[-1], sep="\t", na_values=["n/a"]) if events_files else None
        if events is not None:
            stop = events["onset"] + events["duration"].fillna(0)
            n_volumes = int(np.ceil(stop.max() / tr)) + int(np.ceil(12.0 / tr))
        else:
            n_volumes = 120
        frame_times = start_time + np.arange(n_volumes) * tr
        signal = np.full(tuple(shape) + (n_volumes,), 100.0, np.float32) * mask[..., np.newaxis]
        effects = {}
        if events is not None and condition_column in events.columns:
            chosen = events.dropna(subset=[condition_column])
            for index, condition in enumerate(sorted(chosen[condition_column].astype(str).unique())):
                rows = chosen[chosen[condition_column].astype(str) == condition]
                regressor, _ = compute_regressor(np.vstack([rows["onset"], rows["duration"].fillna(0),
                                                            np.ones(len(rows))]), "spm", frame_times)
                effects[bids_label(condition)] = 1.0 + index
                signal[mask] += ((1.0 + index) * scale[:, None] * regressor[None, :, 0]).astype(np.float32)
        innovations = rng.normal(0, noise, (n_mask, n_volumes))
        if rho is not None:  # stationary AR(1) of SD `noise`
            for t in range(1, n_volumes):
                innovations[:, t] = rho * innovations[:, t - 1] + np.sqrt(1 - rho**2) * innovations[:, t]
        signal[mask] += innovations.astype(np.float32)
        entities = _entities(bold.name)
        if unpad_runs and "run" in entities:
            entities["run"] = str(int(entities["run"]))
        stem = "_".join(f"{key}-{entities[key]}" for key in ("sub", "ses", "task", "acq", "run") if key in entities)
        func = out / bold.parent.relative_to(raw)
        func.mkdir(parents=True, exist_ok=True)
        image = nib.Nifti1Image(signal, affine)
        image.header.set_xyzt_units("mm", "sec")
        image.header["pixdim"][4] = tr
        image.to_filename(func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz")
        nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(func / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz")
        if derivative_sidecars:
            sidecar = {"RepetitionTime": tr, "TaskName": metadata.get("TaskName", task), "SkullStripped": False}
            if slice_times:
                sidecar.update({"SliceTimingCorrected": True, "StartTime": start_time})
            (func / f"{stem}_space-{SPACE}_desc-preproc_bold.json").write_text(json.dumps(sidecar))
        fmriprep_confounds(rng, n_volumes).to_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t",
                                                  index=False, na_rep="n/a")
        planted[stem] = (n_volumes, effects)
    if not planted:
        raise FileNotFoundError(f"no raw BOLD for sub-{subject} task-{task} in {raw}")
    return planted
