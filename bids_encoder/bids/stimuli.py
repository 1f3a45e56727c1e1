"""Visual stimulus apertures from BIDS ``stimuli/`` for pRF models.

Convention (documented in the README):

- events.tsv has a ``stim_file`` column naming a file under ``BIDS_DIR/stimuli/``; the event's onset is when its
  first frame is shown (and its duration, when given, must match the frames).
- The file holds apertures as NIfTI ``x × y × 1 × t`` (or ``x × y × t``), or NumPy ``.npy`` / ``.npz`` (first array)
  ``t × x × y``. Values are scaled so that the largest is 1 (1 = stimulus fully present at that pixel).
- A JSON sidecar (``stimuli/<name>.json``, the stem without extensions) gives the visual angle, in degrees, of the
  centres of the first and last pixels along x and y: ``"VisualAngleX": [-8.9, 8.9], "VisualAngleY": [5.0, -5.0]``
  (a descending pair means the first row is the top), and ``"FrameRate"`` in Hz (default: one frame per volume).
- Frames are averaged into volumes: volume k holds the mean aperture over [t_k − TR/2, t_k + TR/2). Frames shown
  before or after the run's volumes are left out with a warning; a run during which no frame is shown is an error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .layout import InputError

logger = logging.getLogger(__name__)

__all__ = ["read_apertures", "stimulus_sidecar", "run_apertures"]


def stimulus_sidecar(path):
    """The JSON sidecar of a stimulus file (``movie.nii.gz`` → ``movie.json``)."""
    path = Path(path)
    stem = path.name.split(".")[0]
    sidecar = path.with_name(stem + ".json")
    if not sidecar.is_file():
        raise InputError(f"Stimulus file {path.name} has no sidecar {sidecar.name} with VisualAngleX/VisualAngleY",
                         exit_code=66)
    try:
        content = json.loads(sidecar.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{sidecar.name} is not valid JSON: {error}", exit_code=65) from error
    for key in ("VisualAngleX", "VisualAngleY"):
        value = content.get(key)
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
                and value[0] != value[1]):
            raise InputError(f"{sidecar.name}: {key} must be [first, last] pixel-centre angles in degrees",
                             exit_code=65)
    rate = content.get("FrameRate")
    if rate is not None and not (isinstance(rate, (int, float)) and rate > 0):
        raise InputError(f"{sidecar.name}: FrameRate must be a positive number of frames per second", exit_code=65)
    return content


def read_apertures(path):
    """Frames (t × x × y float32, max 1) of a stimulus file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Stimulus file {path.name} not found in stimuli/", exit_code=66)
    name = path.name
    try:
        if name.endswith((".nii", ".nii.gz")):
            frames = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
            if frames.ndim == 4 and frames.shape[2] == 1:
                frames = frames[:, :, 0, :]
            if frames.ndim != 3:
                raise ValueError(f"expected x × y × 1 × t, got shape {frames.shape}")
            frames = np.moveaxis(frames, -1, 0)
        elif name.endswith(".npy"):
            frames = np.load(path, allow_pickle=False).astype(np.float32)
        elif name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                frames = archive[archive.files[0]].astype(np.float32)
        else:
            raise ValueError("use NIfTI (x × y × 1 × t) or NumPy .npy/.npz (t × x × y)")
    except Exception as error:
        raise InputError(f"Cannot read stimulus file {name}: {' '.join(str(error).split())}", exit_code=65) from error
    if frames.ndim != 3 or min(frames.shape) < 1:
        raise InputError(f"Stimulus file {name} must hold t × x × y apertures, got shape {frames.shape}",
                         exit_code=65)
    if not np.all(np.isfinite(frames)) or frames.max() <= 0:
        raise InputError(f"Stimulus file {name} has non-finite values or no positive aperture", exit_code=65)
    return frames / frames.max()


def grid_coordinates(sidecar, shape):
    """Pixel centres (x, y in degrees) in the order of ``frames.reshape(t, -1)`` (x-major)."""
    xs = np.linspace(*sidecar["VisualAngleX"], shape[0])
    ys = np.linspace(*sidecar["VisualAngleY"], shape[1])
    x, y = np.meshgrid(xs, ys, indexing="ij")
    return pd.DataFrame({"x": x.ravel(), "y": y.ravel()})


