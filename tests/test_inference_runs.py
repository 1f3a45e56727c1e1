"""First level over several runs by run blocks (bids_encoder.inference.run_blocks): each run's own columns
(confounds, spikes, intercept) inverted by Woodbury's identity, the conditions by their Schur complement; equal to a
dense float64 Prais-Winsten GLS, and chosen only where it applies."""

import numpy as np
import pytest
from test_inference_glm import _dense_gls  # Prais-Winsten GLS in float64, the reference

from bids_encoder.inference import run_blocks
from bids_encoder.inference.glm import first_level


def _ar1_noise(rng, n_time, n_voxels, rho):
    noise = np.zeros((n_time, n_voxels))
    noise[0] = rng.normal(size=n_voxels) / np.sqrt(1 - rho**2)
    for t in range(1, n_time):
        noise[t] = rho * noise[t - 1] + rng.normal(size=n_voxels)
    return noise


def _design(rng, labels, per_run, n_confounds, censored, local_condition=False):
    """Conditions spanning the runs (the first only in the first run with ``local_condition``), each run's own
    confounds, spike columns, run intercepts; rows of the runs in the order of ``labels``."""
    runs = np.repeat(labels, per_run)
    n_time = len(runs)
    conditions = rng.normal(size=(n_time, 3))
    if local_condition:
        conditions[runs != labels[0], 0] = 0.0
    blocks = [conditions]
    for label in labels:
        own = np.zeros((n_time, n_confounds))
        own[runs == label] = rng.normal(size=(per_run, n_confounds))
        blocks.append(own)
    blocks.append(np.eye(n_time)[:, censored])
    blocks += [(runs == label)[:, None].astype(float) for label in labels]
    return runs, conditions, np.hstack(blocks)


@pytest.mark.parametrize("labels, local_condition, baseline", [([1, 2, 3], False, 100.0), ([2, 1], True, 0.0)])
def test_run_blocks_equal_dense_gls(labels, local_condition, baseline, monkeypatch):
    """Three runs, or two whose rows come in the other order with a condition present in one run only; censored
    volumes; data with or without a large mean: effects, variances, F, sigma² and the AR coefficients equal the
    dense GLS, and the run-block solver is the one used."""
    rng = np.random.default_rng(7)
    per_run, n_voxels = 70, 24
    n_time = per_run * len(labels)
    censored = np.zeros(n_time, bool)
    censored[[4, per_run + 9, n_time - 1]] = True
    runs, conditions, design = _design(rng, labels, per_run, 5, censored, local_condition)
    data = (conditions @ rng.normal(size=(3, n_voxels)) + baseline
            + np.vstack([_ar1_noise(rng, per_run, n_voxels, rho) for rho in np.linspace(0.5, 0.1, len(labels))]))
    data[censored] += 25.0
    data = data.astype(np.float32)
    columns = design.shape[1]
    t = {"first": np.eye(columns)[0], "diff": np.eye(columns)[1] - np.eye(columns)[2],
         "intercept": np.eye(columns)[-1]}  # a run mean: the centred data's means put back
    f = {"all": np.eye(columns)[:3]}
    made = []
    original = run_blocks._RunBlocks.make.__func__

    def recording(cls, *arguments, **options):
        made.append(original(cls, *arguments, **options))
        return made[-1]

    monkeypatch.setattr(run_blocks._RunBlocks, "make", classmethod(recording))
    result = first_level(data, design, runs, t, f, censored=censored)
    assert made and made[0] is not None  # the run-block solver, not the per-voxel Cholesky
    assert result.df == n_time - columns
    sorted_runs = np.unique(runs)
    for voxel in range(0, n_voxels, 5):
        y = data[:, voxel].astype(float)
        ols = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        ols[censored] = 0.0
        for i, label in enumerate(sorted_runs):
            e = ols[runs == label]
            assert result.rho[i, voxel] == pytest.approx((e[1:] * e[:-1]).sum() / (e**2).sum(), abs=1e-5)
        beta, inverse, ssr = _dense_gls(design, y, runs, result.rho[:, voxel])
        sigma2 = ssr / result.df
        assert result.sigma2[voxel] == pytest.approx(sigma2, rel=1e-5)
        for name, c in t.items():
            assert result.contrasts[name]["effect"][voxel] == pytest.approx(c @ beta, rel=1e-5, abs=1e-6)
            assert result.contrasts[name]["variance"][voxel] == pytest.approx(c @ inverse @ c * sigma2, rel=1e-5)
        k = f["all"]
        expected = (k @ beta) @ np.linalg.solve(k @ inverse @ k.T, k @ beta) / (3 * sigma2)
        assert result.contrasts["all"]["F"][voxel] == pytest.approx(expected, rel=1e-5)


