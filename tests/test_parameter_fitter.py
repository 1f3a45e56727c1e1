import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import event_paradigm

from bids_encoder.models import LinearModelWithBaselineHRF, SPMHRFModel
from bids_encoder.optimize import ParameterFitter


def make_problem(rng, n_voxels=60, n_time=200, noise=0.1, tr=1.5):
    paradigm = event_paradigm(rng, n_time, 4)
    truth = pd.DataFrame({
        "baseline": rng.normal(20, 2, n_voxels),
        "hrf_delay": rng.uniform(4.5, 6.5, n_voxels),
        "hrf_dispersion": rng.uniform(0.7, 1.3, n_voxels),
    })
    weights = pd.DataFrame(rng.normal(1, 0.3, (4, n_voxels)), index=paradigm.columns)
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(tr, unique_hrfs=True), weights=weights)
    data = model.simulate(parameters=truth, noise=noise, random_state=int(rng.integers(1e6)))
    return model, paradigm, truth, data


def test_fixed_pars_stay_exactly(rng):
    model, paradigm, truth, data = make_problem(rng)
    init = truth.copy()
    init["hrf_delay"] = 5.0
    init["hrf_dispersion"] = np.linspace(0.6, 1.4, len(init))
    fitter = ParameterFitter(model, data, paradigm)
    estimate = fitter.fit(init_pars=init, fixed_pars=["hrf_dispersion", "baseline"], max_n_iterations=60,
                          min_n_iterations=60, progressbar=False)
    np.testing.assert_array_equal(estimate["hrf_dispersion"].to_numpy(), init["hrf_dispersion"].to_numpy(np.float32))
    np.testing.assert_array_equal(estimate["baseline"].to_numpy(), init["baseline"].to_numpy(np.float32))
    assert not np.allclose(estimate["hrf_delay"], 5.0)


def test_shared_pars_end_equal(rng):
    model, paradigm, truth, data = make_problem(rng)
    truth["hrf_delay"] = 6.3  # one delay for all voxels
    data = model.simulate(parameters=truth, noise=0.05, random_state=7)
    init = truth.copy()
    init["hrf_delay"] = rng.uniform(4.5, 5.5, len(init))
    fitter = ParameterFitter(model, data, paradigm)
    estimate = fitter.fit(init_pars=init, shared_pars="hrf_delay", learning_rate=0.02, progressbar=False)
    assert estimate["hrf_delay"].nunique() == 1
    assert estimate["hrf_delay"].iloc[0] == pytest.approx(6.3, abs=0.1)


def test_gaussian_noise_model_recovers_sigma2(rng):
    """3,000 volumes: the sampling SD of a variance estimate, sqrt(2 / T), is then 2.6 %."""
    model, paradigm, truth, data = make_problem(rng, n_voxels=40, n_time=3000)
    noise_sd = np.linspace(0.1, 0.5, 40)
    clean = model.predict(parameters=truth)
    data = clean + rng.standard_normal(clean.shape) * noise_sd
    init = truth.assign(hrf_delay=5.5, hrf_dispersion=1.0)
    fitter = ParameterFitter(model, data, paradigm)
    fitter.fit(init_pars=init, noise_model="gaussian", learning_rate=0.02, progressbar=False)
    ratio = fitter.estimated_sigma2.to_numpy() / noise_sd**2
    assert np.all(np.abs(ratio - 1) < 0.10), ratio
    residual = (data - fitter.predictions).to_numpy()
    np.testing.assert_allclose(fitter.estimated_sigma2, (residual**2).mean(axis=0), rtol=0.02)


def test_constant_voxels_and_early_stopping(rng):
    model, paradigm, truth, _ = make_problem(rng, n_voxels=20)
    data = model.predict(parameters=truth)  # noiseless
    data.iloc[:, 3] = 0.0
    data.iloc[:, 7] = 5.0
    init = truth.copy()
    init["hrf_delay"] = 5.5
    init["hrf_dispersion"] = 1.0
    fitter = ParameterFitter(model, data, paradigm)
    estimate = fitter.fit(init_pars=init, max_n_iterations=5000, min_n_iterations=100, learning_rate=0.05,
                          progressbar=False)
    assert np.isnan(fitter.r2.iloc[3]) and np.isnan(fitter.r2.iloc[7])
    assert estimate.iloc[[3, 7]].isna().all().all()
    assert fitter.n_iterations < 5000 and fitter.converged
    good = fitter.r2.drop(fitter.r2.index[[3, 7]])
    assert good.min() > 0.99
    assert np.all(np.isfinite(fitter.predictions.drop(columns=data.columns[[3, 7]])))


