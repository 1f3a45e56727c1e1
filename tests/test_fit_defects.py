"""Regression tests for issue #15: library defects that gave wrong results silently."""

import numpy as np
import pandas as pd
import pytest
from conftest import bar_apertures, event_paradigm

from bids_encoder.models import GaussianPRF2DWithHRF, LinearModelWithBaselineHRF, SPMHRFModel
from bids_encoder.optimize import ParameterFitter, WeightFitter

TR = 1.5


def prf_problem(rng, n_voxels=60, noise=0.5, n_side=16):
    paradigm, grid = bar_apertures(n_side=n_side)
    model = GaussianPRF2DWithHRF(grid_coordinates=grid, paradigm=paradigm, hrf_model=SPMHRFModel(TR))
    truth = pd.DataFrame({"x": rng.uniform(-4, 4, n_voxels), "y": rng.uniform(-4, 4, n_voxels),
                          "sd": rng.uniform(0.6, 2.0, n_voxels), "baseline": rng.normal(0, 1, n_voxels),
                          "amplitude": rng.uniform(1.0, 2.0, n_voxels)})
    data = model.simulate(parameters=truth, noise=noise, random_state=int(rng.integers(1e6)))
    return model, paradigm, truth, data


def test_grid_result_does_not_depend_on_memory_limit(rng):
    """Half the voxels pure noise, a grid reaching far outside the screen: the 1 % visibility rule must be
    relative to the whole grid, so a tiny memory_limit (chunks of a few points) gives the same best points."""
    model, paradigm, truth, data = prf_problem(rng, n_voxels=40)
    data.iloc[:, 20:] = rng.standard_normal((len(data), 20)).astype(np.float32)
    values = (np.linspace(-14, 14, 15), np.linspace(-14, 14, 15), np.geomspace(0.5, 3, 4), None, None)
    large = ParameterFitter(model, data, paradigm)
    small = ParameterFitter(model, data, paradigm, memory_limit=60_000)
    expected = large.fit_grid(*values, use_correlation_cost=True, progressbar=False)
    got = small.fit_grid(*values, use_correlation_cost=True, progressbar=False)
    np.testing.assert_array_equal(got[["x", "y", "sd"]].to_numpy(), expected[["x", "y", "sd"]].to_numpy())
    np.testing.assert_allclose(small.grid_r2, large.grid_r2, rtol=1e-5)
    # and the signal voxels are found near their truth
    assert np.median(np.abs(expected["x"].iloc[:20] - truth["x"].iloc[:20])) < 1.5


def two_run_problem(rng, n=120, n_voxels=5):
    paradigm = event_paradigm(rng, 2 * n, 3)
    runs = pd.MultiIndex.from_product([[1, 2], range(n)], names=["run", "time"])
    paradigm.index = runs
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(2.0))
    weights = rng.uniform(0.5, 1.5, (3, n_voxels))
    clean = model.predict(parameters=np.zeros((n_voxels, 1)), weights=weights)
    offsets = np.r_[np.full(n, 100.0), np.full(n, 90.0)][:, None]
    data = clean + offsets + 0.01 * rng.standard_normal(clean.shape)
    return model, paradigm, weights, data.astype(np.float32)


def test_runs_are_read_from_the_data_index_too(rng):
    """(run, time) data with a plain paradigm: two runs (own intercepts, no HRF across the boundary)."""
    model, paradigm, weights, data = two_run_problem(rng)
    plain = paradigm.reset_index(drop=True)
    fitter = WeightFitter(model, None, data, plain)
    np.testing.assert_allclose(fitter.fit(), weights, atol=0.01)
    np.testing.assert_allclose(fitter.run_baselines.to_numpy(), [[100.0] * 5, [90.0] * 5], atol=0.01)
    hrf_model = LinearModelWithBaselineHRF(hrf_model=SPMHRFModel(2.0, unique_hrfs=True), weights=weights)
    init = hrf_model.get_default_parameters(5, index=data.columns)
    by_data = ParameterFitter(hrf_model, data, plain)
    by_paradigm = ParameterFitter(hrf_model, data.reset_index(drop=True), paradigm)
    for fitter in (by_data, by_paradigm):
        fitter.fit(init_pars=init, max_n_iterations=2, learning_rate=0.05, progressbar=False)
    np.testing.assert_allclose(by_data.predictions.to_numpy(), by_paradigm.predictions.to_numpy(), rtol=1e-5)


