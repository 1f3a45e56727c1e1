"""Simulated BOLD with known single-trial responses, for the single-trial estimator's tests and benchmark.

Every trial shows one of ``n_conditions`` conditions (each ``n_repeats`` times, spread at random over the runs).
The true response of voxel v to trial t, in percent signal change at its peak, is

    β[t, v] = amplitude[v] · (pattern[c(t), v] + trial_sd · ε[t, v])

with ``pattern`` ~ N(1, condition_sd²) (what repeats) and ε ~ N(0, 1) (trial-to-trial variability, which does not).
Voxels outside ``responsive`` have amplitude 0. Each trial's response is its boxcar convolved with the voxel's own
HRF — an SPM double gamma whose time to peak and dispersion are drawn per voxel (``hrf_peak_sd``,
``hrf_dispersion_range``; voxels share ``n_hrf_shapes`` distinct shapes) — scaled so that one trial's response
peaks at 1, computed here on a 0.05 s grid independently of the estimator's own design code.

Noise (percent signal change): structured noise shared across voxels — per run ``n_noise_components`` smooth
time courses (AR(1), coefficient 0.9, unit variance) with voxel loadings N(0, (structured_sd · load_v)²), ``load_v``
uniform in [0, 2] —, AR(1) noise per voxel (coefficient ``ar``, SD ``noise_sd``), and a linear drift per run and
voxel. BOLD = baseline_v · (1 + signal / 100), baseline_v ~ U(500, 1500).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import signal

from ..models.hrf import spm_hrf

__all__ = ["SingleTrialSimulation", "simulate_single_trials"]

FINE_DT = 0.05  # s


@dataclass
class SingleTrialSimulation:
    """Simulated data and their ground truth."""

    data: np.ndarray  # (time × voxels) float32, BOLD units
    frame_times: list  # one array per run
    trials: pd.DataFrame  # run, onset, duration, condition
    betas: np.ndarray  # (trials × voxels) true responses (peak percent signal change)
    patterns: np.ndarray  # (conditions × voxels) the repeating part, × amplitude
    amplitude: np.ndarray  # (voxels,)
    hrf_peak: np.ndarray  # (voxels,) time to peak of the true HRF (s)
    hrf_dispersion: np.ndarray  # (voxels,)
    noise_loading: np.ndarray  # (voxels,) load_v of the structured noise
    tr: float

    @property
    def responsive(self):
        return self.amplitude > 0


def _responses(onsets, duration, frame_times, peak, dispersion):
    """(time × trials) responses with one HRF, each trial's response peaking at 1."""
    start = frame_times[0] - 32.0
    n_fine = int(np.ceil((frame_times[-1] - start) / FINE_DT)) + 2
    boxcars = np.zeros((n_fine, len(onsets)))
    steps = max(int(round(duration / FINE_DT)), 1)
    for j, onset in enumerate(onsets):
        first = int(round((onset - start) / FINE_DT))
        boxcars[max(first, 0):max(first + steps, 0), j] = 1.0
    kernel = spm_hrf(np.arange(0.0, 32.0, FINE_DT), a1=peak + dispersion, d1=dispersion, a2=16.0 + peak - 5.0)
    peak_value = np.convolve(np.ones(steps), kernel).max()
    convolved = signal.oaconvolve(boxcars, kernel[:, None], axes=0)[:n_fine] / peak_value
    index = np.clip(np.round((frame_times - start) / FINE_DT).astype(int), 0, n_fine - 1)
    return convolved[index]


def _design_trials(rng, n_runs, n_volumes, tr, n_conditions, n_repeats, isi, duration):
    labels = rng.permutation(np.repeat(np.arange(n_conditions), n_repeats))
    per_run = np.array_split(labels, n_runs)
    rows = []
    for run, conditions in enumerate(per_run):
        gaps = rng.uniform(0.75 * isi, 1.25 * isi, len(conditions))
        onsets = 4.0 + np.cumsum(gaps) - gaps[0]
        available = n_volumes * tr - 16.0
        if onsets[-1] > available:
            onsets = onsets * available / onsets[-1]
        rows.append(pd.DataFrame({"run": run, "onset": np.round(onsets, 3), "duration": duration,
                                  "condition": [f"c{c:03d}" for c in conditions]}))
    return pd.concat(rows, ignore_index=True)


