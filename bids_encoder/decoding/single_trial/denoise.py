"""GLMdenoise (Kay et al., 2013), as GLMsingle uses it: noise regressors from a pool of voxels without a response.

- **Noise pool**: voxels whose on/off model (all trials one condition, the voxel's HRF) has a cross-validated R²
  ≤ 0 (leave one run out; the two halves of a single run) — for every HRF of the library when HRFs are chosen per
  voxel: no shape of the library predicts held-out data.
- **Components**: for every run, the principal components (time courses) of the pool's data after the nuisance
  basis, each voxel's series scaled to unit length first (so that a few noisy voxels do not set them). The on/off
  fit is not removed from them: the pool has no response to remove, and removing it would deplete the components
  in the direction of the task, biasing every voxel's cross-validated R² upwards once they are projected out: the leading eigenvectors of Σ_v r̂_v r̂_vᵀ, accumulated over chunks of voxels. Each
  run's first K components are nuisance regressors of that run (orthogonal to its nuisance basis by construction).
- **Their number** K (one for all voxels, 0 … ``max_components``): see :func:`choose_components`.
"""

from __future__ import annotations

import logging

import numpy as np

from ..._tensorflow import tf

logger = logging.getLogger(__name__)

__all__ = ["NoiseGram", "choose_components", "MAX_COMPONENTS", "MIN_POOL", "STOP_FRACTION"]

MAX_COMPONENTS = 10  # GLMsingle tries 0 … 10
MIN_POOL = 50  # fewer pool voxels than this: no denoising
STOP_FRACTION = 0.95  # the smallest K that reaches this fraction of the best improvement
SIGN_TEST_Z = 2.0  # the improvement must be positive in more voxels than chance by this many SDs


class NoiseGram:
    """Σ r̂ r̂ᵀ per run over the noise-pool voxels (float64), accumulated chunk by chunk."""

    def __init__(self, runs):
        self.grams = [np.zeros((run.n_time, run.n_time)) for run in runs]
        self.counts = [0] * len(runs)

    def add(self, residuals_per_run):
        """``residuals_per_run``: one (time × pool voxels of that run) float32 tensor per run."""
        for number, (gram, residual) in enumerate(zip(self.grams, residuals_per_run, strict=True)):
            norms = tf.sqrt(tf.reduce_sum(tf.square(residual), axis=0, keepdims=True))
            unit = residual / tf.maximum(norms, 1e-12)
            gram += tf.matmul(unit, unit, transpose_b=True).numpy().astype(np.float64)
            self.counts[number] += int(residual.shape[1])

    def components(self, runs, max_components):
        """Each run's leading ``max_components`` eigenvectors (time × K), made orthonormal and orthogonal to the
        run's nuisance basis (they are in its complement up to rounding), and the fraction of the pool's residual
        variance each explains (runs × K)."""
        out, explained = [], []
        for run, gram in zip(runs, self.grams, strict=True):
            values, vectors = np.linalg.eigh(gram)
            order = np.argsort(values)[::-1][:max_components]
            p = vectors[:, order]
            p = p - run.basis @ (run.basis.T @ p)
            q, r = np.linalg.qr(p)
            out.append(q * np.sign(np.diag(r)))
            explained.append(values[order] / max(float(values.sum()), 1e-300))
        return out, np.array(explained)


def choose_components(metric, max_components, stop_fraction=STOP_FRACTION, z=SIGN_TEST_Z):
    """The number of noise components K from a cross-validated metric per K and voxel ((K_max + 1) × voxels).

    The improvement at K is the median over voxels of metric[K] − metric[0] (paired). K is the smallest number
    whose improvement reaches ``stop_fraction`` of the largest one (GLMsingle's ``pcstop`` rule: nearly all of the
    gain with as few regressors as possible), among the K whose metric improves on K = 0 in more voxels than
    chance allows (a sign test, ``z`` standard deviations); 0 when no K qualifies.

    Returns
    -------
    K : int
    curve : list of float
        Median metric over voxels at every K (for the sidecar and the report).
    """
    metric = np.asarray(metric, dtype=np.float64)
    finite = np.all(np.isfinite(metric), axis=0)
    metric = metric[:, finite]
    n = metric.shape[1]
    if n == 0:
        return 0, [float("nan")] * len(metric)
    curve = [float(v) for v in np.median(metric, axis=1)]
    gains = metric - metric[0]
    improvement = np.median(gains, axis=1)
    better = np.mean(gains > 0, axis=1)
    significant = better > 0.5 + z * 0.5 / np.sqrt(n)
    significant[0] = True
    candidates = np.flatnonzero(significant & (improvement > 0))
    if candidates.size == 0:
        return 0, curve
    best = improvement[candidates].max()
    chosen = int(candidates[np.flatnonzero(improvement[candidates] >= stop_fraction * best)[0]])
    logger.info("Noise components: %d of %d (median improvement %.4f, best %.4f, %.0f%% of %d voxels improved)",
                chosen, max_components, improvement[chosen], best, 100 * better[chosen], n)
    return chosen, curve
