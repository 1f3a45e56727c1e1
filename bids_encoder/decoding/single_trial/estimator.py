"""Single-trial betas by GLMsingle's method (Prince et al., 2022), stage by stage, in chunks of voxels.

The model of every voxel is one GLM over all runs: one regressor per trial (its boxcar convolved with the voxel's
HRF), and per run an intercept, Legendre polynomial drifts, the run's confounds and (stage 2) its noise components.
Data are in percent signal change of each run's mean, so betas are the peak percent signal change of the response
to a trial (:class:`~.hrf_library.HRFLibrary` scales the regressors).

0. ``canonical``: least squares with SPM's canonical HRF (the reference; stages switched off give this).
1. ``hrf``: each voxel's HRF is the library entry whose on/off model (all trials one regressor) fits it best.
2. ``denoise``: GLMdenoise's noise components (:mod:`.denoise`) of a pool of voxels without a response; their
   number K (the same in every run and voxel) maximises a cross-validated metric over the voxels that respond
   (whose metric is positive with some K; among up to ``max_selection_voxels`` voxels drawn evenly from all,
   GLMdenoise's choice: a voxel buried in shared noise may predict held-out data only once it is removed): the
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
(trials × voxels) float32, and every chunk's working set is kept under ``memory_limit`` bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..._tensorflow import tf
from . import _kernels as kernels
from .denoise import MAX_COMPONENTS, MIN_POOL, NoiseGram, choose_components
from .design import block_components, build_blocks, build_runs, one_blas_thread, stacked_systems, trial_system
from .hrf_library import HRFLibrary, choose_hrf
from .repeats import MIN_SEPARATION, Repeats
from .ridge import DEFAULT_FRACTIONS

logger = logging.getLogger(__name__)

__all__ = ["fit_single_trials", "SingleTrialResult", "STAGES", "MAX_SELECTION_VOXELS"]

STAGES = ("canonical", "hrf", "denoise", "ridge")
MAX_SELECTION_VOXELS = 10_000
MIN_SELECTION_VOXELS = 10


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
    choices: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def stage_table(self, voxels=None):
        """Median split-half reliability after every stage (rows), over ``voxels`` (mask; default: the voxels
        whose on/off model predicts held-out data, cvR² > 0)."""
        voxels = (self.fitted & (self.cvr2 > 0)) if voxels is None else np.asarray(voxels, bool)
        rows = [{"stage": name, "median_reliability": float(np.nanmedian(values[voxels])) if voxels.any()
                 else float("nan"), "voxels": int(voxels.sum())}
                for name, values in self.stage_reliability.items()]
        return pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame()


def fit_single_trials(data, frame_times, trials, confounds=None, *, hrf="library", library=None, denoise=True,
                      n_components="auto", max_components=MAX_COMPONENTS, ridge=True, fractions=DEFAULT_FRACTIONS,
                      rescale=True, scaling="psc", poly_degree="auto", condition_column="condition",
                      min_separation=MIN_SEPARATION, oversampling=16, reference_duration=None,
                      memory_limit=2_000_000_000, max_selection_voxels=MAX_SELECTION_VOXELS,
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
    memory_limit : int
        Bytes of working memory per chunk of voxels.
    max_selection_voxels : int
        Most voxels used to choose the number of noise components.
    return_stages : bool
        Keep the betas of every stage (``stage_betas``; trials × voxels each).

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
    blocks = build_blocks(runs, frame_times, trials, confounds, library, poly_degree, oversampling,
                          reference_duration)
    order = np.concatenate([run.trials for run in runs])  # estimated trials, run by run
    positions = np.full(len(trials), -1)
    positions[order] = np.arange(order.size)
    conditions = trials[condition_column].to_numpy() if condition_column in trials.columns else None
    repeats = Repeats(conditions, trials["run"].to_numpy(), trials["onset"].to_numpy(), positions,
                      min_separation)
    fit = _Fit(data, runs, blocks, library, repeats, hrf, scaling, memory_limit)
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
    result = fit.estimate(stages, n_k, fractions if ridge else None, rescale, return_stages, len(trials))
    timings["estimate"] = time.perf_counter() - start_time - timings["screen"] - timings["components"]
    result.trials = trials.assign(estimated=estimable)
    result.choices = {**choices, "Stages": stages}
    result.timings = timings
    logger.info("Single-trial betas: %d trials × %d voxels (%d fitted), stages %s, %d noise component(s); %s",
                len(trials), data.shape[1], int(result.fitted.sum()), "+".join(stages), n_k,
                ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return result


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
    if not np.all(np.isfinite(data)):
        raise ValueError("data contain NaN or infinite values")
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


class _Fit:
    """The state shared by the passes: designs, per-voxel screening results, chunk sizes."""

    def __init__(self, data, runs, blocks, library, repeats, hrf, scaling, memory_limit):
        self.data, self.runs, self.blocks, self.library = data, runs, blocks, library
        self.repeats, self.hrf, self.scaling = repeats, hrf, scaling
        self.memory_limit = int(memory_limit)
        self.n_voxels = data.shape[1]
        self.canonical = library.canonical_index
        self.systems = {}
        self.n_free = float(sum(r.n_time - r.basis.shape[1] for r in runs))  # volumes left by the nuisance

    def _chunks(self, per_voxel, voxels=None):
        voxels = np.arange(self.n_voxels) if voxels is None else voxels
        size = max(1, int(self.memory_limit // max(per_voxel, 1)))
        return [voxels[a:a + size] for a in range(0, len(voxels), size)]

    def _load(self, voxels):
        """Scaled data of some voxels (time × v tensor); contiguous ranges are sliced, others gathered."""
        if voxels.size and np.all(np.diff(voxels) == 1):
            block = self.data[:, voxels[0]:voxels[-1] + 1]
        else:
            block = self.data[:, voxels]
        y = kernels.as_tensor(block)
        if self.scaling == "psc":
            y = kernels.scale(y, self.runs, tf.constant(self.means[:, voxels]), self.scaling)
        return y

    # ----------------------------------------------------------------------------------------- pass 1: on/off
    def screen(self, denoise):
        n_time, n_hrf = self.data.shape[0], len(self.library)
        self.means = np.zeros((len(self.runs), self.n_voxels), np.float32)
        self.fitted = np.zeros(self.n_voxels, bool)
        self.hrf_index = np.full(self.n_voxels, -1, np.int64)
        self.on_off_r2 = np.full(self.n_voxels, np.nan, np.float32)
        self.cvr2_k0 = np.full(self.n_voxels, np.nan, np.float32)
        self.pool = np.zeros(self.n_voxels, bool)
        self.gram = NoiseGram(self.runs) if denoise else None
        for voxels in self._chunks(4 * n_time * 6 + 8 * n_hrf * (4 * len(self.blocks) + 8)):
            raw = kernels.as_tensor(self.data[:, voxels[0]:voxels[-1] + 1])
            means, varies = kernels.run_means(raw, self.runs)
            valid = varies.numpy() & (np.all(means.numpy() > 0, axis=0) if self.scaling == "psc" else True)
            self.means[:, voxels] = means.numpy()
            y = kernels.scale(raw, self.runs, means, self.scaling)
            del raw
            run_stats = [kernels.on_off_stats(y[r.start:r.stop], r.basis, r.on_off) for r in self.runs]
            r2, beta = kernels.on_off_fit([s[0] for s in run_stats], [s[1] for s in run_stats],
                                          [s[2] for s in run_stats])
            if self.blocks[0].start == self.runs[0].start and len(self.blocks) == len(self.runs):
                block_stats = run_stats
            else:
                block_stats = [kernels.on_off_stats(y[b.start:b.stop], b.basis, b.on_off) for b in self.blocks]
            cvr2 = kernels.on_off_cv([s[0] for s in block_stats], [s[1] for s in block_stats],
                                     [s[2] for s in block_stats]).numpy()
            r2 = r2.numpy()
            chosen = (choose_hrf(r2, self.canonical, self.n_free) if self.hrf == "library"
                      else np.full(len(voxels), self.canonical))
            columns = np.arange(len(voxels))
            self.fitted[voxels] = valid
            self.hrf_index[voxels] = np.where(valid, chosen, -1)
            self.on_off_r2[voxels] = np.where(valid, r2[chosen, columns], np.nan)
            self.cvr2_k0[voxels] = np.where(valid, cvr2[chosen, columns], np.nan)
            best_cv = np.nanmax(cvr2, axis=0) if self.hrf == "library" else cvr2[self.canonical]
            pool = valid & (best_cv <= 0)
            self.pool[voxels] = pool
            if self.gram is not None and pool.any():
                index = np.flatnonzero(pool)
                beta_np = beta.numpy()[chosen[index], index].astype(np.float32)
                residuals = []
                for run, (_, _, _, residual) in zip(self.runs, run_stats, strict=True):
                    o = tf.constant(run.on_off[:, chosen[index]].astype(np.float32))
                    residuals.append(tf.gather(residual, index, axis=1) - o * beta_np[None, :])
                self.gram.add(residuals)
        logger.info("On/off screening: %d voxels fitted, %d in the noise pool (cvR² ≤ 0), median on/off cvR² %.3f",
                    int(self.fitted.sum()), int(self.pool.sum()), float(np.nanmedian(self.cvr2_k0)))

    # ------------------------------------------------------------------------------- stage 2: how many components
    def _system(self, run, hrf, n_components):
        key = (run.number, int(hrf), int(n_components))
        if key not in self.systems:
            self.systems[key] = trial_system(run, int(hrf), n_components)
        return self.systems[key]

    def choose_components(self, denoise, n_components, max_components, max_selection_voxels):
        if not denoise:
            return 0, None
        limit = min([max_components] + [r.n_time - r.basis.shape[1] - r.trials.size - 1 for r in self.runs])
        if self.pool.sum() < max(MIN_POOL, limit):
            logger.warning("Denoising: %d voxel(s) in the noise pool (cvR² ≤ 0), fewer than %d; no noise components",
                           int(self.pool.sum()), max(MIN_POOL, limit))
            return 0, {"Components": 0, "Reason": f"noise pool of {int(self.pool.sum())} voxels"}
        if limit < 1:
            return 0, {"Components": 0, "Reason": "no degrees of freedom left for noise components"}
        components, explained = self.gram.components(self.runs, limit)
        for run, p in zip(self.runs, components, strict=True):
            run.components = p
        for block in self.blocks:
            block.components = block_components(block, self.runs[block.run])
        choice = {"NoisePool": "voxels whose on/off model has a cross-validated R² <= 0 (every HRF of the library)",
                  "NoisePoolVoxels": int(self.pool.sum()), "MaxComponents": int(limit),
                  "ExplainedVariance": [[round(float(v), 5) for v in row] for row in explained]}
        if n_components != "auto":
            chosen = min(int(n_components), limit)
            return chosen, {**choice, "Components": chosen, "Selection": "fixed"}
        candidates = np.flatnonzero(self.fitted)
        if candidates.size > max_selection_voxels:  # an even sample of the brain, the same on every run
            candidates = np.sort(np.random.default_rng(0).choice(candidates, max_selection_voxels, replace=False))
        by_reliability = self.repeats.usable
        metric = np.concatenate([self._component_metric(chunk, limit, by_reliability)
                                 for chunk in self._chunks(4 * self.data.shape[0] * 6 * (limit + 1), candidates)],
                                axis=1)
        responding = np.nanmax(metric, axis=0) > 0  # the data of some number of components predict held-out data
        if responding.sum() < MIN_SELECTION_VOXELS:
            logger.warning("Denoising: %d voxel(s) predict held-out data with any number of components; too few to "
                           "choose it (none used)", int(responding.sum()))
            return 0, {**choice, "Components": 0, "Reason": f"{int(responding.sum())} voxels predict held-out data"}
        chosen, curve = choose_components(metric[:, responding], limit)
        return chosen, {**choice, "Components": int(chosen), "SelectionVoxels": int(responding.sum()),
                        "CandidateVoxels": int(candidates.size),
                        "Selection": ("cross-validated R² of repeated trials' betas predicted by their partners"
                                      if by_reliability else
                                      "leave-one-run-out cvR² of the on/off model's time series"
                                      if len(self.runs) > 1 else "cvR² of the on/off model between the run's halves"),
                        "MedianMetricPerComponents": [round(v, 5) for v in curve]}

    def _component_metric(self, voxels, limit, by_reliability):
        """(limit + 1) × voxels of the metric that chooses K."""
        y = self._load(voxels)
        hrfs = self.hrf_index[voxels]
        if not by_reliability:
            stats = []
            for block in self.blocks:
                c, e, n, residual = kernels.on_off_stats(y[block.start:block.stop], block.basis, block.on_off)
                stats.append((c, e, n, residual, block.on_off))
            return kernels.component_curve(stats, [b.components for b in self.blocks], hrfs, limit).numpy()
        residuals = [kernels.residualise(y[r.start:r.stop], r.basis) for r in self.runs]
        metric = np.zeros((limit + 1, len(voxels)))
        counts = list(range(limit + 1))
        for h in np.unique(hrfs):
            cols = np.flatnonzero(hrfs == h)
            group = [tf.gather(res, cols, axis=1) for res in residuals]
            betas = kernels.stacked_ols([stacked_systems(r, h, counts) for r in self.runs], group)  # (K, M, Vg)
            repeated = tf.gather(tf.transpose(betas, [1, 0, 2]), self.repeats.rows)
            metric[:, cols] = self.repeats.cv_r2(repeated).numpy()
        return metric

    # ------------------------------------------------------------------------------------ pass 2: the stages
    def estimate(self, stages, n_components, fractions, rescale, return_stages, n_trials):
        hmode = "voxel" if "hrf" in stages else "canonical"
        configs = {"canonical": ("canonical", 0), "hrf": ("voxel", 0), "denoise": (hmode, n_components),
                   "ridge": (hmode, n_components if "denoise" in stages else 0)}
        ladder = self.repeats.reliability_defined or return_stages
        computed = list(stages) if ladder else [stages[-1]]
        needed = list(dict.fromkeys(configs[s] for s in computed))
        order = np.concatenate([run.trials for run in self.runs])
        n_est, n_time = order.size, self.data.shape[0]
        betas = np.full((n_trials, self.n_voxels), np.nan, np.float32)
        stage_betas = {s: np.full((n_trials, self.n_voxels), np.nan, np.float32) for s in computed} \
            if return_stages else {}
        maps = {name: np.full(self.n_voxels, np.nan, np.float32) for name in ("r2", "cvr2", "fraction", "scale",
                                                                              "offset", "reliability")}
        stage_reliability = {s: np.full(self.n_voxels, np.nan, np.float32) for s in computed} if ladder else {}
        voxels = np.flatnonzero(self.fitted)
        voxels = voxels[np.argsort(self.hrf_index[voxels], kind="stable")]
        n_fractions = 0 if fractions is None else len(fractions)
        per_voxel = 4 * n_time * 5 + 8 * n_est * (len(needed) + 3) + 4 * n_est * n_fractions * 12
        dof = float(sum(r.n_time - r.basis.shape[1] - n_components for r in self.runs))
        self.final_hrf = np.full(self.n_voxels, -1, np.int64)
        for chunk in self._chunks(per_voxel, voxels):
            y = self._load(chunk)
            hrfs = self.hrf_index[chunk]
            base = [kernels.residualise(y[r.start:r.stop], r.basis) for r in self.runs]
            del y
            residuals = {0: base}
            for k in {k for _, k in needed if k}:
                residuals[k] = [kernels.residualise(b, r.components[:, :k]) for b, r in zip(base, self.runs,
                                                                                        strict=True)]
            stage_values, final_r2 = {}, np.full(len(chunk), np.nan, np.float32)
            rechosen = {k: self._rechoose(residuals[k], k) for _, k in needed if k and hmode == "voxel"}
            for config in needed:
                mode, k = config
                voxel_hrfs = rechosen.get(k, hrfs)
                groups = ([(np.arange(len(chunk)), self.canonical)] if mode == "canonical" else
                          [(np.flatnonzero(voxel_hrfs == h), h) for h in np.unique(voxel_hrfs)])
                ols = np.zeros((n_est, len(chunk)), np.float32)
                ridged = np.zeros((n_est, len(chunk)), np.float32) if ("ridge" in computed and
                                                                        config == configs["ridge"]) else None
                for cols, h in groups:
                    group = [tf.gather(res, cols, axis=1) for res in residuals[k]]
                    solve = kernels.GroupSolve([self._system(r, h, k) for r in self.runs], group)
                    ols[:, cols] = solve.ols.numpy()
                    final = solve.ols
                    if ridged is not None:
                        final, chosen, a, c = kernels.ridge_group(solve, fractions, self.repeats, rescale, dof)
                        ridged[:, cols] = final.numpy()
                        maps["fraction"][chunk[cols]] = np.asarray(fractions)[chosen]
                        maps["scale"][chunk[cols]], maps["offset"][chunk[cols]] = a, c
                    if config == configs[stages[-1]]:
                        final_r2[cols] = solve.r2(final).numpy()
                for s in computed:
                    if configs[s] == config:
                        stage_values[s] = ridged if s == "ridge" else ols
            final = stage_values[stages[-1]]
            maps["r2"][chunk] = final_r2
            betas[order[:, None], chunk[None, :]] = final
            for s in computed:
                if return_stages:
                    stage_betas[s][order[:, None], chunk[None, :]] = stage_values[s]
                if ladder and self.repeats.reliability_defined:
                    stage_reliability[s][chunk] = self.repeats.split_half(self.repeats.take(stage_values[s])).numpy()
            final_k = configs[stages[-1]][1]
            final_hrfs = rechosen.get(final_k, hrfs) if configs[stages[-1]][0] == "voxel" else \
                np.full(len(chunk), self.canonical)
            self.final_hrf[chunk] = final_hrfs
            maps["cvr2"][chunk] = self._final_cvr2(chunk, final_hrfs, final_k)
        if self.repeats.reliability_defined:
            maps["reliability"] = stage_reliability[stages[-1]]
        if fractions is None:
            maps["scale"][:], maps["offset"][:] = np.nan, np.nan
        return SingleTrialResult(
            betas=betas, trials=None, library=self.library, hrf_index=self.final_hrf, n_components=n_components,
            fraction=maps["fraction"], scale=maps["scale"], offset=maps["offset"], r2=maps["r2"],
            cvr2=maps["cvr2"], on_off_r2=self.on_off_r2, reliability=maps["reliability"], noise_pool=self.pool,
            fitted=self.fitted, stages=list(stages),
            stage_reliability={s: v for s, v in stage_reliability.items()} if self.repeats.reliability_defined
            else {}, stage_betas=stage_betas)

    def _rechoose(self, residuals, n_components):
        """Each voxel's HRF chosen again by the on/off model with the noise components among the nuisance."""
        cross, energy, norms = [], [], []
        for run, residual in zip(self.runs, residuals, strict=True):
            p = run.components[:, :n_components]
            on_off = run.on_off - p @ (p.T @ run.on_off)
            c, e, n, _ = kernels.on_off_stats(residual, None, on_off)
            cross.append(c)
            energy.append(e)
            norms.append(n)
        r2, _ = kernels.on_off_fit(cross, energy, norms)
        return choose_hrf(r2.numpy(), self.canonical, self.n_free - n_components * len(self.runs))

    def _final_cvr2(self, chunk, hrfs, n_components):
        """Leave-one-block-out cvR² of the on/off model with each voxel's HRF and the chosen noise components."""
        if n_components == 0:
            return self.cvr2_k0[chunk]
        y = self._load(chunk)
        stats = []
        for block in self.blocks:
            c, e, n, residual = kernels.on_off_stats(y[block.start:block.stop], block.basis, block.on_off)
            stats.append((c, e, n, residual, block.on_off))
        curve = kernels.component_curve(stats, [b.components for b in self.blocks], hrfs, n_components)
        return curve[n_components].numpy()
