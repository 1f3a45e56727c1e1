import numpy as np
import pandas as pd
import pytest
from conftest import event_paradigm

from bids_encoder.models import LinearModelWithBaseline, LinearModelWithBaselineHRF, SPMHRFModel
from bids_encoder.optimize import ParameterFitter, WeightFitter


def test_get_paradigm_and_labels(rng):
    model = LinearModelWithBaseline()
    with pytest.raises(ValueError, match="needs a paradigm"):
        model.get_paradigm()
    paradigm = model.get_paradigm(np.arange(5))
    assert paradigm.shape == (5, 1) and paradigm.dtypes.iloc[0] == np.float32
    with pytest.raises(ValueError, match="NaN"):
        model.get_paradigm(np.array([1.0, np.nan]))
    assert model.get_parameter_labels() == ["baseline"]
    unique = LinearModelWithBaselineHRF(hrf_model=SPMHRFModel(2.0, unique_hrfs=True))
    assert unique.get_parameter_labels() == ["baseline", "hrf_delay", "hrf_dispersion"]
    assert LinearModelWithBaselineHRF(hrf_model=SPMHRFModel(2.0)).get_parameter_labels() == ["baseline"]


def test_linear_prediction_is_design_times_weights(rng):
    paradigm = pd.DataFrame(rng.standard_normal((40, 3)), columns=list("abc"),
                            index=pd.Index(np.arange(40) * 2.0, name="time"))
    weights = pd.DataFrame(rng.standard_normal((3, 4)), index=list("abc"), columns=[f"v{i}" for i in range(4)])
    parameters = pd.DataFrame({"baseline": [1.0, 2.0, 3.0, 4.0]}, index=weights.columns)
    prediction = LinearModelWithBaseline().predict(paradigm, parameters, weights)
    assert list(prediction.columns) == list(weights.columns)
    assert prediction.index.equals(paradigm.index)
    np.testing.assert_allclose(prediction, paradigm.to_numpy() @ weights.to_numpy() + [1, 2, 3, 4], rtol=1e-5,
                               atol=1e-5)


def test_hrf_model_convolves_then_adds_baseline(rng):
    paradigm = pd.DataFrame(np.zeros((50, 1)), columns=["stim"])
    paradigm.iloc[5, 0] = 1.0
    hrf = SPMHRFModel(1.0)
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=hrf)
    prediction = model.predict(parameters=pd.DataFrame({"baseline": [10.0]}), weights=np.array([[2.0]]))
    expected = np.full(50, 10.0)
    n = len(hrf.canonical_kernel)
    expected[5 : 5 + n] += 2.0 * hrf.canonical_kernel[: 45]
    np.testing.assert_allclose(prediction.iloc[:, 0], expected, atol=1e-5)


def test_simulate_noise_models(rng):
    paradigm = pd.DataFrame(np.zeros((4000, 1)))
    model = LinearModelWithBaseline(paradigm)
    weights = np.zeros((1, 3))
    pars = pd.DataFrame({"baseline": [0.0, 5.0, -1.0]})
    sim = model.simulate(parameters=pars, weights=weights, noise=2.0, random_state=0)
    np.testing.assert_allclose(sim.mean(), [0, 5, -1], atol=0.15)
    np.testing.assert_allclose(sim.std(), 2.0, rtol=0.05)
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 4.0]])
    sim = model.simulate(parameters=pars, weights=weights, noise=cov, random_state=1)
    np.testing.assert_allclose(np.cov(sim.to_numpy().T), cov, atol=0.12)
    heavy = model.simulate(parameters=pars, weights=weights, noise=1.0, dof=3, random_state=2)
    kurtosis = ((heavy - heavy.mean()) ** 4).mean() / heavy.var() ** 2
    assert np.all(kurtosis > 4.5)  # a Gaussian has 3
    repeated = model.simulate(paradigm.iloc[:10], pars.to_numpy(), weights, noise=0.0, n_repeats=3)
    assert repeated.shape == (30, 3)
    assert list(repeated.index.names)[0] == "repeat"
    np.testing.assert_allclose(repeated.xs(2, level="repeat"), repeated.xs(0, level="repeat"))
    with pytest.raises(ValueError, match="noise covariance"):
        model.simulate(parameters=pars, weights=weights, noise=np.eye(2))


def ols_with_intercept(design, y, alpha=0.0):
    x = np.hstack([design, np.ones((len(design), 1))])
    penalty = np.diag(np.r_[np.full(design.shape[1], alpha), 0.0])
    return np.linalg.solve(x.T @ x + penalty, x.T @ y)


