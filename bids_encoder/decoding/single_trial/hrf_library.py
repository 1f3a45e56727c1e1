"""A library of haemodynamic response shapes for choosing one HRF per voxel (stage 1 of :func:`fit_single_trials`).

GLMsingle (Prince et al., 2022) picks, for every voxel, the HRF of a fixed library that fits its data best. Its
library was derived from the Natural Scenes Dataset; this one is built here from the SPM double-gamma function
(:func:`~bids_encoder.hrf.spm_hrf`) over a grid of time to peak × dispersion of the positive lobe:

- time to peak 3.5, 4.25, 5, 5.75, 6.5 and 7.25 s (the canonical response peaks at 5 s), the span reported across
  cortical regions and people (e.g. Handwerker et al., 2004, *NeuroImage* 21:1639; Aguirre et al., 1998,
  *NeuroImage* 8:360: peaks between about 3.5 and 7 s);
- dispersion ``d1`` 0.6, 1.0 and 1.6 (full width at half maximum 3.4 to 7.7 s; 1.0 is canonical);
- the positive lobe's delay is ``a1 = peak + d1`` (its mode is ``a1 - d1``); the undershoot moves with the peak
  (``a2 = 16 + peak - 5``), its dispersion (1) and ratio (1/6) are SPM's.

Entries are ordered by time to peak, then dispersion, so the index is interpretable; the canonical SPM HRF is one
of them (:attr:`HRFLibrary.canonical_index`). Every kernel has unit area; the regressors of a fit are then scaled
(:meth:`HRFLibrary.regressors`) so that the response to one trial of the fit's typical duration peaks at 1: betas
are the peak response to a trial, in the units of the data (percent signal change once the data are scaled).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ...models.hrf import spm_hrf
from .lss import _check_trials, convolve_and_sample, fine_boxcars

logger = logging.getLogger(__name__)

__all__ = ["HRFLibrary", "choose_hrf", "DEFAULT_PEAKS", "DEFAULT_DISPERSIONS"]

DEFAULT_PEAKS = (3.5, 4.25, 5.0, 5.75, 6.5, 7.25)  # s
DEFAULT_DISPERSIONS = (0.6, 1.0, 1.6)
CANONICAL = {"a1": 6.0, "d1": 1.0, "a2": 16.0, "d2": 1.0, "c": 1 / 6}
KERNEL_LENGTH = 32.0  # s


class HRFLibrary:
    """SPM double-gamma HRFs over a grid of time to peak × dispersion.

    Parameters
    ----------
    peaks : sequence of float
        Times to peak of the positive lobe's mode (s), ``a1 - d1``.
    dispersions : sequence of float
        Dispersions ``d1`` of the positive lobe.
    undershoot_ratio : float
        Ratio ``c`` of the undershoot to the positive lobe.

    Attributes
    ----------
    parameters : DataFrame
        One row per HRF (index 0…): ``time_to_peak`` (s, of the sampled curve), ``fwhm`` (s), ``a1``, ``d1``,
        ``a2``, ``d2``, ``c`` (the :func:`~bids_encoder.hrf.spm_hrf` arguments).
    canonical_index : int or None
        The entry equal to SPM's canonical HRF (None when the grid does not hold it).
    """

    def __init__(self, peaks=DEFAULT_PEAKS, dispersions=DEFAULT_DISPERSIONS, undershoot_ratio=1 / 6):
        peaks = np.asarray(peaks, dtype=np.float64).ravel()
        dispersions = np.asarray(dispersions, dtype=np.float64).ravel()
        if peaks.size == 0 or dispersions.size == 0 or np.any(peaks <= 0) or np.any(dispersions <= 0):
            raise ValueError("The HRF library needs positive times to peak and dispersions")
        rows = []
        t = np.arange(0.0, KERNEL_LENGTH + 8.0, 0.01)
        for peak in np.sort(peaks):
            for d1 in np.sort(dispersions):
                shape = {"a1": peak + d1, "d1": d1, "a2": 16.0 + peak - 5.0, "d2": 1.0, "c": float(undershoot_ratio)}
                curve = spm_hrf(t, **shape)
                above = t[curve >= curve.max() / 2]
                rows.append({"time_to_peak": float(t[np.argmax(curve)]), "fwhm": float(above[-1] - above[0]),
                             **shape})
        self.parameters = pd.DataFrame(rows)
        self.parameters.index.name = "hrf"
        canonical = [i for i, row in self.parameters.iterrows()
                     if all(np.isclose(row[k], v) for k, v in CANONICAL.items())]
        self.canonical_index = int(canonical[0]) if canonical else None

    def __len__(self):
        return len(self.parameters)

    def shape(self, index):
        """The :func:`~bids_encoder.hrf.spm_hrf` arguments of entry ``index``."""
        row = self.parameters.iloc[int(index)]
        return {k: float(row[k]) for k in ("a1", "d1", "a2", "d2", "c")}

    def kernels(self, dt):
        """Every entry's kernel on a grid of step ``dt`` over [0, 32 s), each of unit sum: (HRFs × taps)."""
        t = np.arange(0.0, KERNEL_LENGTH, dt)
        return np.vstack([spm_hrf(t, **self.shape(i)) * dt for i in range(len(self))])

    def peak_responses(self, duration, dt=0.005):
        """Peak of every entry's response to one trial of ``duration`` seconds (unit-area kernels)."""
        kernels = self.kernels(dt)
        steps = max(int(round(duration / dt)), 1)
        return np.array([np.convolve(np.ones(steps), k).max() for k in kernels])

    def regressors(self, onsets, durations, frame_times, oversampling=16, reference_duration=None, indices=None):
        """Every trial's regressor with every HRF: (HRFs × time × trials), float64.

        Each trial's boxcar is convolved with each kernel on a grid of ``TR / oversampling`` and read at the frame
        times (as :func:`~bids_encoder.decoding.trial_regressors`), then divided by the peak of that HRF's
        response to one trial lasting ``reference_duration`` seconds (default: the median duration), so that
        a beta is the peak response to such a trial whatever the HRF.
        """
        onsets, durations, frame_times = _check_trials(onsets, durations, frame_times)
        indices = range(len(self)) if indices is None else [int(i) for i in indices]
        reference = float(np.median(durations)) if reference_duration is None else float(reference_duration)
        fine, boxcars, dt = fine_boxcars(onsets, durations, frame_times, oversampling)
        kernels = self.kernels(dt)
        peaks = self.peak_responses(reference, dt=min(dt, 0.005))  # the continuous response's peak
        out = np.empty((len(indices), len(frame_times), len(onsets)))
        for position, index in enumerate(indices):
            out[position] = convolve_and_sample(boxcars, kernels[index], fine, frame_times) / peaks[index]
        return out

    def describe(self):
        """The library as a JSON-ready dict (for sidecars)."""
        return {"Family": "SPM double gamma (bids_encoder.hrf.spm_hrf) over time to peak x dispersion",
                "CanonicalIndex": self.canonical_index,
                "Entries": [{"Index": int(i), "TimeToPeak": round(float(r.time_to_peak), 3),
                             "FWHM": round(float(r.fwhm), 3), "a1": float(r.a1), "d1": float(r.d1),
                             "a2": float(r.a2), "d2": float(r.d2), "c": float(r.c)}
                            for i, r in self.parameters.iterrows()],
                "Normalisation": "unit area kernels; regressors divided by the peak response to one trial of the "
                                 "reference duration (betas: peak response to a trial)"}


def choose_hrf(r2, canonical, n_time):
    """Each voxel's HRF from the on/off R² of every entry (HRFs × voxels): the best one when it beats the
    canonical HRF by the Bayesian information criterion of its two extra shape parameters (time to peak and
    dispersion), ``n · ln((1 − R²_canonical) / (1 − R²_best)) > 2 ln n`` with ``n`` the volumes left by the
    nuisance; otherwise the canonical one. (Choosing the best of 18 noisy fits unconditionally costs the voxels
    whose HRF is close to canonical more than it gains, in simulations.)"""
    r2 = np.where(np.isfinite(r2), r2, -np.inf)
    best = np.argmax(r2, axis=0)
    columns = np.arange(r2.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = n_time * np.log(np.maximum(1.0 - r2[canonical], 1e-12) / np.maximum(1.0 - r2[best, columns], 1e-12))
    return np.where(gain > 2.0 * np.log(n_time), best, canonical)
