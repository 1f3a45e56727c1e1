"""The passes of :func:`~.estimator.fit_single_trials` over the data, in windows of contiguous voxels.

1. :meth:`Passes.screen`: run means, the on/off model of every HRF (in-sample R², cvR²), each voxel's HRF, the
   noise pool and its residual covariance per run.
2. :meth:`Passes.choose_components`: the number of noise components, on an even sample of voxels.
3. :meth:`Passes.estimate`: every stage's single-trial model; within a window, voxels are grouped by HRF, and a
   group is cut into sub-chunks for the ridge (its tensors are trials × fractions per voxel).

Memory (``memory_limit`` here is what the fit leaves for its chunks): the first pass's windows hold a float32 copy
of their data, its scaled runs and the noise pool's residuals (≈ 20 bytes per volume and voxel, measured with
TensorFlow's temporaries); in the third pass half the budget sizes the windows (≈ 16 bytes per volume and voxel),
half the ridge sub-chunks (≈ 28 bytes per trial, fraction and voxel).
"""

from __future__ import annotations

import logging

import numpy as np

from ..._tensorflow import tf
from . import _kernels as kernels
from .denoise import MIN_POOL, NoiseGram, choose_components
from .design import StackedSystems, block_components, trial_system
from .hrf_library import choose_hrf

logger = logging.getLogger(__name__)

MIN_SELECTION_VOXELS = 10


