"""HCP-shaped subjects: 91,282 grayordinates, 6 runs × 300 frames at TR 1 s, bar apertures, planted Gaussian pRFs.

The HCP 7T retinotopy (Benson et al., 2018) is the data set pRF tools are compared on: 181 participants, each with
91,282 grayordinates (fsLR 32k cortex, 29,696 left and 29,716 right vertices of 32,492, and 31,870 subcortical
voxels), 6 runs of 300 frames at TR 1 s. This module makes subjects of that shape with known pRFs:

- :func:`hcp_prf_subject`: in memory (data, apertures, pixel grid, truth) for the library;
- :func:`make_hcp_like`: written as a BIDS dataset with fMRIPrep-like CIFTI outputs
  (``space-fsLR_den-91k_bold.dtseries.nii``), the apertures as a stimulus file (``--model prf2d``), or a GLM task
  of the same grayordinates (``--model glm``).

A fraction of the grayordinates (``signal_fraction``) carry a 2-D Gaussian pRF inside the stimulated field with
the SPM HRF, the rest noise only; the noise is Gaussian and white (its level ``noise``, the pRF responses scaled
per grayordinate to a standard deviation of ``snr`` times it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .example_dataset import _write_json, write_confounds, write_skeleton
from .synthetic import bar_apertures

__all__ = ["HCP_GRAYORDINATES", "HCPLikeSubject", "grayordinates", "hcp_prf_subject", "make_hcp_like"]

HCP_GRAYORDINATES = 91_282
#: fsLR 32k: vertices per hemisphere, those in the medial-wall-free cortex of each, subcortical voxels
_VERTICES, _LEFT, _RIGHT, _SUBCORTICAL = 32_492, 29_696, 29_716, 31_870
_EXTENT = 8.0  # the synthetic bars span ±8° (HCP: a 16° field of view)


@dataclass
class HCPLikeSubject:
    """An HCP-shaped subject in memory.

    Attributes
    ----------
    data : DataFrame, shape (runs × frames, grayordinates)
        BOLD, indexed by (run, time).
    paradigm : DataFrame, shape (runs × frames, pixels)
        Apertures (0..1) of every frame, indexed like ``data``.
    grid : DataFrame, shape (pixels, 2)
        The pixels' ``x`` and ``y`` in degrees of visual angle.
    truth : DataFrame, shape (grayordinates, 5)
        The planted ``x``, ``y``, ``sd``, ``baseline``, ``amplitude``; NaN position and size where there is none.
    signal : ndarray of bool, shape (grayordinates,)
        The grayordinates with a planted pRF.
    tr : float
        Repetition time (s).
    """

    data: pd.DataFrame
    paradigm: pd.DataFrame
    grid: pd.DataFrame
    truth: pd.DataFrame
    signal: np.ndarray
    tr: float


def grayordinates(n_grayordinates=HCP_GRAYORDINATES):
    """The brain models of an fsLR ``den-91k`` CIFTI file (left and right cortex, subcortical voxels in the 2 mm
    MNI grid), scaled in proportion when ``n_grayordinates`` is not 91,282.

    Parameters
    ----------
    n_grayordinates : int
        Total number of grayordinates.

    Returns
    -------
    nibabel.cifti2.BrainModelAxis
    """
    scale = n_grayordinates / HCP_GRAYORDINATES
    left = int(round(_LEFT * scale))
    right = int(round(_RIGHT * scale))
    subcortical = n_grayordinates - left - right
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    shape = (91, 109, 91)
    ijk = np.stack(np.unravel_index(np.arange(subcortical) * 11 % np.prod(shape), shape), axis=1)
    ijk = ijk[np.lexsort(ijk.T[::-1])]
    return (nib.cifti2.BrainModelAxis.from_surface(np.arange(left) * _VERTICES // max(left, 1), _VERTICES,
                                                  "CortexLeft")
            + nib.cifti2.BrainModelAxis.from_surface(np.arange(right) * _VERTICES // max(right, 1), _VERTICES,
                                                    "CortexRight")
            + nib.cifti2.BrainModelAxis.from_mask(_subcortical_mask(ijk, shape), affine=affine, name="thalamus_left"))


def _subcortical_mask(ijk, shape):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(ijk.T)] = True
    return mask


def _bars(n_side=40):
    """Synthetic bar apertures: six directions, 20 positions and 5 blank frames each (150 frames), ±8°."""
    paradigm, grid = bar_apertures(n_side=n_side, extent=_EXTENT, n_steps=20, blank=5)
    return paradigm.to_numpy(np.float32), grid


def hcp_prf_subject(n_grayordinates=HCP_GRAYORDINATES, n_runs=6, n_frames=300, tr=1.0, signal_fraction=0.3,
                    apertures=None, grid=None, noise=1.0, snr=(0.5, 2.0), seed=0):
    """An HCP-shaped pRF subject in memory.

    Parameters
    ----------
    n_grayordinates : int
        Grayordinates (voxels) of the subject.
    n_runs, n_frames : int
        Runs, and frames of each run.
    tr : float
        Repetition time (s), one aperture per frame.
    signal_fraction : float
        Fraction of grayordinates with a planted pRF.
    apertures : array or DataFrame, shape (frames, pixels), optional
        The stimulus movie, repeated to fill every run (for example the Szinte et al. apertures with their
        ``grid``); synthetic bars over ±8° (40 × 40 pixels, 150 frames) by default.
    grid : DataFrame, shape (pixels, 2), optional
        ``x``, ``y`` of the apertures' pixels (degrees); required with ``apertures``.
    noise : float
        Standard deviation of the white Gaussian noise.
    snr : (float, float)
        The range of the planted responses' standard deviation, in units of ``noise`` (uniform per grayordinate).
    seed : int

    Returns
    -------
    HCPLikeSubject
    """
    from ..models import GaussianPRF2DWithHRF, SPMHRFModel

    rng = np.random.default_rng(seed)
    if apertures is None:
        movie, grid = _bars()
    else:
        if grid is None:
            raise ValueError("apertures need their pixel grid (grid=...)")
        movie = np.asarray(apertures, dtype=np.float32)
    repeats = int(np.ceil(n_frames / len(movie)))
    run_movie = np.tile(movie, (repeats, 1))[:n_frames]
    index = pd.MultiIndex.from_product([range(1, n_runs + 1), range(n_frames)], names=["run", "time"])
    paradigm = pd.DataFrame(np.tile(run_movie, (n_runs, 1)), index=index)
    x_range = (float(grid["x"].min()), float(grid["x"].max()))
    y_range = (float(grid["y"].min()), float(grid["y"].max()))

    signal = rng.random(n_grayordinates) < signal_fraction
    n_signal = int(signal.sum())
    truth = pd.DataFrame(np.nan, index=pd.RangeIndex(n_grayordinates), columns=["x", "y", "sd", "baseline", "amplitude"])
    truth["baseline"] = rng.normal(100.0, 10.0, n_grayordinates)
    truth["amplitude"] = 0.0
    planted = pd.DataFrame({"x": rng.uniform(*(0.8 * np.array(x_range)), n_signal),
                            "y": rng.uniform(*(0.8 * np.array(y_range)), n_signal),
                            "sd": rng.uniform(0.5, 3.0, n_signal), "baseline": 0.0, "amplitude": 1.0})
    model = GaussianPRF2DWithHRF(grid, hrf_model=SPMHRFModel(tr))
    data = np.empty((len(index), n_grayordinates), dtype=np.float32)
    data[:] = rng.normal(0.0, noise, data.shape).astype(np.float32)
    data += truth["baseline"].to_numpy(np.float32)
    columns = np.flatnonzero(signal)
    scale = np.empty(n_signal)
    for start in range(0, n_signal, 4000):
        chunk = slice(start, min(start + 4000, n_signal))
        response = model.predict(paradigm, planted.iloc[chunk].reset_index(drop=True)).to_numpy()
        spread = response.std(axis=0)
        scale[chunk] = rng.uniform(*snr, chunk.stop - chunk.start) * noise / np.maximum(spread, 1e-12)
        data[:, columns[chunk]] += (response * scale[chunk]).astype(np.float32)
    planted["amplitude"] = scale
    for label in ("x", "y", "sd", "amplitude"):
        truth.loc[columns, label] = planted[label].to_numpy()
    return HCPLikeSubject(data=pd.DataFrame(data, index=index), paradigm=paradigm, grid=grid, truth=truth,
                          signal=signal, tr=tr)


def _write_cifti(path, values, axis, tr):
    series = nib.cifti2.SeriesAxis(start=0.0, step=tr, size=values.shape[0], unit="SECOND")
    nib.Cifti2Image(np.ascontiguousarray(values, dtype=np.float32), header=(series, axis)).to_filename(path)
    _write_json(Path(str(path).replace(".dtseries.nii", ".json")), {"RepetitionTime": tr})


def make_hcp_like(root, model="prf2d", n_subjects=1, n_runs=None, n_frames=None, n_grayordinates=HCP_GRAYORDINATES,
                  signal_fraction=0.3, seed=0):
    """Write an HCP-like BIDS dataset with fMRIPrep-like CIFTI outputs and return the first subject's truth.

    Parameters
    ----------
    root : path
        Folder of the raw dataset (``derivatives/fmriprep`` inside it).
    model : {'prf2d', 'glm'}
        ``prf2d``: task ``prf``, 6 runs × 300 frames (default) of bar sweeps, the apertures in
        ``stimuli/bars.npz`` (+ ``bars.json``) named by each run's events; ``glm``: task ``localizer``, 4 runs ×
        900 frames (default) of three conditions' events, effects planted in ``signal_fraction`` of the
        grayordinates.
    n_subjects : int
    n_runs, n_frames : int, optional
        Runs and frames per run (defaults above); TR 1 s.
    n_grayordinates : int
    signal_fraction : float
    seed : int

    Returns
    -------
    HCPLikeSubject or DataFrame
        pRF: the first subject (its ``truth`` and ``signal``); GLM: the planted effects (grayordinates ×
        conditions) of the first subject.
    """
    root = Path(root)
    tr = 1.0
    task = "prf" if model == "prf2d" else "localizer"
    n_runs = n_runs or (6 if model == "prf2d" else 4)
    n_frames = n_frames or (300 if model == "prf2d" else 900)
    subjects, fmriprep = write_skeleton(root, f"bids_encoder HCP-like ({model})", (task,), tr, n_subjects)
    axis = grayordinates(n_grayordinates)
    rng = np.random.default_rng(seed)
    first = None
    if model == "prf2d":
        movie, grid = _bars()
        side = int(round(np.sqrt(movie.shape[1])))
        (root / "stimuli").mkdir(parents=True, exist_ok=True)
        frames = np.tile(movie, (int(np.ceil(n_frames / len(movie))), 1))[:n_frames].reshape(n_frames, side, side)
        np.savez_compressed(root / "stimuli" / "bars.npz", frames.astype(np.uint8))
        coords = np.linspace(-_EXTENT, _EXTENT, side)
        _write_json(root / "stimuli" / "bars.json", {
            "VisualAngleX": [coords[0], coords[-1]], "VisualAngleY": [coords[0], coords[-1]],
            "Description": "bars sweeping in six directions, one frame per volume"})
    for number, subject in enumerate(subjects):
        func, deriv = root / f"sub-{subject}" / "func", fmriprep / f"sub-{subject}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        deriv.mkdir(parents=True, exist_ok=True)
        if model == "prf2d":
            made = hcp_prf_subject(n_grayordinates, n_runs, n_frames, tr, signal_fraction, seed=seed + number)
            first = made if first is None else first
            values = made.data.to_numpy()
        else:
            values, effects = _glm_runs(rng, n_grayordinates, n_runs, n_frames, tr, signal_fraction, func, subject)
            first = effects if first is None else first
        for run in range(1, n_runs + 1):
            stem = f"sub-{subject}_task-{task}_run-{run}"
            if model == "prf2d":
                pd.DataFrame({"onset": [0.0], "duration": [n_frames * tr], "trial_type": ["bars"],
                              "stim_file": ["bars.npz"]}).to_csv(func / f"{stem}_events.tsv", sep="\t", index=False)
            _write_cifti(deriv / f"{stem}_space-fsLR_den-91k_bold.dtseries.nii",
                         values[(run - 1) * n_frames:run * n_frames], axis, tr)
            write_confounds(deriv, stem, rng, n_frames)
        del values
    return first


def _glm_runs(rng, n_grayordinates, n_runs, n_frames, tr, signal_fraction, func, subject):
    """Three conditions' events per run (written), and every run's BOLD with effects in ``signal_fraction`` of the
    grayordinates (returned: runs × frames stacked, and the effects)."""
    from nilearn.glm.first_level import compute_regressor

    conditions = ["faces", "houses", "scenes"]
    effects = pd.DataFrame(0.0, index=pd.RangeIndex(n_grayordinates), columns=conditions)
    active = rng.random(n_grayordinates) < signal_fraction
    for condition in conditions:
        effects.loc[active, condition] = rng.uniform(0.5, 2.0, int(active.sum()))
    values = np.empty((n_runs * n_frames, n_grayordinates), dtype=np.float32)
    frame_times = np.arange(n_frames) * tr
    for run in range(1, n_runs + 1):
        onsets, t = [], 6.0
        while t < n_frames * tr - 20:
            onsets.append(round(t, 1))
            t += rng.uniform(4.0, 8.0)
        events = pd.DataFrame({"onset": onsets, "duration": np.round(rng.uniform(1.0, 3.0, len(onsets)), 1),
                               "trial_type": rng.choice(conditions, len(onsets))})
        events.to_csv(func / f"sub-{subject}_task-localizer_run-{run}_events.tsv", sep="\t", index=False,
                      float_format="%.1f")
        rows = slice((run - 1) * n_frames, run * n_frames)
        values[rows] = rng.normal(100.0, 1.0, (n_frames, n_grayordinates))
        for condition in conditions:
            chosen = events[events["trial_type"] == condition]
            regressor = compute_regressor(np.vstack([chosen["onset"], chosen["duration"], np.ones(len(chosen))]),
                                          "spm", frame_times)[0][:, 0]
            values[rows] += np.outer(regressor, effects[condition].to_numpy()).astype(np.float32)
    return values, effects