@pytest.mark.parametrize("alpha", [0.0, 5.0])
def test_weight_fitter_matches_closed_form(rng, alpha):
    paradigm = event_paradigm(rng, 200, 6)
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(1.5))
    true_weights = rng.standard_normal((6, 40))
    data = model.simulate(parameters=pd.DataFrame({"baseline": rng.normal(50, 5, 40)}), weights=true_weights,
                          noise=0.5, random_state=3)
    fitter = WeightFitter(model, None, data, paradigm)
    weights = fitter.fit(alpha=alpha)
    import tensorflow as tf

    design = model._design(tf.constant(paradigm.to_numpy()), None).numpy().astype(np.float64)
    reference = ols_with_intercept(design, data.to_numpy().astype(np.float64), alpha)
    np.testing.assert_allclose(weights.to_numpy(), reference[:6], rtol=1e-4, atol=1e-4 * np.abs(reference[:6]).max())
    np.testing.assert_allclose(fitter.parameters["baseline"], reference[6], rtol=1e-4)
    residual = data.to_numpy() - np.hstack([design, np.ones((200, 1))]) @ reference
    sst = ((data - data.mean()) ** 2).sum().to_numpy()
    np.testing.assert_allclose(fitter.r2, 1 - (residual**2).sum(0) / sst, atol=1e-4)
    np.testing.assert_allclose(fitter.predictions, data.to_numpy() - residual, atol=1e-3)


def test_weight_fitter_unique_hrfs_matches_lstsq(rng):
    paradigm = event_paradigm(rng, 150, 4)
    hrf = SPMHRFModel(2.0, unique_hrfs=True)
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=hrf)
    pars = pd.DataFrame({"baseline": rng.normal(10, 1, 12), "hrf_delay": rng.uniform(4, 7, 12),
                         "hrf_dispersion": rng.uniform(0.6, 1.5, 12)})
    data = model.simulate(parameters=pars, weights=rng.standard_normal((4, 12)), noise=0.3, random_state=4)
    fitter = WeightFitter(model, pars[["hrf_delay", "hrf_dispersion"]], data, paradigm)
    weights = fitter.fit()
    import tensorflow as tf

    kernels = hrf.get_kernel(tf.constant(pars[["hrf_delay", "hrf_dispersion"]].to_numpy(np.float32))).numpy()
    for v in range(12):
        design = np.stack([np.convolve(paradigm.iloc[:, r], kernels[:, v])[:150] for r in range(4)], axis=1)
        reference = ols_with_intercept(design, data.iloc[:, v].to_numpy(np.float64))
        np.testing.assert_allclose(weights.iloc[:, v], reference[:4], rtol=1e-4, atol=1e-5)
        assert fitter.parameters["baseline"].iloc[v] == pytest.approx(reference[4], rel=1e-4)


def test_weight_fitter_fixed_baseline_and_runs(rng):
    n = 120
    paradigm = event_paradigm(rng, 2 * n, 3)
    paradigm.index = pd.MultiIndex.from_product([[1, 2], range(n)], names=["run", "time"])
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(2.0))
    w = rng.standard_normal((3, 5))
    clean = model.predict(parameters=np.zeros((5, 1)), weights=w)
    run_offsets = np.r_[np.full(n, 100.0), np.full(n, 90.0)][:, None]
    fitter = WeightFitter(model, None, clean + run_offsets, paradigm)
    np.testing.assert_allclose(fitter.fit(), w, atol=1e-3)
    np.testing.assert_allclose(fitter.run_baselines.to_numpy(), [[100.0] * 5, [90.0] * 5], atol=1e-3)
    fixed = WeightFitter(model, pd.DataFrame({"baseline": np.full(5, 7.0)}), clean + 7.0, paradigm)
    np.testing.assert_allclose(fixed.fit(), w, atol=1e-3)
    with pytest.raises(ValueError, match="alpha"):
        fixed.fit(alpha=-1)