def simulate_single_trials(n_voxels=1000, n_runs=4, n_volumes=200, tr=1.5, n_conditions=40, n_repeats=3,
                           isi=4.0, duration=1.0, responsive_fraction=0.5, amplitude_range=(0.5, 2.0),
                           condition_sd=0.5, trial_sd=0.3, hrf_peak_sd=1.0, hrf_dispersion_range=(0.7, 1.4),
                           n_hrf_shapes=40, hrf_shapes=None, n_noise_components=4, structured_sd=1.0, noise_sd=1.0, ar=0.3,
                           drift_sd=0.5, seed=0, chunk=20_000):
    """Simulate BOLD with known single-trial responses (see the module docstring); a :class:`SingleTrialSimulation`.

    ``hrf_peak_sd = 0`` and ``hrf_dispersion_range = (1, 1)`` give every voxel the canonical HRF;
    ``hrf_shapes`` (a sequence of (time to peak, dispersion)) replaces the random shapes: voxels are spread over
    them evenly. ``structured_sd = 0`` removes the shared noise. Voxels are generated in chunks of ``chunk``.
    """
    rng = np.random.default_rng(seed)
    trials = _design_trials(rng, n_runs, n_volumes, tr, n_conditions, n_repeats, isi, duration)
    frame_times = [np.arange(n_volumes) * tr for _ in range(n_runs)]
    n_trials, n_time = len(trials), n_runs * n_volumes
    codes = trials["condition"].str[1:].astype(int).to_numpy()
    responsive = rng.random(n_voxels) < responsive_fraction
    amplitude = np.where(responsive, rng.uniform(*amplitude_range, n_voxels), 0.0)
    if hrf_shapes is None:
        shape_peak = np.clip(5.0 + hrf_peak_sd * rng.standard_normal(n_hrf_shapes), 3.0, 8.0)
        shape_dispersion = rng.uniform(*hrf_dispersion_range, n_hrf_shapes)
        shape_of_voxel = rng.integers(0, n_hrf_shapes, n_voxels)
    else:
        shape_peak, shape_dispersion = (np.asarray(v, dtype=np.float64) for v in zip(*hrf_shapes, strict=True))
        n_hrf_shapes = len(shape_peak)
        shape_of_voxel = rng.permutation(np.arange(n_voxels) % n_hrf_shapes)
    loading = rng.uniform(0.0, 2.0, n_voxels)
    components = []
    for _ in range(n_runs):
        c = signal.lfilter([1.0], [1.0, -0.9], rng.normal(size=(n_volumes + 50, n_noise_components)), axis=0)[50:]
        components.append((c - c.mean(axis=0)) / c.std(axis=0))
    components = np.vstack(components) if n_noise_components else np.zeros((n_time, 0))
    regressors = []
    for s in range(n_hrf_shapes):
        parts = []
        for run, times in enumerate(frame_times):
            x = np.zeros((n_volumes, n_trials))
            rows = np.flatnonzero(trials["run"].to_numpy() == run)
            x[:, rows] = _responses(trials["onset"].to_numpy()[rows], duration, times, shape_peak[s],
                                    shape_dispersion[s])
            parts.append(x)
        regressors.append(np.vstack(parts).astype(np.float32))
    data = np.empty((n_time, n_voxels), np.float32)
    patterns = np.empty((n_conditions, n_voxels), np.float32)
    betas = np.empty((n_trials, n_voxels), np.float32)
    ramp = np.linspace(-1.0, 1.0, n_volumes)
    for a in range(0, n_voxels, chunk):
        cols = np.arange(a, min(a + chunk, n_voxels))
        scale = amplitude[cols].astype(np.float32)
        patterns[:, cols] = scale * (1.0 + condition_sd * rng.standard_normal((n_conditions, cols.size),
                                                                             dtype=np.float32))
        betas[:, cols] = patterns[:, cols][codes] + scale * np.float32(trial_sd) * rng.standard_normal(
            (n_trials, cols.size), dtype=np.float32)
        y = np.zeros((n_time, cols.size), np.float32)
        for s in np.unique(shape_of_voxel[cols]):
            members = np.flatnonzero(shape_of_voxel[cols] == s)
            y[:, members] = regressors[s] @ betas[:, cols[members]]
        if n_noise_components and structured_sd:
            weights = structured_sd * loading[cols] * rng.normal(size=(n_noise_components, cols.size))
            y += (components @ weights).astype(np.float32)
        white = rng.standard_normal((n_time, cols.size), dtype=np.float32) * np.float32(noise_sd * np.sqrt(1 - ar**2))
        for run in range(n_runs):
            rows = slice(run * n_volumes, (run + 1) * n_volumes)
            noise = signal.lfilter([1.0], [1.0, -ar], white[rows], axis=0).astype(np.float32)
            drift = drift_sd * rng.normal(size=cols.size).astype(np.float32)
            y[rows] += noise + ramp[:, None].astype(np.float32) * drift
        baseline = rng.uniform(500.0, 1500.0, cols.size).astype(np.float32)
        data[:, cols] = baseline * (1.0 + y / 100.0)
    return SingleTrialSimulation(data=data, frame_times=frame_times, trials=trials, betas=betas,
                                 patterns=patterns, amplitude=amplitude,
                                 hrf_peak=shape_peak[shape_of_voxel], hrf_dispersion=shape_dispersion[shape_of_voxel],
                                 noise_loading=loading, tr=float(tr))