class Passes:
    """The state shared by the passes: designs, per-voxel screening results, chunk sizes."""

    def __init__(self, data, runs, blocks, selection, library, repeats, hrf, scaling, memory_limit):
        self.data, self.runs, self.blocks, self.library = data, runs, blocks, library
        self.selection = selection  # the blocks whose cvR² chooses each run's noise pool
        self.repeats, self.hrf, self.scaling = repeats, hrf, scaling
        self.memory_limit = int(memory_limit)
        self.n_voxels = data.shape[1]
        self.canonical = library.canonical_index
        self.systems, self.stacks = {}, {}
        self.n_free = float(sum(r.n_time - r.basis.shape[1] for r in runs))  # volumes left by the nuisance


    # ------------------------------------------------------------------------------------------------ helpers
    def _windows(self, per_voxel, share=0.5):
        size = max(1, int(share * self.memory_limit // max(per_voxel, 1)))
        return [np.arange(a, min(a + size, self.n_voxels)) for a in range(0, self.n_voxels, size)]

    def _load_runs(self, voxels):
        """Every run's scaled, centred data of some voxels (a contiguous range is sliced, others gathered)."""
        if voxels.size and voxels[-1] - voxels[0] + 1 == voxels.size:
            block = self.data[:, voxels[0]:voxels[-1] + 1]
        else:
            block = self.data[:, voxels]
        return kernels.scaled_runs(kernels.as_tensor(block), self.runs, tf.constant(self.means[:, voxels]),
                                   self.scaling)

    def _block_data(self, ys, blocks=None):
        """Each block's data from the runs' (the runs themselves, or halves of runs)."""
        blocks = self.blocks if blocks is None else blocks
        if len(blocks) == len(self.runs):
            return ys
        return [ys[b.run][b.start - self.runs[b.run].start:b.stop - self.runs[b.run].start] for b in blocks]

    def _system(self, run, hrf, n_components):
        key = (run.number, int(hrf), int(n_components))
        if key not in self.systems:
            self.systems[key] = trial_system(run, int(hrf), n_components)
        return self.systems[key]

    def _stack(self, run, hrf, counts):
        key = (run.number, int(hrf), len(counts))
        if key not in self.stacks:
            self.stacks[key] = StackedSystems(run, int(hrf), counts)
        return self.stacks[key]

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
        for voxels in self._windows(20 * n_time + 8 * n_hrf * (3 * len(self.blocks) + 6), share=1.0):
            raw = kernels.as_tensor(self.data[:, voxels[0]:voxels[-1] + 1])
            if not np.all(np.isfinite(raw.numpy().sum(axis=0))):
                raise ValueError("data contain NaN or infinite values")
            means, varies = kernels.run_means(raw, self.runs)
            means = means.numpy()
            valid = varies.numpy() & (np.all(means > 0, axis=0) if self.scaling == "psc" else True)
            self.means[:, voxels] = means
            ys = kernels.scaled_runs(raw, self.runs, tf.constant(means), self.scaling)
            del raw
            stats = [kernels.segment_stats(y, r.basis, r.on_off) for y, r in zip(ys, self.runs, strict=True)]
            r2 = kernels.on_off_fit(*zip(*stats, strict=True)).numpy()
            block_stats = stats if len(self.blocks) == len(self.runs) else [
                kernels.segment_stats(y, b.basis, b.on_off) for y, b in zip(self._block_data(ys), self.blocks,
                                                                             strict=True)]
            cvr2 = kernels.on_off_cv(*zip(*block_stats, strict=True)).numpy()
            chosen = (choose_hrf(r2, self.canonical, self.n_free) if self.hrf == "library"
                      else np.full(len(voxels), self.canonical))
            columns = np.arange(len(voxels))
            self.fitted[voxels] = valid
            self.hrf_index[voxels] = np.where(valid, chosen, -1)
            self.on_off_r2[voxels] = np.where(valid, r2[chosen, columns], np.nan)
            self.cvr2_k0[voxels] = np.where(valid, cvr2[chosen, columns], np.nan)
            self.pool[voxels] = valid & (self._best(cvr2) <= 0)
            if self.gram is not None:
                self._add_pools(ys, valid, block_stats)
        logger.info("On/off screening: %d voxels fitted, %d in the noise pool (cvR² ≤ 0), median on/off cvR² %.3f",
                    int(self.fitted.sum()), int(self.pool.sum()), float(np.nanmedian(self.cvr2_k0)))

    def _best(self, cvr2):
        return np.nanmax(cvr2, axis=0) if self.hrf == "library" else cvr2[self.canonical]

    def _add_pools(self, ys, valid, block_stats):
        """Each run's noise pool, chosen by the on/off cvR² of the *other* runs' blocks (cross-fitting), so that
        the choice does not depend on that run's noise; their data after the run's nuisance go into its
        covariance. (A pool chosen on all runs keeps the voxels whose noise happens to anti-correlate with the
        design across runs: the components then miss shared noise along the design, and every voxel's cvR² is
        biased upwards once they are removed. With one run the halves of that run choose.)"""
        if len(self.selection) == len(self.blocks) and len(self.runs) >= 3:
            selection_stats = block_stats
        else:
            selection_stats = [kernels.segment_stats(y, b.basis, b.on_off)
                               for y, b in zip(self._block_data(ys, self.selection), self.selection, strict=True)]
        members = []
        for run in self.runs:
            others = [s for s, b in zip(selection_stats, self.selection, strict=True) if b.run != run.number] \
                if len(self.runs) > 1 else selection_stats
            cvr2 = kernels.on_off_cv(*zip(*others, strict=True)).numpy()
            members.append(np.flatnonzero(valid & (self._best(cvr2) <= 0)))
        self.gram.add([kernels.residual(tf.gather(y, tf.constant(index.astype(np.int32)), axis=1), run.basis)
                       for y, run, index in zip(ys, self.runs, members, strict=True)])

        logger.info("On/off screening: %d voxels fitted, %d in the noise pool (cvR² ≤ 0), median on/off cvR² %.3f",
                    int(self.fitted.sum()), int(self.pool.sum()), float(np.nanmedian(self.cvr2_k0)))

    # ------------------------------------------------------------------------------- stage 2: how many components
    def choose_components(self, denoise, n_components, max_components, max_selection_voxels):
        if not denoise:
            return 0, None
        limit = min([max_components] + [r.n_time - r.basis.shape[1] - r.trials.size - 1 for r in self.runs])
        smallest = min(self.gram.counts)
        if smallest < max(MIN_POOL, limit):
            logger.warning("Denoising: a run's noise pool holds %d voxel(s) (cvR² ≤ 0), fewer than %d; no noise "
                           "components", smallest, max(MIN_POOL, limit))
            return 0, {"Components": 0, "Reason": f"a run's noise pool of {smallest} voxels"}
        if limit < 1:
            return 0, {"Components": 0, "Reason": "no degrees of freedom left for noise components"}
        components, explained = self.gram.components(self.runs, limit)
        for run, p in zip(self.runs, components, strict=True):
            run.components = p
        for block in self.blocks:
            block.components = block_components(block, self.runs[block.run])
        choice = {"NoisePool": "per run, voxels whose on/off model has a cross-validated R² <= 0 (every HRF of the "
                               "library) over the other runs" + (" (halves of runs)" if len(self.runs) < 3 else "")
                               if len(self.runs) > 1 else "voxels whose on/off model has a cvR² <= 0 between the "
                                                           "run's halves",
                  "NoisePoolVoxels": [int(c) for c in self.gram.counts], "MaxComponents": int(limit),
                  "ExplainedVariance": [[round(float(v), 5) for v in row] for row in explained]}
        if n_components != "auto":
            chosen = min(int(n_components), limit)
            return chosen, {**choice, "Components": chosen, "Selection": "fixed"}
        candidates = np.flatnonzero(self.fitted)
        if candidates.size > max_selection_voxels:  # an even sample of the brain, the same on every run
            candidates = np.sort(np.random.default_rng(0).choice(candidates, max_selection_voxels, replace=False))
        by_reliability = self.repeats.usable
        per_voxel = 20 * self.data.shape[0] + 4 * max(self.repeats.n_trials, 1) * (limit + 1) * 8
        size = max(1, int(0.5 * self.memory_limit // per_voxel))
        metric = np.concatenate([self._component_metric(candidates[a:a + size], limit, by_reliability)
                                 for a in range(0, candidates.size, size)], axis=1)
        # voxels whose data predict held-out data on average over the numbers of components (not at the best
        # one: choosing voxels by their best K would favour, among noise voxels, whichever K they peaked at)
        responding = np.nanmean(metric, axis=0) > 0
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
        ys = self._load_runs(voxels)
        hrfs = self.hrf_index[voxels]
        if not by_reliability:
            return kernels.component_curve(self.blocks, self._block_data(ys), hrfs, limit).numpy()
        metric = np.zeros((limit + 1, len(voxels)))
        counts = list(range(limit + 1))
        for h in np.unique(hrfs):
            cols = np.flatnonzero(hrfs == h)
            index = tf.constant(cols.astype(np.int32))
            group = [tf.gather(y, index, axis=1) for y in ys]
            betas = kernels.stacked_ols([self._stack(r, h, counts) for r in self.runs], group)  # (K, M, Vg)
            repeated = tf.gather(tf.transpose(betas, [1, 0, 2]), self.repeats.rows)
            metric[:, cols] = self.repeats.cv_r2(repeated).numpy()
        return metric

    # ------------------------------------------------------------------------------------ pass 3: the stages
    def _on_off_with_components(self, ys, n_components, hrfs):
        """With K components: each voxel's HRF chosen again by the on/off model (library mode), and the on/off
        cvR² with that HRF."""
        rechosen = hrfs
        if self.hrf == "library":
            stats = []
            for y, run in zip(ys, self.runs, strict=True):
                p = run.components[:, :n_components]
                on_off = run.on_off - p @ (p.T @ run.on_off)
                left, py = kernels.energy(y, p)
                cross = tf.cast(tf.matmul(kernels.constant(on_off), y, transpose_a=True), tf.float64)
                base, _ = kernels.energy(y, run.basis)
                stats.append((cross, base - (tf.reduce_sum(tf.square(tf.cast(py, tf.float64)), axis=0)),
                              np.sum(on_off**2, axis=0)))
            r2 = kernels.on_off_fit(*zip(*stats, strict=True)).numpy()
            rechosen = choose_hrf(r2, self.canonical, self.n_free - n_components * len(self.runs))
        curve = kernels.component_curve(self.blocks, self._block_data(ys), rechosen, n_components)
        return rechosen, curve[n_components].numpy()

    def estimate(self, stages, n_components, fractions, rescale, kept, n_trials, result_type):
        hmode = "voxel" if "hrf" in stages else "canonical"
        configs = {"canonical": ("canonical", 0), "hrf": ("voxel", 0), "denoise": (hmode, n_components),
                   "ridge": (hmode, n_components if "denoise" in stages else 0)}
        return_stages = kept.size > 0
        ladder = self.repeats.reliability_defined or return_stages
        computed = list(stages) if ladder else [stages[-1]]
        needed = list(dict.fromkeys(configs[s] for s in computed))
        final = configs[stages[-1]]
        order = np.concatenate([run.trials for run in self.runs])
        n_est, n_time = order.size, self.data.shape[0]
        slot = np.full(self.n_voxels, -1)
        slot[kept] = np.arange(kept.size)
        betas = np.full((n_trials, self.n_voxels), np.nan, np.float32)
        stage_betas = {s: np.full((n_trials, kept.size), np.nan, np.float32) for s in computed} \
            if return_stages else {}
        maps = {name: np.full(self.n_voxels, np.nan, np.float32)
                for name in ("r2", "cvr2", "fraction", "scale", "offset", "ridge_lambda")}
        stage_reliability = {s: np.full(self.n_voxels, np.nan, np.float32) for s in computed}
        final_hrf = np.full(self.n_voxels, -1, np.int64)
        ridging = "ridge" in stages and fractions is not None
        ridge_size = max(1, int(0.5 * self.memory_limit // (28 * max(n_est, 1) * max(len(fractions or [1]), 1))))
        dof = float(sum(r.n_time - r.basis.shape[1] - configs["ridge"][1] for r in self.runs))
        for window in self._windows(16 * n_time + 8 * n_est * (len(needed) + 3)):
            fitted = np.flatnonzero(self.fitted[window])
            if fitted.size == 0:
                continue
            voxels = window[fitted]
            ys = self._load_runs(voxels)
            hrfs = self.hrf_index[voxels]
            left = {0: tf.add_n([kernels.energy(y, r.basis)[0] for y, r in zip(ys, self.runs, strict=True)])}
            if n_components and any(k for _, k in needed):
                drop = tf.add_n([tf.reduce_sum(tf.square(tf.cast(kernels.energy(y, r.components[:, :n_components])[1],
                                                                 tf.float64)), axis=0)
                                 for y, r in zip(ys, self.runs, strict=True)])
                left[n_components] = left[0] - drop
                rechosen, cvr2 = self._on_off_with_components(ys, n_components, hrfs if hmode == "voxel" else
                                                              np.full(voxels.size, self.canonical))
            else:
                rechosen, cvr2 = hrfs, self.cvr2_k0[voxels]
            values = {}
            r2 = np.full(voxels.size, np.nan, np.float32)
            for config in needed:
                mode, k = config
                voxel_hrfs = (np.full(voxels.size, self.canonical) if mode == "canonical" else
                              rechosen if k else hrfs)
                if config == final:
                    final_hrf[voxels] = voxel_hrfs
                ols = np.zeros((n_est, voxels.size), np.float32)
                ridged = np.zeros((n_est, voxels.size), np.float32) if ridging and config == configs["ridge"] \
                    else None
                for h in np.unique(voxel_hrfs):
                    members = np.flatnonzero(voxel_hrfs == h)
                    step = ridge_size if ridged is not None else members.size
                    for a in range(0, members.size, step):
                        cols = members[a:a + step]
                        index = tf.constant(cols.astype(np.int32))
                        solve = kernels.GroupSolve([self._system(r, h, k) for r in self.runs],
                                                   [tf.gather(y, index, axis=1) for y in ys],
                                                   tf.gather(left[k], index))
                        ols[:, cols] = solve.ols.numpy()
                        out = solve.ols
                        if ridged is not None:
                            out, chosen, scale, offset, lam = kernels.ridge_group(solve, fractions, self.repeats,
                                                                                  rescale, dof)
                            ridged[:, cols] = out.numpy()
                            target = voxels[cols]
                            maps["fraction"][target] = np.asarray(fractions)[chosen]
                            maps["scale"][target], maps["offset"][target] = scale, offset
                            maps["ridge_lambda"][target] = lam
                        if config == final:
                            r2[cols] = solve.r2(out).numpy()
                for s in computed:
                    if configs[s] == config:
                        values[s] = ridged if s == "ridge" else ols
            maps["r2"][voxels] = r2
            maps["cvr2"][voxels] = cvr2
            betas[order[:, None], voxels[None, :]] = values[stages[-1]]
            inside = slot[voxels] >= 0
            for s in computed:
                if return_stages and inside.any():
                    stage_betas[s][order[:, None], slot[voxels[inside]][None, :]] = values[s][:, inside]
                if self.repeats.reliability_defined:
                    stage_reliability[s][voxels] = self.repeats.split_half(self.repeats.take(values[s])).numpy()
        if not ridging:
            for name in ("fraction", "scale", "offset", "ridge_lambda"):
                maps[name][:] = np.nan
        return result_type(
            betas=betas, trials=None, library=self.library, hrf_index=final_hrf, n_components=n_components,
            fraction=maps["fraction"], scale=maps["scale"], offset=maps["offset"], r2=maps["r2"],
            cvr2=maps["cvr2"], on_off_r2=self.on_off_r2,
            reliability=stage_reliability[stages[-1]] if self.repeats.reliability_defined
            else np.full(self.n_voxels, np.nan, np.float32),
            noise_pool=self.pool, fitted=self.fitted, stages=list(stages),
            stage_reliability=stage_reliability if self.repeats.reliability_defined else {},
            stage_betas=stage_betas, ridge_lambda=maps["ridge_lambda"])