def test_runs_that_disagree_raise(rng):
    model, paradigm, weights, data = two_run_problem(rng)
    other = pd.MultiIndex.from_product([[1, 2, 3], range(80)], names=["run", "time"])
    with pytest.raises(ValueError, match="runs"):
        WeightFitter(model, None, data, paradigm.set_axis(other))
    with pytest.raises(ValueError, match="runs"):
        ParameterFitter(model, data.set_axis(other), paradigm)
    WeightFitter(model, None, data.set_axis(paradigm.index.set_names(["session", "volume"])), paradigm)


def test_each_run_has_its_own_baseline(rng):
    """Two runs, +2 % offset in run 2: positions and sizes recovered, R² as WeightFitter defines it (relative to
    the variance the run means leave), checked against numpy; baseline = run 1's level."""
    single, grid = bar_apertures()
    paradigm = pd.concat([single, single], ignore_index=True)
    paradigm.index = pd.MultiIndex.from_product([[1, 2], range(len(single))], names=["run", "time"])
    model = GaussianPRF2DWithHRF(grid_coordinates=grid, paradigm=paradigm, hrf_model=SPMHRFModel(TR))
    n = 30
    truth = pd.DataFrame({"x": rng.uniform(-4, 4, n), "y": rng.uniform(-4, 4, n), "sd": rng.uniform(0.6, 2.0, n),
                          "baseline": np.full(n, 100.0), "amplitude": rng.uniform(1.0, 2.0, n)})
    data = model.simulate(parameters=truth, noise=0.2, random_state=11)
    shifted = data + np.r_[np.zeros(len(single)), np.full(len(single), 2.0)][:, None].astype(np.float32)
    fitter = ParameterFitter(model, shifted, paradigm)
    start = fitter.fit_grid(np.linspace(-5, 5, 11), np.linspace(-5, 5, 11), [0.7, 1.2, 2.0], None, None,
                            progressbar=False)
    estimate = fitter.fit(init_pars=fitter.refine_baseline_and_amplitude(start), optimizer="lm",
                          max_n_iterations=20, progressbar=False)
    r2 = fitter.r2.to_numpy()
    assert np.median(r2) > 0.6
    for label, r in (("x", 0.97), ("y", 0.97), ("sd", 0.8)):
        assert np.corrcoef(estimate[label], truth[label])[0, 1] > r, label
    np.testing.assert_allclose(estimate["baseline"], 100.0, atol=0.2)
    # R² against numpy: run means removed from the data, and from the residual of the returned parameters
    runs = np.repeat([0, 1], len(single))
    y = shifted.to_numpy(np.float64)
    residual = y - model.predict(parameters=estimate).to_numpy(np.float64)
    demean = lambda v: v - np.stack([v[runs == k].mean(0) for k in (0, 1)])[runs]  # noqa: E731
    expected = 1 - (demean(residual) ** 2).sum(0) / (demean(y) ** 2).sum(0)
    np.testing.assert_allclose(r2, expected, atol=1e-3)


def test_numpy_weights_align_by_position_with_labelled_data(rng):
    """numpy weights (no voxel labels) and data with named columns: aligned by position, not reindexed to NaN."""
    n_voxels = 6
    paradigm = event_paradigm(rng, 150, 3)
    weights = rng.uniform(0.5, 1.5, (3, n_voxels))
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(2.0, unique_hrfs=True), weights=weights)
    truth = pd.DataFrame({"baseline": np.full(n_voxels, 10.0), "hrf_delay": rng.uniform(5, 7, n_voxels),
                          "hrf_dispersion": np.ones(n_voxels)})
    data = model.simulate(parameters=truth, noise=0.05, random_state=3)
    data.columns = [f"voxel{i}" for i in range(n_voxels)]
    fitter = ParameterFitter(model, data, paradigm)
    estimate = fitter.fit(init_pars=truth.assign(hrf_delay=6.0).set_axis(data.columns), optimizer="lm",
                          max_n_iterations=20, progressbar=False)
    assert fitter.r2.min() > 0.9
    np.testing.assert_allclose(estimate["hrf_delay"], truth["hrf_delay"], atol=0.3)
    model.weights = pd.DataFrame(weights, columns=[f"other{i}" for i in range(n_voxels)])
    with pytest.raises(ValueError, match="weights"):
        ParameterFitter(model, data, paradigm).fit(init_pars=truth.set_axis(data.columns), progressbar=False)


