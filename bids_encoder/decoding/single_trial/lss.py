"""Single-trial regressors, and single-trial response amplitudes by least-squares-separate (LSS; Mumford et al.,
2012)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import signal

from ...models.base import _as_frame, run_lengths
from ...models.hrf import spm_hrf

logger = logging.getLogger(__name__)

__all__ = ["lss_betas", "trial_regressors"]


def trial_regressors(onsets, durations, frame_times, oversampling=16, names=None, hrf=None):
    """One HRF-convolved regressor per trial: its boxcar convolved with the SPM HRF, read at the frame times.

    Parameters
    ----------
    onsets, durations : array, shape (trials,)
        Seconds, on the clock of ``frame_times`` (durations of 0 are impulses of one fine step).
    frame_times : array, shape (time,)
        Acquisition time of every volume (s), increasing and evenly spaced.
    oversampling : int
        Fine steps per volume for the boxcars and the convolution.
    names : sequence of str, optional
        Column names (default ``trial000``, …).
    hrf : dict, optional
        Arguments of :func:`~bids_encoder.hrf.spm_hrf` (``a1``, ``d1``, ``a2``, ``d2``, ``c``) for another shape
        than the canonical one.

    Returns
    -------
    DataFrame, shape (time, trials)
        The HRF kernel sums to one, as in the models: a sustained stimulation gives a plateau of 1.
    """
    onsets, durations, frame_times = _check_trials(onsets, durations, frame_times)
    fine, boxcars, dt = fine_boxcars(onsets, durations, frame_times, oversampling)
    kernel = spm_hrf(np.arange(0.0, 32.0, dt), **(hrf or {})) * dt  # unit sum: a sustained stimulation gives 1
    sampled = convolve_and_sample(boxcars, kernel, fine, frame_times)
    columns = list(names) if names is not None else [f"trial{k:03d}" for k in range(len(onsets))]
    return pd.DataFrame(sampled, index=pd.Index(frame_times, name="time"), columns=columns)


def _check_trials(onsets, durations, frame_times):
    onsets = np.asarray(onsets, dtype=np.float64).ravel()
    durations = np.broadcast_to(np.asarray(durations, dtype=np.float64), onsets.shape)
    frame_times = np.asarray(frame_times, dtype=np.float64).ravel()
    if onsets.size == 0:
        raise ValueError("trial_regressors needs at least one trial")
    if len(frame_times) < 2 or np.any(np.diff(frame_times) <= 0):
        raise ValueError("frame_times must be at least two increasing times")
    if np.any(durations < 0) or not np.all(np.isfinite(onsets)) or not np.all(np.isfinite(durations)):
        raise ValueError("onsets and durations must be finite, durations non-negative")
    return onsets, durations, frame_times


def fine_boxcars(onsets, durations, frame_times, oversampling=16):
    """Every trial's boxcar on a fine grid of step ``TR / oversampling`` that starts 32 s before the earliest of the
    first frame and the first onset; returns (fine times, boxcars (fine time × trials), step)."""
    dt = float(np.median(np.diff(frame_times))) / oversampling
    lead = int(np.ceil(max(frame_times[0] - float(onsets.min()), 0.0) / dt)) + int(np.ceil(32.0 / dt))
    n_fine = lead + int(np.ceil((frame_times[-1] - frame_times[0]) / dt)) + 2
    origin = frame_times[0] - lead * dt
    fine = origin + dt * np.arange(n_fine)
    # fine steps [first, last) are on: the steps whose time is in [onset, onset + duration), at least one
    first = np.clip(np.ceil((onsets - origin) / dt - 1e-6).astype(np.int64), 0, n_fine - 1)
    last = np.clip(np.ceil((onsets + durations - origin) / dt - 1e-6).astype(np.int64), first + 1, n_fine)
    steps = np.arange(len(fine))[:, np.newaxis]
    boxcars = ((steps >= first) & (steps < last)).astype(np.float64)  # (fine time, trials)
    return fine, boxcars, dt


def convolve_and_sample(boxcars, kernel, fine, frame_times):
    """Boxcars (fine time × trials) convolved with a kernel on the same grid, read at the frame times (linear
    interpolation); (time × trials)."""
    convolved = signal.oaconvolve(boxcars, kernel[:, np.newaxis], axes=0)[: len(fine)]
    position = np.clip((frame_times - fine[0]) / (fine[1] - fine[0]), 0, len(fine) - 1)
    below = np.minimum(np.floor(position).astype(np.int64), len(fine) - 2)
    fraction = (position - below)[:, np.newaxis]
    return (1 - fraction) * convolved[below] + fraction * convolved[below + 1]


def lss_betas(trial_regressors, data, confounds=None, trial_types=None, add_intercept=True, rcond=1e-10):
    """Single-trial betas by least-squares-separate: one GLM per trial.

    Trial j's GLM holds its own regressor, the other trials' regressors summed (one regressor, or one per trial
    type with ``trial_types``: Mumford et al.'s LSS-N), the confounds and the intercept(s); its beta is the
    coefficient of trial j's regressor.

    Parameters
    ----------
    trial_regressors : DataFrame or array, shape (time, trials)
        Every trial's predicted response (e.g. :func:`trial_regressors`).
    data : DataFrame or array, shape (time, voxels)
        A (run, time) MultiIndex on ``data`` gives every run its own intercept.
    confounds : DataFrame or array, shape (time, k), optional
    trial_types : sequence, shape (trials,), optional
        Condition of every trial: the other trials of each condition form their own nuisance regressor.
    add_intercept : bool
        Add an intercept (one per run).
    rcond : float
        Relative cut-off of the pseudo-inverses (a condition whose only trial is j leaves an empty regressor,
        which gets no weight).

    Returns
    -------
    DataFrame, shape (trials, voxels)
        Indexed by the regressors' names, columns like ``data``.

    Notes
    -----
    By the Frisch–Waugh–Lovell theorem, projecting the confounds and intercepts out of the regressors and the data
    first gives the same trial coefficients. Every trial's GLM then has 1 + (number of conditions) regressors:
    their Gram matrices (trials × small × small) are pseudo-inverted as one batch, and the products with the
    data reduce to two matrix products shared by all trials, X̃ᵀỸ and SᵀỸ (S the per-condition sums), so the cost
    is that of one GLM over all voxels. float64 numpy.
    """
    regressors = _as_frame(trial_regressors, "trial_regressors")
    frame = _as_frame(data, "data")
    n_time, n_trials = regressors.shape
    if len(frame) != n_time:
        raise ValueError(f"data have {len(frame)} time points but the trial regressors {n_time}")
    nuisance = _nuisance(frame.index if isinstance(data, pd.DataFrame) else None, n_time, confounds, add_intercept)
    x = regressors.to_numpy(np.float64)
    y = frame.to_numpy(np.float64)
    if nuisance is not None:
        basis = _orthonormal_basis(nuisance, rcond)
        x = x - basis @ (basis.T @ x)
        y = y - basis @ (basis.T @ y)
    if trial_types is None:
        codes, n_types = np.zeros(n_trials, dtype=np.int64), 1
    else:
        labels = np.asarray(trial_types)
        if labels.shape != (n_trials,):
            raise ValueError(f"trial_types must have one label per trial ({n_trials}), got {labels.shape}")
        _, codes = np.unique(labels, return_inverse=True)
        codes = codes.ravel()
        n_types = int(codes.max()) + 1
    membership = np.eye(n_types)[codes]  # (trials, types)
    sums = x @ membership  # (time, types)
    # every trial's design: its own regressor and the per-type sums without it — (trials, time, 1 + types)
    others = sums[np.newaxis, :, :] - x.T[:, :, np.newaxis] * membership[:, np.newaxis, :]
    design = np.concatenate([x.T[:, :, np.newaxis], others], axis=2)
    gram = np.einsum("ntk,ntl->nkl", design, design)
    first_row = np.linalg.pinv(gram, rcond=rcond, hermitian=True)[:, 0, :]  # (trials, 1 + types)
    xty, sty = x.T @ y, sums.T @ y  # (trials, voxels), (types, voxels)
    own = first_row[:, 0:1] * xty
    rest = first_row[:, 1:] @ sty - first_row[np.arange(n_trials), 1 + codes][:, np.newaxis] * xty
    betas = own + rest
    return pd.DataFrame(betas.astype(np.float32), index=regressors.columns, columns=frame.columns)


def _nuisance(index, n_time, confounds, add_intercept):
    parts = []
    if confounds is not None:
        values = _as_frame(confounds, "confounds").to_numpy(np.float64)
        if len(values) != n_time:
            raise ValueError(f"confounds have {len(values)} rows, the data {n_time}")
        parts.append(values)
    if add_intercept:
        lengths = run_lengths(index) if index is not None else None
        lengths = lengths or (n_time,)
        parts.append(np.repeat(np.eye(len(lengths)), lengths, axis=0))
    return np.concatenate(parts, axis=1) if parts else None


def _orthonormal_basis(matrix, rcond):
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    keep = s > rcond * max(s.max(initial=0.0), 1e-300)
    return u[:, keep]