@pytest.mark.parametrize("unique_hrfs", [False, True])
def test_weight_fitter_confounds_match_lstsq(rng, unique_hrfs):
    """Two runs, block-diagonal confounds and a spike column: weights, intercepts and partial R² as lstsq."""
    n, n_vox = 100, 6
    paradigm = event_paradigm(rng, 2 * n, 3)
    paradigm.index = pd.MultiIndex.from_product([[1, 2], range(n)], names=["run", "time"])
    hrf = SPMHRFModel(2.0, unique_hrfs=unique_hrfs)
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=hrf)
    pars = pd.DataFrame({"hrf_delay": rng.uniform(5, 7, n_vox), "hrf_dispersion": rng.uniform(0.8, 1.2, n_vox)})
    confounds = np.zeros((2 * n, 5))
    confounds[:n, :2] = rng.standard_normal((n, 2))
    confounds[n:, 2:4] = rng.standard_normal((n, 2))
    confounds[37, 4] = 1.0  # a scrubbed volume
    data = pd.DataFrame(rng.standard_normal((2 * n, n_vox)) + 50 + 3 * confounds @ rng.standard_normal((5, n_vox)))
    fitter = WeightFitter(model, pars if unique_hrfs else None, data, paradigm, confounds=confounds)
    weights = fitter.fit()
    import tensorflow as tf

    intercepts = np.repeat(np.eye(2), n, axis=0)
    for v in range(n_vox):
        design = model._design(tf.constant(paradigm.to_numpy()), None, segments=(n, n)).numpy()
        if unique_hrfs:
            design = model._design(tf.constant(paradigm.to_numpy()), tf.constant(
                np.c_[np.zeros(1), pars.iloc[[v]].to_numpy()].astype(np.float32)), segments=(n, n)).numpy()[:, 0]
        x = np.hstack([design, confounds, intercepts]).astype(np.float64)
        y = data.iloc[:, v].to_numpy(np.float64)
        reference, *_ = np.linalg.lstsq(x, y, rcond=None)
        np.testing.assert_allclose(weights.iloc[:, v], reference[:3], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(fitter.run_baselines.iloc[:, v], reference[-2:], rtol=1e-4)
        nuisance = np.hstack([confounds, intercepts])
        clean = y - nuisance @ np.linalg.lstsq(nuisance, y, rcond=None)[0]
        ssr = np.sum((y - x @ reference) ** 2)
        assert fitter.r2.iloc[v] == pytest.approx(1 - ssr / np.sum(clean**2), abs=1e-3)
        np.testing.assert_allclose(fitter.predictions.iloc[:, v], x @ reference, atol=1e-2)


def test_simulate_fit_recovery_500_voxels(rng):
    """500 voxels × 300 volumes × 8 regressors, per-voxel HRFs, SNR (signal SD / noise SD) ≈ 4."""
    n_time, n_voxels, n_reg, tr = 300, 500, 8, 1.5
    paradigm = event_paradigm(rng, n_time, n_reg)
    truth = pd.DataFrame({
        "baseline": rng.normal(100, 5, n_voxels),
        "hrf_delay": rng.uniform(4.5, 6.5, n_voxels),
        "hrf_dispersion": rng.uniform(0.7, 1.3, n_voxels),
    })
    true_weights = pd.DataFrame(rng.normal(1.0, 0.5, (n_reg, n_voxels)), index=paradigm.columns)
    generator = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(tr, unique_hrfs=True))
    signal = generator.predict(parameters=truth, weights=true_weights)
    noise_sd = 0.11
    snr = float((signal - signal.mean()).std().mean() / noise_sd)
    assert 3.5 < snr < 4.5, snr
    data = generator.simulate(parameters=truth, weights=true_weights, noise=noise_sd, random_state=5)

    canonical = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(tr))
    first = WeightFitter(canonical, None, data, paradigm).fit()
    unique = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(tr, unique_hrfs=True), weights=first)
    fitter = ParameterFitter(unique, data, paradigm)
    estimate = fitter.fit(max_n_iterations=1000, learning_rate=0.05, progressbar=False)
    assert np.corrcoef(estimate["hrf_delay"], truth["hrf_delay"])[0, 1] >= 0.9
    final = WeightFitter(unique, estimate[["hrf_delay", "hrf_dispersion"]], data, paradigm).fit()
    assert np.corrcoef(final.to_numpy().ravel(), true_weights.to_numpy().ravel())[0, 1] >= 0.99


@pytest.mark.parametrize("offset", [0, 1, 3, 8])
def test_as_tensor_never_shares_misaligned_memory(offset):
    """TensorFlow aborts the process on buffers that are not 64-byte aligned: those must be copied."""
    from bids_encoder.optimize._inputs import as_tensor

    buffer = np.zeros(600 + 16, np.float32)
    array = buffer[offset : offset + 600].reshape(5, 120)
    array[:] = np.arange(600).reshape(5, 120)
    tensor = as_tensor(array)
    centred = tensor - np.float32(1.0)  # an Eigen kernel: crashes on a misaligned shared buffer
    np.testing.assert_array_equal(centred.numpy(), array - 1.0)


def test_fast_jacobian_matches_forward_mode(rng):
    """The kernel-linear Jacobian used by Levenberg–Marquardt equals forward-mode differentiation of predict."""
    import tensorflow as tf

    from bids_encoder.models.transforms import Bounded

    paradigm = tf.constant(event_paradigm(rng, 80, 3).to_numpy())
    model = LinearModelWithBaselineHRF(hrf_model=SPMHRFModel(1.5, unique_hrfs=True))
    weights = tf.constant(rng.standard_normal((3, 7)).astype(np.float32))
    bounded = Bounded(3.0, 7.0)
    free = tf.constant(np.c_[rng.normal(50, 1, 7), rng.normal(0, 1, 7), rng.normal(1, 0.1, 7)].astype(np.float32))

    def natural(f):  # baseline as is, delay through a bound, dispersion as is
        return tf.stack([f[:, 0], bounded.forward(f[:, 1]), f[:, 2]], axis=1)

    prediction, jacobian = model._prediction_and_jacobian(paradigm, natural, free, weights, (40, 40))
    expected = model._predict(paradigm, natural(free), weights, segments=(40, 40))
    np.testing.assert_allclose(prediction, expected, rtol=1e-5, atol=1e-4)
    for j in range(3):
        tangent = tf.one_hot(tf.fill([7], j), 3)
        with tf.autodiff.ForwardAccumulator(free, tangent) as accumulator:
            value = model._predict(paradigm, natural(free), weights, segments=(40, 40))
        np.testing.assert_allclose(jacobian[..., j], accumulator.jvp(value), rtol=1e-4, atol=1e-5)