def test_confounds_are_projected_out(rng):
    model, paradigm, truth, data = make_problem(rng, n_voxels=30)
    drift = np.column_stack([np.linspace(-1, 1, len(data)), np.cos(np.linspace(0, np.pi, len(data)))])
    drifted = data + drift @ rng.normal(0, 3, (2, 30))
    init = truth.assign(hrf_delay=5.5, hrf_dispersion=1.0)
    plain = ParameterFitter(model, drifted, paradigm).fit(init_pars=init, max_n_iterations=300, progressbar=False)
    fitter = ParameterFitter(model, drifted, paradigm)
    cleaned = fitter.fit(init_pars=init, confounds=drift, max_n_iterations=300, learning_rate=0.05, progressbar=False)
    error_plain = np.abs(plain["hrf_delay"] - truth["hrf_delay"]).median()
    error_cleaned = np.abs(cleaned["hrf_delay"] - truth["hrf_delay"]).median()
    assert error_cleaned < error_plain and error_cleaned < 0.3
    assert fitter.r2.median() > 0.8


def test_intermediate_parameters_optimizer_and_log_dir(rng, tmp_path):
    model, paradigm, truth, data = make_problem(rng, n_voxels=5)
    fitter = ParameterFitter(model, data, paradigm, log_dir=tmp_path / "tb")
    fitter.fit(init_pars=truth, max_n_iterations=30, min_n_iterations=30, store_intermediate_parameters=True,
               optimizer=tf.keras.optimizers.SGD(1e-3), progressbar=False)
    steps = fitter.intermediate_parameters.index.get_level_values("step")
    assert steps.max() == 29 and len(fitter.intermediate_parameters) == 30 * 5
    assert list((tmp_path / "tb").iterdir())


def test_bad_input_raises_clear_errors(rng):
    model, paradigm, truth, data = make_problem(rng, n_voxels=5)
    with pytest.raises(ValueError, match="200 time points but the data have 199"):
        ParameterFitter(model, data.iloc[:-1], paradigm)
    bad = data.copy()
    bad.iloc[3, 2] = np.inf
    with pytest.raises(ValueError, match="data contains NaN or infinite"):
        ParameterFitter(model, bad, paradigm)
    fitter = ParameterFitter(model, data, paradigm)
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) in fixed_pars: \['delay'\]"):
        fitter.fit(init_pars=truth, fixed_pars=["delay"])
    with pytest.raises(ValueError, match="shared_pars"):
        fitter.fit(init_pars=truth, shared_pars=["x"])
    with pytest.raises(ValueError, match="noise_model"):
        fitter.fit(init_pars=truth, noise_model="poisson")
    with pytest.raises(ValueError, match="confounds have 10 rows"):
        fitter.fit(init_pars=truth, confounds=np.ones((10, 1)))
    with pytest.raises(ValueError, match="init_pars lack"):
        fitter.fit(init_pars=truth[["baseline"]])
    with pytest.raises(ValueError, match=r"init_pars have NaN or infinite values for 1 non-constant voxel"):
        fitter.fit(init_pars=truth.assign(hrf_delay=[np.nan, 5, 5, 5, 5]))


@pytest.mark.gpu
@pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="no GPU visible")
def test_cpu_and_gpu_agree(rng):
    from bids_encoder.optimize import WeightFitter

    model, paradigm, truth, data = make_problem(rng, n_voxels=200)
    results = {}
    for device in ("/CPU:0", "/GPU:0"):
        with tf.device(device):
            weights = WeightFitter(model, truth[["hrf_delay", "hrf_dispersion"]], data, paradigm).fit()
            fitter = ParameterFitter(model, data, paradigm)
            pars = fitter.fit(init_pars=truth.assign(hrf_delay=5.5), max_n_iterations=100, min_n_iterations=100,
                              progressbar=False)
            results[device] = (weights.to_numpy(), pars.to_numpy(), fitter.r2.to_numpy())
    for cpu, gpu in zip(results["/CPU:0"], results["/GPU:0"], strict=True):
        np.testing.assert_allclose(cpu, gpu, rtol=1e-4, atol=1e-4)
