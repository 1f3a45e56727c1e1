"""GPU checks (marked ``gpu``; skipped without a visible GPU; ``benchmarks/gpu.sh`` runs them): every fitter gives
the CPU's results on the GPU to float32 tolerance, the GPU's memory stays within ``memory_limit``, ``--device
gpu`` runs end to end, and with several GPUs the chunks go to all of them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from bids_encoder.models import GaussianPRF2DWithHRF, LinearModelWithBaselineHRF, SPMHRFModel
from bids_encoder.optimize import ParameterFitter, WeightFitter
from bids_encoder.optimize.recipes import fit_prf2d

GPUS = tf.config.list_logical_devices("GPU")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPUS, reason="no GPU visible")]


def _prf_problem(n_voxels=300, n_side=20, n_time=160, seed=0):
    rng = np.random.default_rng(seed)
    side = np.linspace(-5, 5, n_side)
    gx, gy = np.meshgrid(side, side)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    positions = np.tile(np.linspace(-6, 6, 40), n_time // 40)
    horizontal = np.abs(gx.ravel()[None] - positions[:, None]) < 1.0
    vertical = np.abs(gy.ravel()[None] - positions[:, None]) < 1.0
    bars = np.where((np.arange(n_time) // 40 % 2 == 0)[:, None], horizontal, vertical)
    paradigm = pd.DataFrame(bars.astype(np.float32))
    model = GaussianPRF2DWithHRF(grid, hrf_model=SPMHRFModel(tr=1.5))
    truth = pd.DataFrame({"x": rng.uniform(-3, 3, n_voxels), "y": rng.uniform(-3, 3, n_voxels),
                          "sd": rng.uniform(0.8, 2.0, n_voxels), "baseline": rng.normal(0, 1, n_voxels),
                          "amplitude": rng.uniform(1, 3, n_voxels)})
    return model, paradigm, model.simulate(paradigm, truth, noise=0.3, random_state=seed + 1)


def _glm_problem(n_voxels=400, n_time=200, seed=0):
    rng = np.random.default_rng(seed)
    paradigm = pd.DataFrame((rng.random((n_time, 3)) < 0.15).astype(np.float32), columns=["a", "b", "c"])
    truth = pd.DataFrame({"baseline": rng.normal(20, 2, n_voxels), "hrf_delay": rng.uniform(4.5, 6.5, n_voxels),
                          "hrf_dispersion": rng.uniform(0.7, 1.3, n_voxels)})
    weights = pd.DataFrame(rng.normal(1, 0.3, (3, n_voxels)), index=paradigm.columns)
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(1.5, unique_hrfs=True), weights=weights)
    return model, paradigm, truth, model.simulate(parameters=truth, noise=0.1, random_state=seed + 1)


def _on(device, function):
    with tf.device(device):
        return function()


@pytest.mark.parametrize("fitter", ["weights", "lm_hrf", "adam_hrf", "prf_recipe", "grid"])
def test_cpu_and_gpu_agree(fitter):
    if fitter in ("weights", "lm_hrf", "adam_hrf"):
        model, paradigm, truth, data = _glm_problem()

        def run():
            if fitter == "weights":
                return WeightFitter(model, truth[["hrf_delay", "hrf_dispersion"]], data, paradigm).fit().to_numpy()
            estimator = ParameterFitter(model, data, paradigm, devices=[tf.config.list_logical_devices()[0].name])
            optimizer = "lm" if fitter == "lm_hrf" else "adam"
            return estimator.fit(init_pars=truth.assign(hrf_delay=5.5), optimizer=optimizer, max_n_iterations=60,
                                 min_n_iterations=60, progressbar=False).to_numpy()
    else:
        model, paradigm, data = _prf_problem()

        def run():
            if fitter == "grid":
                estimator = ParameterFitter(model, data, paradigm)
                return estimator.fit_grid(np.linspace(-4, 4, 9), np.linspace(-4, 4, 9), [0.8, 1.5, 2.5], None, None,
                                          use_correlation_cost=True, progressbar=False).to_numpy()
            return fit_prf2d(model, data, paradigm, progressbar=False).parameters.to_numpy()

    cpu = _on("/CPU:0", run)
    gpu = _on(GPUS[0].name, run)
    np.testing.assert_allclose(gpu, cpu, rtol=2e-3, atol=2e-3)


def test_gpu_memory_stays_within_the_limit():
    model, paradigm, data = _prf_problem(n_voxels=3000)
    limit = 200_000_000
    device = GPUS[0].name.split("device:")[-1]
    with tf.device(GPUS[0].name):
        estimator = ParameterFitter(model, data, paradigm, memory_limit=limit)
        start = estimator.fit_grid(np.linspace(-4, 4, 9), np.linspace(-4, 4, 9), [0.8, 1.5, 2.5], None, None,
                                   use_correlation_cost=True, progressbar=False)
        tf.config.experimental.reset_memory_stats(device)
        before = tf.config.experimental.get_memory_info(device)["current"]
        estimator.fit(init_pars=estimator.refine_baseline_and_amplitude(start), optimizer="lm", progressbar=False)
    peak = tf.config.experimental.get_memory_info(device)["peak"] - before
    assert len(set(estimator.chunk_devices)) >= 1 and peak <= 1.5 * limit, f"peak {peak / 1e6:.0f} MB"


def test_every_gpu_gets_chunks():
    if len(GPUS) < 2:
        pytest.skip("one GPU: the split is tested on logical CPU devices (test_devices.py)")
    model, paradigm, data = _prf_problem(n_voxels=600)
    estimator = ParameterFitter(model, data, paradigm, memory_limit=20_000_000)
    start = estimator.fit_grid(np.linspace(-4, 4, 9), np.linspace(-4, 4, 9), [0.8, 1.5, 2.5], None, None,
                               use_correlation_cost=True, progressbar=False)
    estimator.fit(init_pars=estimator.refine_baseline_and_amplitude(start), optimizer="lm", progressbar=False)
    assert {name.rsplit(":", 1)[-1] for name in estimator.chunk_devices} == {str(i) for i in range(len(GPUS))}


def test_device_gpu_end_to_end(tmp_path):
    from bids_encoder.cli import main
    from bids_encoder.datasets.example_dataset import make_example_dataset

    bids = tmp_path / "bids"
    make_example_dataset(bids, n_subjects=1, n_runs=2, n_volumes=80)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--device", "gpu", "--no-report", "--cv", "loro",
                 "--work-dir", str(tmp_path / "work")])
    assert code == 0
    sidecar = json.loads(next(out.glob("sub-01/func/*_stat-rsquared_statmap.json")).read_text())
    assert sidecar["Processing"]["Device"] == "GPU" or sidecar.get("Device") == "GPU"


@pytest.mark.parametrize("n_runs", [1, 2])
def test_first_level_inference_cpu_and_gpu_agree(n_runs):
    """The first-level AR(1) inference (one run: the Woodbury solver; two runs: per-voxel Cholesky) gives the CPU's
    effects, z and F on the GPU to float32 tolerance."""
    from bids_encoder.inference import first_level

    rng = np.random.default_rng(5)
    n_time, n_voxels = 240, 3000
    runs = np.repeat(np.arange(1, n_runs + 1), n_time // n_runs)
    regressors = rng.normal(size=(n_time, 4))
    design = np.column_stack([regressors] + [(runs == r).astype(float) for r in np.unique(runs)])
    data = (regressors @ rng.normal(size=(4, n_voxels)) + 100 + rng.normal(size=(n_time, n_voxels))).astype(np.float32)
    t = {"a": np.eye(design.shape[1])[0]}
    f = {"all": np.eye(design.shape[1])[:4]}
    cpu = _on("/CPU:0", lambda: first_level(data, design, runs, t, f))
    gpu = _on(GPUS[0].name, lambda: first_level(data, design, runs, t, f))
    for stat in ("effect", "variance", "z"):
        np.testing.assert_allclose(gpu.contrasts["a"][stat], cpu.contrasts["a"][stat], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu.contrasts["all"]["F"], cpu.contrasts["all"]["F"], rtol=1e-4)
    np.testing.assert_allclose(gpu.rho, cpu.rho, atol=1e-5)