@pytest.mark.parametrize("optimizer", ["lm", None])
def test_sigma2_counts_censored_volumes_and_parameters(rng, optimizer):
    """300 volumes, 100 censored by spike confounds, true σ² = 0.25: σ² = SSR / (200 − 3 free parameters), within
    its sampling error (SD of the mean ratio over 40 voxels: sqrt(2 / 197 / 40) = 0.016)."""
    n_time, n_voxels = 300, 40
    paradigm = event_paradigm(rng, n_time, 3)
    weights = rng.uniform(1.0, 2.0, (3, n_voxels))
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(2.0, unique_hrfs=True), weights=weights)
    truth = pd.DataFrame({"baseline": np.full(n_voxels, 10.0), "hrf_delay": rng.uniform(5, 7, n_voxels),
                          "hrf_dispersion": rng.uniform(0.8, 1.2, n_voxels)})
    data = model.simulate(parameters=truth, noise=0.5, random_state=5)
    censored = np.sort(rng.choice(n_time, 100, replace=False))
    spikes = np.zeros((n_time, 100))
    spikes[censored, np.arange(100)] = 1.0
    fitter = ParameterFitter(model, data, paradigm)
    kwargs = {"max_n_iterations": 30} if optimizer else {"learning_rate": 0.02, "max_n_iterations": 600}
    estimate = fitter.fit(init_pars=truth.assign(hrf_delay=6.0, hrf_dispersion=1.0), optimizer=optimizer,
                          confounds=spikes, noise_model="gaussian", progressbar=False, **kwargs)
    sigma2 = fitter.estimated_sigma2.to_numpy()
    assert abs(np.mean(sigma2 / 0.25) - 1) < 0.05, np.mean(sigma2 / 0.25)
    kept = np.setdiff1d(np.arange(n_time), censored)
    residual = (data - model.predict(parameters=estimate)).to_numpy(np.float64)[kept]
    np.testing.assert_allclose(sigma2, (residual**2).sum(0) / (len(kept) - 3), rtol=1e-3)


def test_fit_returns_each_voxels_best_parameters(rng, optimizer=None):
    """Adam with a learning rate that overshoots: the returned parameters are each voxel's best of all steps (R²
    at least that of every stored step's parameters, computed with numpy), predictions and R² consistent."""
    n_voxels = 12
    paradigm = event_paradigm(rng, 150, 3)
    weights = rng.uniform(1.0, 2.0, (3, n_voxels))
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(2.0, unique_hrfs=True), weights=weights)
    truth = pd.DataFrame({"baseline": np.full(n_voxels, 10.0), "hrf_delay": rng.uniform(5, 7, n_voxels),
                          "hrf_dispersion": rng.uniform(0.8, 1.2, n_voxels)})
    data = model.simulate(parameters=truth, noise=0.3, random_state=9)
    fitter = ParameterFitter(model, data, paradigm)
    kwargs = {"learning_rate": 0.5} if optimizer is None else {}
    estimate = fitter.fit(init_pars=truth.assign(hrf_delay=5.0, hrf_dispersion=1.3), optimizer=optimizer,
                          max_n_iterations=40, min_n_iterations=40, store_intermediate_parameters=True,
                          progressbar=False, **kwargs)
    y = data.to_numpy(np.float64)
    sst = ((y - y.mean(0)) ** 2).sum(0)

    def r2_of(parameters):
        return 1 - ((y - model.predict(parameters=parameters).to_numpy(np.float64)) ** 2).sum(0) / sst

    steps = fitter.intermediate_parameters
    n_steps = steps.index.get_level_values("step").max() + 1
    history = np.array([r2_of(steps.xs(step, level="step")) for step in range(n_steps)])
    returned = r2_of(estimate)
    np.testing.assert_allclose(fitter.r2, returned, atol=1e-4)
    np.testing.assert_allclose(fitter.predictions, model.predict(parameters=estimate), rtol=1e-5, atol=1e-4)
    assert np.all(returned >= history.max(axis=0) - 1e-4), (returned - history.max(axis=0)).min()


