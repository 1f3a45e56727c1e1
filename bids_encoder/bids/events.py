"""events.tsv → regressors at the frame times of a run.

Two products:
- :func:`convolved_design`: each condition's boxcar (× modulation) built on a fine grid (TR / oversampling),
  convolved there with the SPM HRF, and sampled at the frame times: exact for any onset and duration (the same
  construction as nilearn's ``compute_regressor``).
- :func:`occupancy_paradigm`: the un-convolved neural paradigm at TR resolution, each volume holding the time
  the condition was on during the TR centred on it (for models that convolve themselves, such as per-voxel HRF
  fits); timing is then exact to within half a TR.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..hrf import spm_hrf
from .derivatives import bids_label
from .layout import InputError

__all__ = ["OVERSAMPLING", "read_events", "convolved_design", "occupancy_paradigm"]

OVERSAMPLING = 16  # fine time bins per TR in which events are sampled before convolution or averaging

REQUIRED = ("onset", "duration")


def read_events(path, n_volumes, tr, condition_column="trial_type", modulation_column=None,
                modulation_optional=False):
    """Read and check an events.tsv; returns onset, duration, condition (BIDS label) and modulation.

    With ``modulation_optional``, a missing ``modulation_column`` means unit modulation instead of an error.
    """
    try:
        events = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except pd.errors.EmptyDataError as error:
        raise InputError(f"{path.name if hasattr(path, 'name') else path} is empty", exit_code=65) from error
    name = getattr(path, "name", str(path))
    missing = [column for column in REQUIRED + (condition_column,) if column not in events.columns]
    if missing:
        raise InputError(f"{name} lacks the column(s) {missing}", exit_code=65)
    if events.empty:
        raise InputError(f"{name} has no events", exit_code=65)
    if modulation_column is not None and modulation_column not in events.columns and modulation_optional:
        modulation_column = None
    if modulation_column is not None and modulation_column not in events.columns:
        raise InputError(f"{name} has no modulation column {modulation_column!r}", exit_code=65)
    events = events.dropna(subset=[condition_column])
    onset = events["onset"].to_numpy(float)
    duration = events["duration"].fillna(0.0).to_numpy(float)
    if not np.all(np.isfinite(onset)):
        raise InputError(f"{name} has missing onsets", exit_code=65)
    if np.any(duration < 0):
        raise InputError(f"{name} has negative durations", exit_code=65)
    run_length = n_volumes * tr
    if np.any(onset >= run_length) or np.any(onset < -tr):
        raise InputError(f"{name} has onsets outside the run (0 to {run_length:g} s)", exit_code=65)
    modulation = np.ones(len(events)) if modulation_column is None else events[modulation_column].fillna(0.0).to_numpy(float)
    return pd.DataFrame({"onset": onset, "duration": duration,
                         "condition": [bids_label(c) for c in events[condition_column].astype(str)],
                         "modulation": modulation})


def _fine_boxcars(events, conditions, frame_times, oversampling, tr):
    """Boxcars on bins [g_i, g_i + dt): each bin holds the fraction of it an event covers (× modulation).

    The grid starts 32 s before the first frame and passes exactly through every frame time.
    """
    dt = tr / oversampling
    n_before = int(np.ceil(32.0 / dt))
    grid = frame_times[0] + dt * np.arange(-n_before, (len(frame_times) - 1) * oversampling + 2)
    boxcars = np.zeros((len(grid), len(conditions)))
    for column, condition in enumerate(conditions):
        chosen = events[events["condition"] == condition]
        for onset, duration, value in chosen[["onset", "duration", "modulation"]].to_numpy():
            stop = onset + max(duration, dt)  # an impulse (duration 0) lasts one fine step, as in nilearn
            first = max(int(np.floor((onset - grid[0]) / dt)), 0)
            last = min(int(np.ceil((stop - grid[0]) / dt)), len(grid))
            edges = grid[first:last]
            coverage = np.clip(np.minimum(edges + dt, stop) - np.maximum(edges, onset), 0.0, None) / dt
            boxcars[first:last, column] += value * coverage
    return grid, boxcars


def convolved_design(events, n_volumes, tr, start_time=0.0, oversampling=OVERSAMPLING, conditions=None, hrf=None):
    """HRF-convolved regressors (time × conditions) sampled at the frame times ``start_time + k·tr``.

    Exact for piecewise-constant inputs: the kernel is the HRF integrated over each fine bin (Simpson's rule).

    Parameters
    ----------
    events : DataFrame from :func:`read_events`
    hrf : dict of :func:`spm_hrf` arguments (a1, d1, a2, d2, c), optional
    """
    conditions = sorted(events["condition"].unique()) if conditions is None else list(conditions)
    frame_times = start_time + np.arange(n_volumes) * tr
    grid, boxcars = _fine_boxcars(events, conditions, frame_times, oversampling, tr)
    dt = tr / oversampling
    edges = np.arange(0.0, 32.0 + dt, dt)
    shape = {"c": 0.167, **(hrf or {})}
    kernel = dt / 6 * (spm_hrf(edges[:-1], **shape) + 4 * spm_hrf(edges[:-1] + dt / 2, **shape)
                       + spm_hrf(edges[1:], **shape))  # ∫ h over each bin; the HRF has unit area → unit gain
    frames = np.searchsorted(grid, frame_times - dt / 2)  # grid indices of the frame times
    values = np.zeros((n_volumes, len(conditions)))
    for i in range(len(conditions)):
        full = np.convolve(boxcars[:, i], kernel)
        values[:, i] = full[frames - 1]  # response at g_i comes from bins before it
    return pd.DataFrame(values, columns=conditions, index=pd.Index(frame_times, name="time"))


def occupancy_paradigm(events, n_volumes, tr, start_time=0.0, oversampling=OVERSAMPLING, conditions=None):
    """Neural regressors at TR resolution: the time-averaged boxcar over the TR centred on each frame."""
    conditions = sorted(events["condition"].unique()) if conditions is None else list(conditions)
    frame_times = start_time + np.arange(n_volumes) * tr
    grid, boxcars = _fine_boxcars(events, conditions, frame_times, oversampling, tr)
    bins = np.clip(np.floor((grid - frame_times[0]) / tr + 0.5).astype(int), -1, n_volumes)
    values = np.zeros((n_volumes, len(conditions)))
    inside = (bins >= 0) & (bins < n_volumes)
    np.add.at(values, bins[inside], boxcars[inside])
    return pd.DataFrame(values / oversampling, columns=conditions, index=pd.Index(frame_times, name="time"))