def test_run_blocks_only_where_they_apply():
    """A contrast on a run's intercept, or a run in two separate blocks of rows, goes through the per-voxel
    Cholesky solver (None from make); the conditions' contrasts of an ordinary design do not."""
    from bids_encoder.inference.glm import _Runs, _SharedDesign

    rng = np.random.default_rng(1)
    censored = np.zeros(80, bool)
    runs, _, design = _design(rng, [1, 2], 40, 3, censored)
    conditions = {"a": np.eye(design.shape[1])[0]}
    intercept = {"b": np.eye(design.shape[1])[-1]}
    for t, split, expected in ((conditions, False, True), (intercept, False, True), (conditions, True, False)):
        labels = np.r_[runs[:20], runs[40:60], runs[20:40], runs[60:]] if split else runs
        rows = np.r_[0:20, 40:60, 20:40, 60:80] if split else np.arange(80)
        structure = _Runs(labels, censored)
        shared = _SharedDesign(design[rows], structure, t, {})
        weighed = np.any(np.vstack(list(t.values())) != 0, axis=0)
        assert (run_blocks._RunBlocks.make(shared, design[rows], weighed) is not None) == expected


def test_per_voxel_hrfs_by_run_blocks_equal_dense_gls(monkeypatch):
    """Per-voxel HRF kernels, each run's own confounds, a censored volume: the run-block solver (chosen) gives the
    effects, variances, F and sigma² of a dense per-voxel GLS loop."""
    from bids_encoder.hrf import lagged
    from bids_encoder.inference import voxel_blocks
    from bids_encoder.inference.voxel_designs import LaggedRegressors

    rng = np.random.default_rng(12)
    per_run, n_voxels, n_taps = 60, 20, 6
    censored = np.zeros(2 * per_run, bool)
    censored[75] = True
    runs, _, design = _design(rng, [1, 2], per_run, 4, censored)
    nuisance = design[:, 3:]
    events = (rng.random((2 * per_run, 3)) < 0.2).astype(np.float32)
    shifted = lagged(events, n_taps, [per_run, per_run]).numpy().astype(float)  # (3, T, K)
    kernels = rng.gamma(2.0, 1.0, size=(n_voxels, n_taps)) * np.linspace(1.5, 0.2, n_taps)
    kernels /= kernels.sum(axis=1, keepdims=True)
    signal = np.einsum("rtk,vk,rv->tv", shifted, kernels, rng.normal(2.0, 1.0, size=(3, n_voxels)))
    data = (signal + 50 + np.vstack([_ar1_noise(rng, per_run, n_voxels, r) for r in (0.5, 0.2)])).astype(np.float32)
    design = np.hstack([np.zeros((2 * per_run, 3)), nuisance])
    weights = np.zeros(design.shape[1])
    weights[:3] = [1.0, -0.5, 0.25]
    t, f = {"a": weights}, {"two": np.eye(design.shape[1])[:2]}
    made = []
    original = voxel_blocks._VoxelRunBlocks.make.__func__

    def recording(cls, *arguments):
        made.append(original(cls, *arguments))
        return made[-1]

    monkeypatch.setattr(voxel_blocks._VoxelRunBlocks, "make", classmethod(recording))
    result = first_level(data, design, runs, t, f, censored=censored, memory_limit=2_000_000,
                         voxel_regressors=LaggedRegressors(shifted, kernels))
    assert made and made[0] is not None
    for voxel in range(0, n_voxels, 3):
        x = np.hstack([np.einsum("rtk,k->tr", shifted, kernels[voxel]), nuisance])
        y = data[:, voxel].astype(float)
        beta, inverse, ssr = _dense_gls(x, y, runs, result.rho[:, voxel])
        sigma2 = ssr / result.df
        assert result.sigma2[voxel] == pytest.approx(sigma2, rel=1e-5)
        assert result.contrasts["a"]["effect"][voxel] == pytest.approx(weights @ beta, rel=1e-5)
        assert result.contrasts["a"]["variance"][voxel] == pytest.approx(weights @ inverse @ weights * sigma2,
                                                                         rel=1e-5)
        k = f["two"]
        expected = (k @ beta) @ np.linalg.solve(k @ inverse @ k.T, k @ beta) / (2 * sigma2)
        assert result.contrasts["two"]["F"][voxel] == pytest.approx(expected, rel=1e-5)
