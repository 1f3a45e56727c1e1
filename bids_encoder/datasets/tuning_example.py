"""fMRIPrep-like BIDS datasets with planted 1-D tuning: numerosity (log-Gaussian) or orientation (von Mises).

Layout as :mod:`bids_encoder.datasets.example_dataset` (``space-MNI152NLin2009cAsym_res-2`` volumes, brain mask,
confounds; optionally fsaverage-style GIFTI surfaces with ``surface_vertices`` per hemisphere, and the same data as
a CIFTI dtseries with ``cifti=True``). Each run's
events.tsv has ``onset``, ``duration``, ``trial_type`` and the stimulus column (``numerosity`` or
``orientation``): stimulus events (``trial_type`` ``stimulus``) show one value each, balanced within the run, and
``response`` events (value ``n/a``) follow some of them — a nuisance with its own planted effect.

BOLD = baseline + Σ_k tuning_v(value_k) · regressor_k + effect_v · regressor_response + drift + Gaussian noise
(SD ``noise``), where regressor_k is the events of value k convolved with the SPM HRF (or, with ``hrf_delay``, the
SPM shape with another delay) by nilearn's
``compute_regressor`` (independent of bids_encoder's own design code) and the tuning amplitude is such that one
event at the preferred value evokes a BOLD response peaking at ``amplitude`` × the noise SD. Several runs with
≥ 8 trials per value and run: enough for leave-one-run-out cross-validation and single-trial decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from nilearn.glm.first_level import compute_regressor

from .example_dataset import write_cifti_run, write_skeleton, write_surface_run, write_volume_run

__all__ = ["TuningTruth", "make_tuning_dataset", "NUMEROSITIES", "ORIENTATIONS"]

NUMEROSITIES = (1, 2, 3, 4, 5, 6, 7)
ORIENTATIONS = tuple(np.arange(8) * 22.5)  # degrees, period 180


@dataclass
class TuningTruth:
    """Ground truth: per subject, preferred value and width (volume arrays inside ``mask``; surfaces: L then R)."""

    root: Path
    kind: str  # 'numerosity' or 'orientation'
    column: str
    values: tuple
    tr: float
    mask: np.ndarray
    affine: np.ndarray
    preferred: dict = field(default_factory=dict)  # subject → 3-D array (NaN outside the mask)
    width: dict = field(default_factory=dict)  # subject → 3-D array: log-space sd, or kappa
    surface_preferred: dict = field(default_factory=dict)  # subject → (2 · vertices,)
    events: dict = field(default_factory=dict)  # (subject, run) → events DataFrame


def _tuning(kind, values, preferred, width):
    """(values × voxels) tuning-curve heights, peak 1."""
    values = np.asarray(values, float)[:, np.newaxis]
    if kind == "numerosity":
        return np.exp(-0.5 * ((np.log(values) - np.log(preferred)) / width) ** 2)
    delta = np.radians(2 * (values - preferred))  # period 180 → the full circle
    return np.exp(width * (np.cos(delta) - 1.0))


def _draw(kind, rng, n):
    if kind == "numerosity":
        return np.exp(rng.uniform(np.log(1.5), np.log(6.0), n)), rng.uniform(0.3, 0.6, n)
    return rng.uniform(0.0, 180.0, n), rng.uniform(1.0, 3.0, n)


def _events(rng, values, n_per_value, n_volumes, tr, column, duration):
    """Stimulus events in a shuffled balanced order, 4–6 s apart; a response event 1 s after a third of them."""
    order = rng.permutation(np.repeat(np.asarray(values, float), n_per_value))
    onsets = 6.0 + np.cumsum(np.r_[0.0, rng.uniform(4.0, 6.0, len(order) - 1)])
    keep = onsets < n_volumes * tr - 16.0
    order, onsets = order[keep], np.round(onsets[keep], 1)
    stimulus = pd.DataFrame({"onset": onsets, "duration": duration, "trial_type": "stimulus", column: order})
    chosen = rng.random(len(onsets)) < 1 / 3
    response = pd.DataFrame({"onset": onsets[chosen] + duration + 1.0, "duration": 0.5, "trial_type": "response",
                             column: np.nan})
    return pd.concat([stimulus, response]).sort_values("onset", kind="stable").reset_index(drop=True)


def _event_peak(duration, tr):
    """Peak of the SPM-convolved response to one event of ``duration`` s (unit height), finely sampled."""
    times = np.arange(0.0, 32.0, tr / 16)
    response = compute_regressor(np.array([[0.0], [duration], [1.0]]), "spm", times)[0][:, 0]
    return float(response.max())


def _delayed_spm(delay):
    """nilearn-style HRF callable (``(tr, oversampling)`` → kernel): SPM's double gamma with the positive lobe's
    delay ``delay`` s (dispersion 1, undershoot 16 s, ratio 1/6), written here with scipy."""
    from scipy.stats import gamma

    def hrf(tr, oversampling=50, time_length=32.0, onset=0.0):
        dt = tr / oversampling
        times = np.linspace(0, time_length, np.rint(time_length / dt).astype(int)) - onset
        kernel = gamma.pdf(times, delay, loc=dt, scale=1.0) - gamma.pdf(times, 16.0, loc=dt, scale=1.0) / 6.0
        return kernel / kernel.sum()

    hrf.__name__ = f"spm_delay{delay:g}"
    return hrf


def _regressors(events, values, column, frame_times, hrf_delay=None):
    """(time × values) SPM-convolved stimulus regressors and the response regressor (nilearn; ``hrf_delay``: the
    SPM shape with that delay of its positive lobe instead of 6 s)."""
    hrf = "spm" if hrf_delay is None else _delayed_spm(hrf_delay)
    columns = []
    for value in values:
        chosen = events[np.isclose(events[column], value)]
        columns.append(compute_regressor(np.vstack([chosen["onset"], chosen["duration"], np.ones(len(chosen))]),
                                         hrf, frame_times)[0][:, 0])
    response = events[events["trial_type"] == "response"]
    nuisance = compute_regressor(np.vstack([response["onset"], response["duration"], np.ones(len(response))]),
                                 hrf, frame_times)[0][:, 0]
    return np.column_stack(columns), nuisance


def make_tuning_dataset(root, kind="numerosity", n_subjects=2, n_runs=2, n_volumes=220, tr=1.5, shape=(8, 8, 6),
                        n_per_value=8, amplitude=1.0, noise=1.0, duration=2.0, seed=0, surface_vertices=0,
                        task=None, cifti=False, hrf_delay=None, nuisance_effect=(0.5, 1.0)):
    """Write a tuning dataset under ``root`` and return its :class:`TuningTruth`.

    Parameters
    ----------
    root : str or Path
        Folder of the raw dataset (created); fMRIPrep-like derivatives go to ``root/derivatives/fmriprep``.
    kind : 'numerosity' (values 1–7, log-Gaussian tuning, preferred 1.5–6, log-sd 0.3–0.6) or 'orientation'
        (8 orientations 0–157.5°, von Mises tuning over the doubled angle, kappa 1–3).
    n_subjects, n_runs, n_volumes : int
        Participants, runs per participant, volumes per run.
    tr : float
        Repetition time (s).
    shape : tuple of 3 int
        Volume shape; the voxels inside a centred ellipsoid carry signal.
    amplitude : float
        Peak BOLD response to one event at the preferred value, in units of the noise SD.
    n_per_value : int
        Trials per value and run (fewer when the run is too short for them all).
    noise : float
        SD of the Gaussian noise (baselines 80–120).
    duration : float
        Duration of the stimulus events (s).
    seed : int
        Seed of every random draw.
    task : str, optional
        Task label; ``kind`` when None.
    surface_vertices : int
        Also write GIFTI surfaces with this many vertices per hemisphere (0: none).
    cifti : bool
        With ``surface_vertices``: also write the same surface data as a CIFTI dtseries (``space-fsLR_den-91k``).
    hrf_delay : float, optional
        Plant every response (stimulus and ``response`` events) with the SPM HRF whose positive lobe peaks at this
        delay (s; the canonical 6 when None).
    nuisance_effect : (low, high)
        Range of the ``response`` events' effect per voxel, in units of the noise SD.

    Returns
    -------
    TuningTruth
        The planted tuning (preferred values and widths per subject), the events and the mask.
    """
    if kind not in ("numerosity", "orientation"):
        raise ValueError(f"kind must be 'numerosity' or 'orientation', got {kind!r}")
    root = Path(root)
    effect_range = nuisance_effect
    rng = np.random.default_rng(seed)
    column = kind
    values = NUMEROSITIES if kind == "numerosity" else ORIENTATIONS
    task = task or kind
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -np.array(shape) + 1.0
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    mask = (grid**2).sum(axis=-1) <= 0.95**2
    truth = TuningTruth(root=root, kind=kind, column=column, values=values, tr=tr, mask=mask, affine=affine)
    subjects, fmriprep = write_skeleton(root, f"bids_encoder {kind} example", [task], tr, n_subjects)
    frame_times = np.arange(n_volumes) * tr
    n_inside = int(mask.sum())
    for number, subject in enumerate(subjects):
        preferred, width = _draw(kind, rng, n_inside)
        truth.preferred[subject] = np.where(mask, 0.0, np.nan)
        truth.preferred[subject][mask] = preferred
        truth.width[subject] = np.where(mask, 0.0, np.nan)
        truth.width[subject][mask] = width
        scale = amplitude * noise / _event_peak(duration, tr)
        heights = scale * _tuning(kind, values, preferred, width)  # values × voxels
        nuisance_effect = rng.uniform(*effect_range, n_inside) * noise
        surface = None
        if surface_vertices:
            surface_preferred, surface_width = _draw(kind, rng, 2 * surface_vertices)
            truth.surface_preferred[subject] = surface_preferred
            surface = scale * _tuning(kind, values, surface_preferred, surface_width)
        baseline = rng.uniform(80, 120, n_inside)
        func = root / f"sub-{subject}" / "func"
        deriv = fmriprep / f"sub-{subject}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        deriv.mkdir(parents=True, exist_ok=True)
        for run in range(1, n_runs + 1):
            stem = f"sub-{subject}_task-{task}_run-{run}"
            events = _events(rng, values, n_per_value, n_volumes, tr, column, duration)
            truth.events[(subject, run)] = events
            events.to_csv(func / f"{stem}_events.tsv", sep="\t", index=False, na_rep="n/a", float_format="%g")
            design, response = _regressors(events, values, column, frame_times, hrf_delay)
            drift = np.linspace(-1, 1, n_volumes) * rng.normal(0, 1)
            inside = (baseline[np.newaxis, :] + design @ heights + np.outer(response, nuisance_effect)
                      + drift[:, np.newaxis] + rng.normal(0, noise, (n_volumes, n_inside)))
            signal = np.zeros((*shape, n_volumes), np.float32)
            signal[mask] = inside.T.astype(np.float32)
            write_volume_run(func, deriv, stem, signal, mask, affine, tr, task, rng)
            if surface is not None:
                values_by_time = (100.0 + design @ surface + drift[:, np.newaxis]
                                  + rng.normal(0, noise, (n_volumes, 2 * surface_vertices)))
                write_surface_run(deriv, stem, values_by_time, number, tr, task)
                if cifti:
                    write_cifti_run(deriv, stem, values_by_time, tr, task)
    return truth
