"""The README example's dataset: whole-brain MNI BOLD with planted GLM effects and a retinotopic pRF task.

Built from what nilearn ships offline: the MNI152 (ICBM 2009) template and brain mask resampled to ``resolution``
mm, and the fsaverage5 pial mesh (for the surface effects). Per subject::

    task-localizer (n_runs runs): faces, houses, scenes events; each condition's effect is a pair of bilateral
        Gaussian blobs (σ = 7 mm, cut beyond 2.5 σ, inside the brain mask) at MNI coordinates of a category-selective
        region (faces: fusiform, houses: parahippocampal, scenes: retrosplenial / transverse occipital); the
        fsaverage5 GIFTI BOLD carries the same blobs around the same coordinates on the pial mesh.
    task-prf (1 run): a bar sweep (``stimuli/bars.npz`` + ``bars.json``, named by events.tsv's ``stim_file``),
        acquired with a partial-coverage occipital slab (the run's brain mask is the brain behind y = -64 mm), as
        retinotopy sessions often are. Occipital voxels (y ≤ -68 mm, within 24 mm of the calcarine's height) have a
        Gaussian pRF: polar angle from the voxel's position around the calcarine (above it: lower visual field;
        left hemisphere: right visual field), eccentricity growing from 0.5° at the occipital pole to ~7°
        anteriorly, size 0.3° + 0.2 · eccentricity.

Both tasks: BOLD = baseline (template intensity) + signal + slow drift + Gaussian noise. The signal is computed with
nilearn's SPM HRF (``compute_regressor``, ``spm_hrf``), independently of bids_encoder's own design code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import compute_regressor, spm_hrf

from .example_dataset import SPACE, _events, _write_json, write_confounds, write_skeleton, write_surface_run
from .synthetic import bar_apertures

__all__ = ["REGIONS", "MNIExampleTruth", "make_mni_example"]

#: condition -> (region, MNI coordinates of the left-hemisphere centre; the right one mirrors x)
REGIONS = {
    "faces": ("fusiform", (-40.0, -54.0, -18.0)),
    "houses": ("parahippocampal", (-26.0, -40.0, -10.0)),
    "scenes": ("transverse occipital", (-34.0, -82.0, 20.0)),
}
CALCARINE_Z = 4.0  # height (mm) of the calcarine sulcus in the occipital lobe, roughly
PRF_EXTENT = 8.0  # the stimulus spans ±PRF_EXTENT degrees


@dataclass
class MNIExampleTruth:
    root: Path
    conditions: list
    tr: float
    mask: np.ndarray  # brain mask (x, y, z) of the localizer runs
    affine: np.ndarray
    effects: dict = field(default_factory=dict)  # (subject, condition) -> 3-D array
    surface_effects: dict = field(default_factory=dict)  # (subject, condition) -> (vertices L then R,)
    prf_mask: np.ndarray | None = None  # voxels with a planted pRF
    prf: dict = field(default_factory=dict)  # subject -> DataFrame x, y, sd (rows: prf_mask voxels, C order)


def _mni_images(resolution):
    from nilearn import datasets, image

    template = datasets.load_mni152_template(resolution=resolution)
    mask = datasets.load_mni152_brain_mask(resolution=resolution)
    mask = image.resample_to_img(mask, template, interpolation="nearest", force_resample=True,
                                 copy_header=True)
    return np.asarray(template.get_fdata(), np.float32), np.asarray(mask.get_fdata()) > 0.5, template.affine


def _mm(affine, shape):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _blobs(points, centre, sigma=7.0):
    total = 0.0
    for sign in (1.0, -1.0):
        distance2 = ((points - np.array([sign * centre[0], centre[1], centre[2]])) ** 2).sum(axis=-1)
        total = total + np.where(distance2 <= (2.5 * sigma) ** 2, np.exp(-distance2 / (2 * sigma**2)), 0.0)
    return total


def retinotopy(mm):
    """Planted pRFs of voxels at MNI positions ``mm`` (n × 3): DataFrame x, y, sd (degrees)."""
    x, y, z = mm[:, 0], mm[:, 1], mm[:, 2]
    # angle around the calcarine in the hemifield: above the sulcus → lower field, lateral → horizontal meridian
    phi = np.arctan2(-(z - CALCARINE_Z), np.maximum(np.abs(x) - 2.0, 2.0))
    angle = np.where(x < 0, phi, np.pi - phi)  # left hemisphere → right visual field
    eccentricity = 0.5 + 6.5 * np.clip((y + 104.0) / 36.0, 0.0, 1.0)
    return pd.DataFrame({"x": eccentricity * np.cos(angle), "y": eccentricity * np.sin(angle),
                         "sd": 0.3 + 0.2 * eccentricity})


def _prf_responses(prf, frames, grid, tr, n_volumes, oversampling=16):
    """Predicted responses (time × voxels): aperture · Gaussian, each frame shown during [k·TR, (k+1)·TR),
    convolved with nilearn's SPM HRF at TR/oversampling and read at the middle of each TR (the slice-timing
    reference, ``StartTime`` = TR/2)."""
    gx, gy = grid["x"].to_numpy(), grid["y"].to_numpy()
    weights = np.exp(-((gx[:, None] - prf["x"].to_numpy()) ** 2 + (gy[:, None] - prf["y"].to_numpy()) ** 2)
                     / (2 * prf["sd"].to_numpy() ** 2))
    neural = frames.reshape(len(frames), -1) @ (weights / weights.sum(axis=0))
    fine = np.repeat(neural, oversampling, axis=0)
    hrf = spm_hrf(tr, oversampling=oversampling)
    convolved = np.apply_along_axis(lambda column: np.convolve(column, hrf)[: len(fine)], 0, fine)
    return convolved[oversampling // 2 :: oversampling][:n_volumes]


def _save_bold(signal, affine, tr, path, start_time=None):
    image = nib.Nifti1Image(signal.astype(np.float32), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = tr
    image.to_filename(path)
    sidecar = {"RepetitionTime": tr, "SkullStripped": True}
    if start_time is not None:
        sidecar["StartTime"] = start_time
    _write_json(Path(str(path).replace(".nii.gz", ".json")), sidecar)


def make_mni_example(root, n_subjects=2, n_runs=2, n_volumes=120, tr=2.0, resolution=4, noise=0.2, prf_noise=0.3,
                     seed=0, prf_coverage="slab"):
    """Write the dataset under ``root`` and return its :class:`MNIExampleTruth`.

    Parameters
    ----------
    root : path
        Folder of the raw dataset (its fMRIPrep-like derivatives in ``derivatives/fmriprep``).
    n_subjects, n_runs, n_volumes : int
        Subjects, localizer runs and volumes per localizer run.
    tr : float
        Repetition time (s).
    resolution : int
        Voxel size (mm) of nilearn's MNI152 template and brain mask.
    noise, prf_noise : float
        Noise standard deviation of the localizer and of the retinotopic run.
    seed : int
    prf_coverage : {'slab', 'brain'}
        The retinotopic run covers an occipital slab (as a partial-coverage acquisition would), or the whole
        brain (pRFs planted in the same occipital voxels; the whole-brain pRF benchmark).

    Returns
    -------
    MNIExampleTruth
        The planted effects (volume and fsaverage5), the planted pRFs and their mask.
    """
    from nilearn import datasets

    root = Path(root)
    rng = np.random.default_rng(seed)
    template, mask, affine = _mni_images(resolution)
    shape = mask.shape
    mm = _mm(affine, shape)
    conditions = list(REGIONS)
    truth = MNIExampleTruth(root=root, conditions=conditions, tr=tr, mask=mask, affine=affine)
    pial = datasets.load_fsaverage("fsaverage5")["pial"]
    vertices = np.concatenate([np.asarray(pial.parts[part].coordinates, np.float64) for part in ("left", "right")])
    n_vertices = len(vertices) // 2

    occipital = mask & (mm[..., 1] <= -64.0)
    slab = mask if prf_coverage == "brain" else occipital
    truth.prf_mask = occipital & (mm[..., 1] <= -68.0) & (np.abs(mm[..., 2] - CALCARINE_Z) <= 24.0)
    frames_table, grid = bar_apertures(n_side=17, extent=PRF_EXTENT, n_steps=16, blank=4)
    frames = frames_table.to_numpy().reshape(-1, 17, 17)  # t × x × y, x-major as the grid
    n_prf = len(frames)

    subjects, fmriprep = write_skeleton(root, "bids_encoder MNI example", ("localizer", "prf"), tr, n_subjects)
    (root / "stimuli").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / "stimuli" / "bars.npz", frames.astype(np.uint8))
    coords = np.linspace(-PRF_EXTENT, PRF_EXTENT, 17)
    _write_json(root / "stimuli" / "bars.json", {
        "VisualAngleX": [coords[0], coords[-1]], "VisualAngleY": [coords[0], coords[-1]],
        "Description": "bars sweeping in six directions, one frame per volume"})
    frame_times = np.arange(n_volumes) * tr
    baseline = np.where(mask, 100.0 + 400.0 * template / max(float(template.max()), 1.0), 0.0)

    for number, subject in enumerate(subjects):
        for index, (condition, (_, centre)) in enumerate(REGIONS.items()):
            amplitude = (5.0 + 0.5 * index) * rng.uniform(0.9, 1.1)
            truth.effects[(subject, condition)] = np.where(mask, amplitude * _blobs(mm, centre), 0.0)
            truth.surface_effects[(subject, condition)] = amplitude * _blobs(vertices, centre, sigma=8.0)
        func, deriv = root / f"sub-{subject}" / "func", fmriprep / f"sub-{subject}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        deriv.mkdir(parents=True, exist_ok=True)
        for run in range(1, n_runs + 1):
            stem = f"sub-{subject}_task-localizer_run-{run}"
            events = _events(rng, conditions, n_volumes, tr)
            events.to_csv(func / f"{stem}_events.tsv", sep="\t", index=False, float_format="%.1f")
            regressors = {}
            for condition in conditions:
                chosen = events[events["trial_type"] == condition]
                regressors[condition] = compute_regressor(
                    np.vstack([chosen["onset"], chosen["duration"], np.ones(len(chosen))]), "spm", frame_times)[0][:, 0]
            drift = np.linspace(-1, 1, n_volumes) * rng.normal(0, 1)
            inside = np.repeat(baseline[mask][:, None], n_volumes, axis=1)
            for condition in conditions:
                inside += np.outer(truth.effects[(subject, condition)][mask], regressors[condition])
            inside += drift + rng.normal(0, noise, inside.shape)
            signal = np.zeros((*shape, n_volumes), np.float32)
            signal[mask] = inside
            del inside
            _save_bold(signal, affine, tr, deriv / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz")
            nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(
                deriv / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz")
            write_confounds(deriv, stem, rng, n_volumes)
            surface = 100.0 + np.outer(drift, np.ones(2 * n_vertices)) + rng.normal(0, noise, (n_volumes, 2 * n_vertices))
            for condition in conditions:
                surface += np.outer(regressors[condition], truth.surface_effects[(subject, condition)])
            write_surface_run(deriv, stem, surface, number, tr, "localizer")

        # the retinotopic run: one bar-sweep movie from the first volume, one frame per volume
        stem = f"sub-{subject}_task-prf"
        pd.DataFrame({"onset": [0.0], "duration": [n_prf * tr], "trial_type": ["bars"],
                      "stim_file": ["bars.npz"]}).to_csv(func / f"{stem}_events.tsv", sep="\t", index=False)
        prf = retinotopy(mm[truth.prf_mask])
        prf[["x", "y"]] += rng.normal(0, 0.2, (len(prf), 2))  # subjects differ a little
        truth.prf[subject] = prf
        amplitude = rng.uniform(2.0, 4.0, len(prf))
        inside = np.repeat(baseline[slab][:, None], n_prf, axis=1)
        planted = truth.prf_mask[slab]
        inside[planted] += (_prf_responses(prf, frames, grid, tr, n_prf) * amplitude).T
        inside += np.linspace(-1, 1, n_prf) * rng.normal(0, 1) + rng.normal(0, prf_noise, inside.shape)
        signal = np.zeros((*shape, n_prf), np.float32)
        signal[slab] = inside
        _save_bold(signal, affine, tr, deriv / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz", start_time=tr / 2)
        nib.Nifti1Image(slab.astype(np.uint8), affine).to_filename(deriv / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz")
        write_confounds(deriv, stem, rng, n_prf)
    return truth