def read_scalars(folder):
    """{tag: [(step, value), …]} from the TensorBoard event files of one run folder."""
    import tensorflow as tf

    scalars = {}
    for path in sorted(folder.iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return scalars


def test_log_dir_writes_loss_and_r2_per_fit_for_every_solver(rng, tmp_path, monkeypatch):
    """Two chunks of voxels (memory_limit=1: one voxel per chunk), Adam then LM: one run folder per fit, tags loss
    and mean_r2 at steps 0..n-1 without gaps, values = the fitter's history; None and False write nothing."""
    import tensorflow as tf

    paradigm = event_paradigm(rng, 100, 2)
    weights = rng.uniform(1.0, 2.0, (2, 2))
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(2.0, unique_hrfs=True), weights=weights)
    truth = pd.DataFrame({"baseline": [1.0, 2.0], "hrf_delay": [5.5, 6.5], "hrf_dispersion": [1.0, 1.1]})
    data = model.simulate(parameters=truth, noise=0.2, random_state=4)
    init = truth.assign(hrf_delay=6.0)
    fitter = ParameterFitter(model, data, paradigm, memory_limit=1, log_dir=tmp_path / "tb")
    histories = []
    for optimizer in (tf.keras.optimizers.SGD(1e-3), "lm"):
        fitter.fit(init_pars=init, optimizer=optimizer, max_n_iterations=12, min_n_iterations=12, progressbar=False)
        assert len(fitter.history) == 2
        histories.append(np.concatenate(fitter.history))
    runs = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert runs == ["fit-001", "fit-002"]
    for run, history in zip(runs, histories, strict=True):
        scalars = read_scalars(tmp_path / "tb" / run)
        assert set(scalars) >= {"loss", "mean_r2"}
        for tag in ("loss", "mean_r2"):
            steps = [step for step, _ in scalars[tag]]
            assert steps == list(range(len(history))), (run, tag, steps)
        np.testing.assert_allclose([v for _, v in scalars["mean_r2"]], history, rtol=1e-6)
        if run == "fit-002":  # LM accepts a voxel's step only if its SSR drops: each chunk's R² never falls
            for chunk in fitter.history:
                assert np.all(np.diff(chunk) >= -1e-6), chunk
        assert np.all(np.isfinite([v for _, v in scalars["loss"]]))
    monkeypatch.chdir(tmp_path)
    for off in (None, False):
        ParameterFitter(model, data, paradigm, log_dir=off).fit(init_pars=init, max_n_iterations=1,
                                                                progressbar=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tb"]


def test_default_lm_settings_are_the_recipes(rng):
    """fit(optimizer='lm') with default arguments (LM's cap of 1000 steps; each voxel stops on its own rule) on the
    voxels the recipe iterated: the recipe's parameters, in at most 60 iterations (a quarter of the voxels pure
    noise, as in real data, whose fits wander for long). The start differs from the recipe's by float32 rounding
    only (the recipe takes the grid's closed-form baseline and amplitude)."""
    from bids_encoder.optimize.recipes import fit_prf2d

    model, paradigm, truth, data = prf_problem(rng, n_voxels=40, noise=0.3)
    data.iloc[:, 30:] = rng.standard_normal((len(data), 10)).astype(np.float32)
    truth = truth.iloc[:30]
    recipe = fit_prf2d(model, data, paradigm, progressbar=False)
    fitter = ParameterFitter(model, data, paradigm)
    init = fitter.refine_baseline_and_amplitude(recipe.grid_parameters).fillna(0.0)
    estimate = fitter.fit(init_pars=init, optimizer="lm", progressbar=False, iterate=recipe.iterated)
    assert fitter.n_iterations <= 60
    np.testing.assert_allclose(estimate.to_numpy(), recipe.parameters.to_numpy(), rtol=1e-3, atol=1e-3)
    assert np.corrcoef(estimate["x"].iloc[:30], truth["x"])[0, 1] > 0.95


def test_memory_limit_bounds_peak_rss():
    """LM on 80 × 80 apertures (6,400 pixels), 300 voxels, memory_limit 60 MB, in a child process: the peak RSS
    increase (ru_maxrss, after a warm-up fit) stays under memory_limit plus a slack of 40 MB and 15 MB per chunk
    (each chunk traces its own compiled loop, which TensorFlow keeps: about 6 MB a chunk with tiny tensors, more
    with large ones, as its allocator keeps freed buffers). Before the plan counted pixels: one chunk, 210 MB."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    limit = 60_000_000
    child = Path(__file__).with_name("_rss_fit.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(child), "lm", str(limit), "300", "80", "40"], capture_output=True,
                         text=True, env=env, timeout=300, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["chunks"] >= 2
    assert result["increase"] <= limit + 40e6 + 15e6 * result["chunks"], result
