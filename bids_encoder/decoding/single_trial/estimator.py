"""Single-trial betas by GLMsingle's method (Prince et al., 2022), stage by stage, in chunks of voxels.

The model of every voxel is one GLM over all runs: one regressor per trial (its boxcar convolved with the voxel's
HRF), and per run an intercept, Legendre polynomial drifts, the run's confounds and (stage 2) its noise components.
Data are in percent signal change of each run's mean, so betas are the peak percent signal change of the response
to a trial (:class:`~.hrf_library.HRFLibrary` scales the regressors).

0. ``canonical``: least squares with SPM's canonical HRF (the reference; stages switched off give this).
1. ``hrf``: each voxel's HRF is the library entry whose on/off model (all trials one regressor) fits it best.
2. ``denoise``: GLMdenoise's noise components (:mod:`.denoise`) of a pool of voxels without a response; their
   number K (the same in every run and voxel) maximises a cross-validated metric over the voxels that respond
   (whose metric is positive on average over K — a voxel buried in shared noise may predict held-out data only
   once it is removed; among up to ``max_selection_voxels`` voxels drawn evenly from all): the
   prediction of repeated trials by their partners
   (:class:`~.repeats.Repeats`), or — without repeated conditions — the leave-one-run-out cvR² of the on/off
   model's time series (GLMdenoise's own criterion).
3. ``ridge``: fractional ridge per voxel (:mod:`.ridge`), the fraction chosen among ``fractions`` by the
   correlation, over the repeated trials, between a trial's least-squares beta (an unbiased measurement, its
   noise independent of its partners') and the mean ridge beta of its partners — or, without repeated
   conditions, by generalised cross-validation of the time series; then each voxel's betas are mapped by least
   squares onto its least-squares betas (scale and offset, ``rescale``), undoing ridge's shrinkage of their mean
   and spread. (A criterion on squared error would reward shrinkage for its own sake: at low reliability a
   constant predicts a noisy beta better than its noisy partners do; the correlation is blind to the scale.)

Two passes over the data: the first fits the on/off models (HRF choice, cvR², the noise pool's residual
covariance per run), the second the single-trial models of every stage, voxels sorted by HRF so that a chunk
shares few designs. Memory: the data stay where they are (float32 chunks are copied), the outputs are
(trials × voxels) float32. ``memory_limit`` is the fit's budget beyond its input data (the project's convention,
:mod:`bids_encoder._memory`): its outputs and the working sets of its chunks, which get what is left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..._memory import resolve_memory_limit
from ._passes import Passes
from .denoise import MAX_COMPONENTS
from .design import build_blocks, build_runs, one_blas_thread
from .hrf_library import HRFLibrary
from .repeats import MIN_SEPARATION, Repeats
from .ridge import DEFAULT_FRACTIONS

logger = logging.getLogger(__name__)

__all__ = ["fit_single_trials", "SingleTrialResult", "STAGES", "MAX_SELECTION_VOXELS", "WORKING_CAP"]

STAGES = ("canonical", "hrf", "denoise", "ridge")
MAX_SELECTION_VOXELS = 10_000
WORKING_CAP = 2_000_000_000  # chunks' working set: larger ones barely speed up (60k voxels × 3,000 volumes × 500
# trials on 2 cores: 39.5 s at 0.5 GB, 29.2 s at 1 GB, 26.2 s at 2 GB, 24.5 s at 4 GB)


@dataclass
class SingleTrialResult:
    """What :func:`fit_single_trials` returns.

    Maps are arrays over voxels (NaN, or −1 for ``hrf_index``, where a voxel is not fitted); ``betas`` is
    (trials × voxels) in the order of the input trials (NaN rows: trials whose response does not reach their run).
    """

    betas: np.ndarray
    trials: pd.DataFrame
    library: HRFLibrary
    hrf_index: np.ndarray
    n_components: int
    fraction: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    r2: np.ndarray
    cvr2: np.ndarray
    on_off_r2: np.ndarray
    reliability: np.ndarray
    noise_pool: np.ndarray
    fitted: np.ndarray
    stages: list
    stage_reliability: dict = field(default_factory=dict)
    stage_betas: dict = field(default_factory=dict)
    ridge_lambda: np.ndarray | None = None
    choices: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def responding(self):
        """Voxels whose on/off model predicts held-out data beyond chance: cvR² above the 95th percentile of
        |cvR²| among the voxels with a negative one (chance fluctuations mirrored: the null voxels' cvR² scatter
        about zero, and almost all negative values are theirs)."""
        return self.fitted & (self.cvr2 > self.responding_threshold)

    @property
    def responding_threshold(self):
        negative = self.cvr2[self.fitted & (self.cvr2 < 0)]
        return float(np.quantile(-negative, 0.95)) if negative.size >= 20 else 0.0

    def stage_table(self, voxels=None):
        """Median split-half reliability after every stage (rows), over ``voxels`` (mask; default:
        :attr:`responding`)."""
        voxels = self.responding if voxels is None else np.asarray(voxels, bool)
        rows = [{"stage": name, "median_reliability": float(np.nanmedian(values[voxels])) if voxels.any()
                 else float("nan"), "voxels": int(voxels.sum())}
                for name, values in self.stage_reliability.items()]
        return pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame()


def fit_single_trials(data, frame_times, trials, confounds=None, *, hrf="library", library=None, denoise=True,
                      n_components="auto", max_components=MAX_COMPONENTS, ridge=True, fractions=DEFAULT_FRACTIONS,
                      rescale=True, scaling="psc", poly_degree="auto", condition_column="condition",
                      min_separation=MIN_SEPARATION, oversampling=16, reference_duration=None,
                      memory_limit=None, max_selection_voxels=MAX_SELECTION_VOXELS,
                      return_stages=False):
    """Single-trial response amplitudes of every voxel, by GLMsingle's three stages (see the module docstring).

    Parameters
    ----------
    data : array (time × voxels)
        The runs one after the other (float32 is used as is, without a copy).
    frame_times : sequence of arrays
        Acquisition time (s) of every volume of each run, on the clock of the trials' onsets.
    trials : DataFrame
        One row per trial: ``run`` (position in ``frame_times``), ``onset``, ``duration`` (s) and, optionally,
        ``condition_column`` naming what repeats (NaN: nothing).
    confounds : array (time × k), optional
        Nuisance columns; each run uses its own rows (their coefficients are per run).
    hrf : 'library' or 'canonical'
        Stage 1 on (an HRF per voxel from ``library``) or off.
    library : HRFLibrary, optional
        Default :class:`~.hrf_library.HRFLibrary` (18 SPM shapes); it must hold the canonical HRF.
    denoise : bool
        Stage 2 (noise components).
    n_components : 'auto' or int
        The number of noise components per run (``'auto'``: chosen by cross-validation among 0…``max_components``).
    ridge : bool
        Stage 3 (fractional ridge).
    fractions : sequence of float in (0, 1]
        Candidate fractions of the least-squares norm (one value: that fraction for every voxel).
    rescale : bool
        Map each voxel's ridge betas onto its least-squares betas (scale and offset).
    scaling : 'psc' or None
        Percent signal change of each run's mean (voxels with a non-positive mean are not fitted), or the data as
        they are.
    poly_degree : 'auto' or int
        Degree of the Legendre drifts per run ('auto': round(minutes / 2), GLMdenoise's rule).
    min_separation : float
        Seconds between two occurrences of a condition in one run for them to cross-validate each other.
    oversampling, reference_duration
        Fine steps per volume for the regressors; the trial duration (s) whose response peaks at 1 (default: the
        median duration).
    memory_limit : int, optional
        Default: the machine's (:func:`bids_encoder._memory.default_memory_limit`). Bytes the fit may hold beyond
        its input data: the outputs, and the chunks of voxels in the passes, which get what is left (at least a
        tenth of the limit, at most :data:`WORKING_CAP`; a warning says when the outputs alone leave less).
    max_selection_voxels : int
        Most voxels used to choose the number of noise components.
    return_stages : bool or array of int
        Keep the betas of every stage (``stage_betas``: trials × voxels each), for every voxel (True) or for the
        voxels of an index array (trials × those voxels, in that order).

    Returns
    -------
    SingleTrialResult
    """
    with one_blas_thread():  # the designs' many small decompositions (the data's products are TensorFlow's)
        return _fit_single_trials(data, frame_times, trials, confounds, hrf, library, denoise, n_components,
                                  max_components, ridge, fractions, rescale, scaling, poly_degree, condition_column,
                                  min_separation, oversampling, reference_duration, memory_limit,
                                  max_selection_voxels, return_stages)


def _fit_single_trials(data, frame_times, trials, confounds, hrf, library, denoise, n_components, max_components,
                       ridge, fractions, rescale, scaling, poly_degree, condition_column, min_separation,
                       oversampling, reference_duration, memory_limit, max_selection_voxels, return_stages):
    start_time = time.perf_counter()
    data, trials, frame_times, confounds, fractions = _check(data, frame_times, trials, confounds, hrf, scaling,
                                                             fractions, n_components, condition_column)
    library = HRFLibrary() if library is None else library
    if library.canonical_index is None:
        raise ValueError("The HRF library must hold SPM's canonical HRF (the reference stage uses it)")
    if reference_duration is None:  # one for all runs: betas are the peak response to a trial of this duration
        reference_duration = float(np.median(trials["duration"].to_numpy(float)))
    runs, estimable = build_runs(frame_times, trials, confounds, library, poly_degree, oversampling,
                                 reference_duration)
    design = (frame_times, trials, confounds, library, poly_degree, oversampling, reference_duration)
    blocks = build_blocks(runs, *design, halves=len(runs) == 1)  # the cvR² of the on/off model
    selection = blocks if len(runs) >= 3 else build_blocks(runs, *design, halves=True)  # each run's noise pool
    order = np.concatenate([run.trials for run in runs])  # estimated trials, run by run
    positions = np.full(len(trials), -1)
    positions[order] = np.arange(order.size)
    conditions = trials[condition_column].to_numpy() if condition_column in trials.columns else None
    repeats = Repeats(conditions, trials["run"].to_numpy(), trials["onset"].to_numpy(), positions,
                      min_separation)
    memory_limit = resolve_memory_limit(memory_limit)
    kept = _kept(return_stages, data.shape[1])
    outputs = 4 * data.shape[1] * (len(trials) + 24 + len(frame_times)) + 4 * len(trials) * kept.size * len(STAGES)
    working = int(memory_limit) - outputs
    if working < 0.1 * memory_limit:
        logger.warning("memory limit %.2f GB: the outputs (%.2f GB) leave less than a tenth of it for the chunks; "
                       "they get a tenth (%.2f GB)", memory_limit / 1e9, outputs / 1e9, 0.1 * memory_limit / 1e9)
        working = int(0.1 * memory_limit)
    working = min(working, WORKING_CAP)
    fit = Passes(data, runs, blocks, selection, library, repeats, hrf, scaling, working)
    timings = {}
    fit.screen(denoise)
    timings["screen"] = time.perf_counter() - start_time
    choices = {"HRF": _hrf_choice(hrf, library), "Repeats": repeats.describe(), "Scaling": scaling,
               "PolynomialDegree": {str(r.number): int(r.poly_degree) for r in runs},
               "NoisePoolVoxels": int(fit.pool.sum())}
    n_k, components_choice = fit.choose_components(denoise, n_components, max_components, max_selection_voxels)
    choices["Denoise"] = components_choice
    timings["components"] = time.perf_counter() - start_time - timings["screen"]
    stages = ["canonical"] + (["hrf"] if hrf == "library" else []) + (["denoise"] if denoise else []) + \
        (["ridge"] if ridge else [])
    choices["Ridge"] = ({"Fractions": [float(f) for f in fractions], "Rescale": bool(rescale),
                         "Selection": ("fixed" if len(fractions) == 1 else
                                       "correlation of repeated trials' least-squares betas with their partners' mean ridge betas"
                                       if repeats.usable else "generalised cross-validation of the time series")}
                        if ridge else None)
    result = fit.estimate(stages, n_k, list(fractions) if ridge else None, rescale, kept, len(trials),
                          SingleTrialResult)
    timings["estimate"] = time.perf_counter() - start_time - timings["screen"] - timings["components"]
    result.trials = trials.assign(estimated=estimable)
    result.choices = {**choices, "Stages": stages}
    result.timings = timings
    logger.info("Single-trial betas: %d trials × %d voxels (%d fitted), stages %s, %d noise component(s); %s",
                len(trials), data.shape[1], int(result.fitted.sum()), "+".join(stages), n_k,
                ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return result


def _kept(return_stages, n_voxels):
    if return_stages is True:
        return np.arange(n_voxels)
    if return_stages is False or return_stages is None:
        return np.zeros(0, np.int64)
    return np.asarray(return_stages, dtype=np.int64).ravel()


def _check(data, frame_times, trials, confounds, hrf, scaling, fractions, n_components, condition_column):
    data = np.asarray(data)
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    if data.ndim != 2:
        raise ValueError(f"data must be (time × voxels), got shape {data.shape}")
    frame_times = [np.asarray(t, dtype=np.float64).ravel() for t in frame_times]
    if sum(len(t) for t in frame_times) != data.shape[0]:
        raise ValueError(f"the runs' frame times add up to {sum(len(t) for t in frame_times)} volumes, the data "
                         f"have {data.shape[0]}")
    if any(len(t) < 2 or np.any(np.diff(t) <= 0) for t in frame_times):
        raise ValueError("every run's frame times must be at least two increasing times")
    missing = [c for c in ("run", "onset", "duration") if c not in trials.columns]
    if missing:
        raise ValueError(f"trials lack the column(s) {missing}")
    trials = trials.reset_index(drop=True)
    run = trials["run"].to_numpy()
    if len(trials) == 0 or not np.all(np.isin(run, np.arange(len(frame_times)))):
        raise ValueError(f"trials need a run number in 0…{len(frame_times) - 1} each (and there must be trials)")
    if confounds is not None:
        confounds = np.asarray(confounds, dtype=np.float64)
        if confounds.ndim != 2 or confounds.shape[0] != data.shape[0] or not np.all(np.isfinite(confounds)):
            raise ValueError(f"confounds must be finite, (time × k) with {data.shape[0]} rows")
    if hrf not in ("library", "canonical"):
        raise ValueError(f"hrf must be 'library' or 'canonical', got {hrf!r}")
    if scaling not in ("psc", None):
        raise ValueError(f"scaling must be 'psc' or None, got {scaling!r}")
    fractions = np.sort(np.unique(np.asarray(fractions, dtype=np.float64).ravel()))
    if fractions.size == 0 or fractions.min() <= 0 or fractions.max() > 1:
        raise ValueError("fractions must be in (0, 1]")
    if n_components != "auto" and (int(n_components) != n_components or n_components < 0):
        raise ValueError(f"n_components must be 'auto' or a non-negative integer, got {n_components!r}")
    return data, trials, frame_times, confounds, fractions


def _hrf_choice(hrf, library):
    if hrf == "canonical":
        return {"Stage": "off", "Model": "SPM canonical", "Index": library.canonical_index}
    return {"Stage": "on", "Selection": "best in-sample R² of the on/off model (all trials one regressor), against "
                                        "the canonical HRF by BIC (2 shape parameters); chosen again with the "
                                        "noise components when denoising",
            "Library": library.describe()}
