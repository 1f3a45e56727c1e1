import numpy as np
import pytest
import tensorflow as tf
from nilearn.glm.first_level import spm_hrf as nilearn_spm_hrf

from bids_encoder.hrf import CustomHRFModel, SPMHRFModel, convolve, spm_hrf


@pytest.mark.parametrize(("tr", "oversampling"), [(2.0, 50), (1.317025, 16), (0.8, 10), (3.0, 1)])
def test_spm_hrf_agrees_with_nilearn(tr, oversampling):
    reference = nilearn_spm_hrf(tr, oversampling=oversampling)
    dt = tr / oversampling
    # nilearn samples linspace(0, 32, rint(32 / dt)) and shifts the gammas by one step (loc=dt)
    times = np.linspace(0, 32.0, int(np.rint(32.0 / dt))) - dt
    ours = spm_hrf(times, a1=6.0, d1=1.0, a2=16.0, d2=1.0, c=0.167, highres_dt=dt)
    ours = ours / ours.sum()  # nilearn's normalisation: unit sum on its grid
    assert np.max(np.abs(ours - reference)) <= 1e-5 * reference.max()


def test_spm_hrf_shape_and_units():
    t = np.arange(0, 40, 0.01)
    h = spm_hrf(t)
    assert abs(t[np.argmax(h)] - 5.0) < 0.02  # gamma(6, 1) peaks at 5 s
    assert np.sum(h) * 0.01 == pytest.approx(1.0, abs=2e-3)  # unit area
    assert spm_hrf(np.array([-1.0, 0.0]))[0] == 0.0


@pytest.mark.parametrize("tr", [0.5, 1.317025, 2.0, 3.1])
def test_spm_hrf_model_samples_at_tr(tr):
    model = SPMHRFModel(tr)
    assert np.allclose(model.times, np.arange(len(model.times)) * tr)
    assert model.times[-1] <= 32.0 < model.times[-1] + tr
    expected = spm_hrf(np.arange(len(model.times)) * tr, c=0.167)
    expected /= expected.sum()
    np.testing.assert_allclose(model.get_kernel().numpy(), expected, atol=1e-6)
    assert model.get_kernel().numpy().sum() == pytest.approx(1.0, abs=1e-6)


def test_unique_kernel_matches_canonical_at_defaults():
    model = SPMHRFModel(1.5, unique_hrfs=True)
    pars = tf.constant([[6.0, 1.0], [6.0, 1.0]])
    kernels = model.get_kernel(pars).numpy()
    np.testing.assert_allclose(kernels[:, 0], model.canonical_kernel, atol=1e-6)
    later = model.get_kernel(tf.constant([[7.0, 1.0]])).numpy()[:, 0]
    assert np.argmax(later) >= np.argmax(model.canonical_kernel)


def numpy_causal_convolution(x, kernel):
    return np.stack([np.convolve(x[:, v], kernel[:, v])[: len(x)] for v in range(x.shape[1])], axis=1)


@pytest.mark.parametrize(("tr", "n_time"), [(0.8, 1200), (2.0, 300), (1.317025, 1000)])
def test_convolution_matches_numpy(rng, tr, n_time):
    model = SPMHRFModel(tr, unique_hrfs=True)
    n_voxels = 7
    x = rng.standard_normal((n_time, n_voxels)).astype(np.float32)
    pars = np.column_stack([rng.uniform(3.5, 6.5, n_voxels), rng.uniform(0.5, 1.8, n_voxels)]).astype(np.float32)
    kernels = model.get_kernel(tf.constant(pars)).numpy().astype(np.float64)
    ours = model.convolve(tf.constant(x), tf.constant(pars)).numpy()
    np.testing.assert_allclose(ours, numpy_causal_convolution(x.astype(np.float64), kernels), atol=1e-5)
    shared = convolve(tf.constant(x), model.canonical_kernel).numpy()
    reference = numpy_causal_convolution(x.astype(np.float64), np.tile(model.canonical_kernel[:, None], (1, n_voxels)))
    np.testing.assert_allclose(shared, reference, atol=1e-5)


def test_convolution_respects_run_boundaries(rng):
    kernel = SPMHRFModel(1.0).get_kernel().numpy()
    x = np.zeros((60, 1), np.float32)
    x[25, 0] = 1.0  # an impulse near the end of the first run
    out = convolve(tf.constant(x), kernel, segments=(30, 30)).numpy()
    assert np.all(out[30:] == 0)
    np.testing.assert_allclose(out[25:30, 0], kernel[:5], atol=1e-7)
    with pytest.raises(ValueError, match="do not add up"):
        convolve(tf.constant(x), kernel, segments=(30, 20))


def test_hrf_gradients_match_finite_differences(rng):
    model = SPMHRFModel(1.0, unique_hrfs=True)
    x = tf.constant(rng.standard_normal((120, 3)).astype(np.float64))
    pars = tf.Variable([[5.0, 0.9], [6.5, 1.2], [4.0, 0.5]], dtype=tf.float32)
    target = tf.constant(rng.standard_normal((120, 3)).astype(np.float32))

    def loss(p):
        return tf.reduce_sum(model.convolve(tf.cast(x, tf.float32), p) * target)

    with tf.GradientTape() as tape:
        value = loss(pars)
    grad = tape.gradient(value, pars).numpy()
    assert np.all(np.isfinite(grad))
    eps = 1e-2
    for i in range(3):
        for j in range(2):
            step = np.zeros((3, 2), np.float32)
            step[i, j] = eps
            numeric = (loss(pars + step) - loss(pars - step)).numpy() / (2 * eps)
            assert grad[i, j] == pytest.approx(numeric, rel=2e-2, abs=2e-3)


def test_bad_hrf_arguments():
    with pytest.raises(ValueError, match="repetition time"):
        SPMHRFModel(0.0)
    with pytest.raises(ValueError, match="finite"):
        CustomHRFModel([0.0, np.nan])
    kernel = CustomHRFModel([0.0, 1.0, 3.0]).get_kernel().numpy()
    np.testing.assert_allclose(kernel, [0.0, 0.25, 0.75])


@pytest.mark.parametrize("n_time", [40, 700])
def test_shared_kernel_convolution_equals_numpy(rng, n_time):
    """Both routes of the shared-kernel convolution (Toeplitz product for short runs, conv1d for long ones) give
    numpy's causal convolution, run by run."""
    from bids_encoder.hrf import TOEPLITZ_MAX_TIME, convolve

    assert (n_time <= TOEPLITZ_MAX_TIME) != (n_time == 700)
    kernel = rng.normal(size=12).astype(np.float32)
    series = rng.normal(size=(2 * n_time, 5, 3)).astype(np.float32)
    out = convolve(tf.constant(series), tf.constant(kernel), segments=(n_time, n_time)).numpy()
    for start in (0, n_time):
        part = series[start:start + n_time]
        expected = np.apply_along_axis(lambda s: np.convolve(s, kernel)[:n_time], 0, part)
        np.testing.assert_allclose(out[start:start + n_time], expected, rtol=1e-4, atol=1e-4)