def run_apertures(events_path, stimuli_dir, n_volumes, tr, start_time=0.0):
    """The apertures of one run at TR resolution: (volumes × pixels DataFrame, grid coordinates DataFrame, the
    stimulus files used).

    Every event with a ``stim_file`` places its frames from its onset on; volumes without a stimulus are blank.
    """
    name = Path(events_path).name
    try:
        events = pd.read_csv(events_path, sep="\t", na_values=["n/a"])
    except pd.errors.EmptyDataError as error:
        raise InputError(f"{name} is empty", exit_code=65) from error
    if "stim_file" not in events.columns or "onset" not in events.columns:
        raise InputError(f"{name} needs onset and stim_file columns for a pRF model", exit_code=65)
    events = events.dropna(subset=["stim_file"])
    if events.empty:
        raise InputError(f"{name} names no stim_file", exit_code=65)
    paradigm, grid, shape, stimuli = None, None, None, {}  # stimuli: path → (frames, sidecar), each read once
    frame_times = start_time + np.arange(n_volumes) * tr
    clipped = []
    for _, event in events.iterrows():
        relative = Path(str(event["stim_file"]))
        if relative.is_absolute() or ".." in relative.parts:
            raise InputError(f"{name}: stim_file {relative} must be a path inside stimuli/", exit_code=65)
        path = Path(stimuli_dir) / relative
        if path not in stimuli:
            stimuli[path] = read_apertures(path), stimulus_sidecar(path)
        frames, sidecar = stimuli[path]
        if shape is None:
            shape = frames.shape[1:]
            grid = grid_coordinates(sidecar, shape)
            paradigm = np.zeros((n_volumes, int(np.prod(shape))), dtype=np.float64)
            coverage = np.zeros(n_volumes)  # fraction of each volume's TR with a stimulus file on
        elif frames.shape[1:] != shape or not grid.equals(grid_coordinates(sidecar, shape)):
            raise InputError(f"{name}: stimulus files of one run must share the pixel grid", exit_code=65)
        rate = float(sidecar.get("FrameRate", 1.0 / tr))
        onset = float(event["onset"])
        length = len(frames) / rate
        duration = event.get("duration")
        if duration is not None and np.isfinite(duration) and duration > 0 and abs(duration - length) > max(
                1.0 / rate, 1e-3):
            raise InputError(f"{name}: {relative} has {len(frames)} frames at {rate:g} Hz ({length:g} s) but the "
                             f"event lasts {duration:g} s", exit_code=65)
        # each frame is shown for 1/rate s; each volume averages what was on screen during its TR
        oversampling = max(4, int(np.ceil(4 * tr * rate)))
        fine = frame_times[0] - tr / 2 + (np.arange(n_volumes * oversampling) + 0.5) * tr / oversampling
        frame = np.floor((fine - onset) * rate + 1e-9).astype(int)
        shown = (frame >= 0) & (frame < len(frames))
        weights = np.zeros((n_volumes, len(frames)))
        np.add.at(weights, (np.arange(len(fine))[shown] // oversampling, frame[shown]), 1.0 / oversampling)
        paradigm += weights @ frames.reshape(len(frames), -1)
        coverage += weights.sum(axis=1)
        outside = len(frames) - int(np.unique(frame[shown]).size)  # frames shown before or after the run's TRs
        if outside:
            clipped.append(f"{relative} from {onset:g} s: {outside} of {len(frames)} frames")
    if not coverage.any():
        raise InputError(f"{name}: no stimulus frame is shown during the run (0 to {n_volumes * tr:g} s: "
                         f"{n_volumes} volumes × {tr:g} s)", exit_code=65)
    if clipped:
        logger.warning("%s: stimuli shown partly outside the run (%s); the frames inside it are used", name,
                       "; ".join(clipped))
    logger.info("%s: %d × %d aperture pixels, %d of %d volumes with a stimulus", name, shape[0], shape[1],
                int((coverage > 0).sum()), n_volumes)
    return pd.DataFrame(paradigm.astype(np.float32)), grid, list(stimuli)
