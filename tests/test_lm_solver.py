"""The Levenberg–Marquardt solver's machinery: compiled once, active set, stalled voxels, the kernel-space path
for per-voxel HRFs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bids_encoder.optimize._gram as gram
import bids_encoder.optimize.levenberg_marquardt as lm
from bids_encoder.models import GaussianPRF2D, LinearModelWithBaselineHRF, SPMHRFModel
from bids_encoder.optimize import ParameterFitter
from bids_encoder.optimize._graphs import model_key
from bids_encoder.optimize.levenberg_marquardt import kernels_of


def _hrf_problem(rng, n_voxels=400, n_time=240):
    index = pd.MultiIndex.from_arrays([np.repeat([1, 2], n_time // 2), np.tile(np.arange(n_time // 2), 2)],
                                      names=["run", "volume"])
    paradigm = pd.DataFrame((rng.random((n_time, 3)) < 0.12).astype(np.float32), columns=list("abc"), index=index)
    truth = pd.DataFrame({"baseline": rng.normal(20, 2, n_voxels), "hrf_delay": rng.uniform(4.5, 7.0, n_voxels),
                          "hrf_dispersion": rng.uniform(0.7, 1.3, n_voxels)})
    weights = pd.DataFrame(rng.normal(1, 0.3, (3, n_voxels)), index=paradigm.columns)
    model = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(1.5, unique_hrfs=True), weights=weights)
    data = model.simulate(parameters=truth, noise=0.5, random_state=int(rng.integers(1e6)))
    confounds = rng.normal(size=(n_time, 5))
    return model, paradigm, truth, data, confounds


def _fit_hrfs(model, data, paradigm, truth, confounds, **kwargs):
    fitter = ParameterFitter(model, data, paradigm, **kwargs)
    estimate = fitter.fit(init_pars=truth.assign(hrf_delay=6.0, hrf_dispersion=1.0), optimizer="lm",
                          fixed_pars=["baseline"], confounds=confounds, progressbar=False)
    return fitter, estimate


def test_kernel_space_hrf_fit_equals_the_full_one(rng, monkeypatch):
    """Per-voxel HRFs with fixed weights: the taps² statistics give the fit of the full (time × voxels) solver."""
    model, paradigm, truth, data, confounds = _hrf_problem(rng)
    fast, fast_estimate = _fit_hrfs(model, data, paradigm, truth, confounds)
    assert any(type(kernel).__name__ == "GramKernel" for kernel in kernels_of(model).values())
    monkeypatch.setattr(gram, "gram_applicable", lambda *args: False)
    full, full_estimate = _fit_hrfs(model, data, paradigm, truth, confounds)
    assert any(type(kernel).__name__ == "Kernel" for kernel in kernels_of(model).values())  # the full solver ran
    difference = np.abs(fast_estimate["hrf_delay"] - full_estimate["hrf_delay"]).to_numpy()
    assert np.median(difference) < 1e-4 and np.quantile(difference, 0.99) < 0.02
    np.testing.assert_allclose(fast.r2, full.r2, atol=1e-4)
    assert np.corrcoef(fast_estimate["hrf_delay"], truth["hrf_delay"])[0, 1] > 0.8


def test_compiled_once_across_chunks_and_fits(rng):
    """Several chunks, a second fit (a warm start from the first) and a new instance of an equal model (as a
    cross-validation fold builds) reuse one trace; a model with other constants gets its own."""
    model, paradigm, truth, data, confounds = _hrf_problem(rng, n_voxels=300)
    confounds = np.column_stack([confounds, np.arange(len(confounds)) % 7])  # a set-up no other test uses
    lm._KERNELS.pop(model_key(model), None)  # other tests of this process compiled this family's set-ups already
    fitter, estimate = _fit_hrfs(model, data, paradigm, truth, confounds, memory_limit=2_500_000)
    assert len(fitter.history) >= 3  # several chunks
    (kernel,) = list(kernels_of(model).values())
    traces = kernel.n_traces
    fitter.fit(init_pars=estimate, optimizer="lm", fixed_pars=["baseline"], confounds=confounds, progressbar=False)
    twin = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(1.5, unique_hrfs=True), weights=model.weights)
    _fit_hrfs(twin, data, paradigm, truth, confounds)
    assert kernels_of(twin) is kernels_of(model) and kernel.n_traces == traces <= 1
    other = LinearModelWithBaselineHRF(paradigm, hrf_model=SPMHRFModel(1.5, unique_hrfs=True, delay=5.5),
                                       weights=model.weights)
    assert model_key(other) != model_key(model) == model_key(twin)


def _bars(n_side=12, n_time=96):
    side = np.linspace(-5, 5, n_side)
    gx, gy = np.meshgrid(side, side)
    positions = np.tile(np.linspace(-6, 6, 24), n_time // 24)
    horizontal = np.abs(gx.ravel()[None] - positions[:, None]) < 1.0
    vertical = np.abs(gy.ravel()[None] - positions[:, None]) < 1.0
    bars = np.where((np.arange(n_time) // 24 % 2 == 0)[:, None], horizontal, vertical)
    return np.column_stack([gx.ravel(), gy.ravel()]), pd.DataFrame(bars.astype(np.float32))


def test_active_set_shrinks_and_keeps_each_voxels_fit(rng):
    """Voxels leave the batch as they converge, and a voxel's fit is the same alone as in a batch."""
    grid, paradigm = _bars()
    model = GaussianPRF2D(grid)
    n = 60
    truth = pd.DataFrame({"x": rng.uniform(-3, 3, n), "y": rng.uniform(-3, 3, n), "sd": rng.uniform(0.8, 2, n),
                          "baseline": np.zeros(n), "amplitude": rng.uniform(1, 2, n)})
    data = model.simulate(paradigm, truth, noise=0.2, random_state=2)
    init = truth.assign(x=truth.x + rng.normal(0, 0.8, n), y=truth.y + rng.normal(0, 0.8, n))
    init.iloc[:30] = truth.iloc[:30].to_numpy()  # half start at the truth and converge at once
    batch = ParameterFitter(model, data, paradigm)
    together = batch.fit(init_pars=init, optimizer="lm", progressbar=False)
    sizes = batch.batch_sizes[0]
    assert sizes[0] == n and sizes[-1] < n and sizes == sorted(sizes, reverse=True)
    alone = ParameterFitter(model, data.iloc[:, 40:45], paradigm).fit(init_pars=init.iloc[40:45], optimizer="lm",
                                                                      progressbar=False)
    np.testing.assert_allclose(alone.to_numpy(), together.iloc[40:45].to_numpy(), rtol=1e-4, atol=1e-4)


def test_voxels_that_cannot_move_are_stalled_not_converged(rng):
    """With the amplitude fixed at 0 the field parameters have no influence: no step is ever accepted, the
    damping reaches its maximum, and the voxel is reported stalled."""
    grid, paradigm = _bars()
    model = GaussianPRF2D(grid)
    n = 6
    truth = pd.DataFrame({"x": np.zeros(n), "y": np.zeros(n), "sd": np.ones(n), "baseline": np.zeros(n),
                          "amplitude": np.ones(n)})
    data = model.simulate(paradigm, truth, noise=0.2, random_state=3)
    fitter = ParameterFitter(model, data, paradigm)
    fitter.fit(init_pars=truth.assign(amplitude=0.0, x=1.0), optimizer="lm", fixed_pars=["amplitude", "baseline"],
               max_n_iterations=200, min_n_iterations=200, progressbar=False)
    assert fitter.voxel_stalled.all() and not fitter.voxel_converged.any()


@pytest.mark.parametrize("optimizer", [None, "lm"])
def test_default_optimizer_is_levenberg_marquardt(rng, optimizer):
    """fit() with default arguments runs LM (the recipes' solver), not Adam."""
    grid, paradigm = _bars()
    model = GaussianPRF2D(grid)
    truth = pd.DataFrame({"x": [1.0], "y": [-1.0], "sd": [1.2], "baseline": [0.0], "amplitude": [1.5]})
    data = model.simulate(paradigm, truth, noise=0.1, random_state=4)
    fitter = ParameterFitter(model, data, paradigm)
    fitter.fit(init_pars=truth.assign(x=0.0, y=0.0), optimizer=optimizer, progressbar=False)
    assert fitter.n_iterations <= 50 and fitter.batch_sizes[0]  # LM's call sizes are recorded, Adam's are not


@pytest.mark.parametrize("name", ["GaussianPRF2D", "GaussianPRF2DWithHRF", "GaussianPRF2DWithHRF-unique",
                                  "CSSPRF2DWithHRF", "DifferenceOfGaussiansPRF2DWithHRF"])
def test_closed_form_prf_jacobians_equal_forward_mode(rng, name):
    """The closed-form pRF Jacobians (field derivatives in one product, HRF applied to all, forward mode through
    per-voxel kernels only) equal forward-mode differentiation of the whole prediction, through the transforms,
    with a fixed parameter and two runs."""
    import tensorflow as tf

    import bids_encoder.models as models

    grid, paradigm = _bars(n_side=9, n_time=48)
    unique = name.endswith("-unique")
    klass = getattr(models, name.removesuffix("-unique"))
    kwargs = {"hrf_model": SPMHRFModel(1.5, unique_hrfs=unique)} if "WithHRF" in name else {}
    model = klass(grid, positive_amplitude=True, **kwargs)
    labels = model.get_parameter_labels()
    n = 6
    values = {"x": rng.uniform(-2, 2, n), "y": rng.uniform(-2, 2, n), "sd": rng.uniform(0.8, 2, n),
              "baseline": rng.normal(0, 1, n), "amplitude": rng.uniform(0.5, 2, n), "n": rng.uniform(0.3, 0.9, n),
              "srf_amplitude": rng.uniform(0.1, 0.5, n), "srf_size": rng.uniform(1.5, 3, n),
              "hrf_delay": rng.uniform(5, 7, n), "hrf_dispersion": rng.uniform(0.8, 1.2, n)}
    transforms = model.transforms
    fixed = [labels.index("y")]
    free_index = [i for i in range(len(labels)) if i not in fixed]
    free = tf.constant(np.stack([transforms[labels[i]].backward(values[labels[i]]) for i in free_index], 1),
                       tf.float32)
    fixed_values = tf.constant(values["y"], tf.float32)

    def natural(f):
        columns = []
        for i, label in enumerate(labels):
            columns.append(fixed_values if i in fixed else transforms[label].forward(f[:, free_index.index(i)]))
        return tf.stack(columns, axis=1)

    stimulus = tf.constant(paradigm.to_numpy())
    segments = (24, 24)
    prediction, jacobian = model._prediction_and_jacobian(stimulus, natural, free, None, segments,
                                                          free_index=free_index)
    np.testing.assert_allclose(prediction, model._predict(stimulus, natural(free), segments=segments), rtol=1e-5,
                               atol=1e-5)
    for j in range(len(free_index)):
        with tf.autodiff.ForwardAccumulator(free, tf.one_hot(tf.fill([n], j), len(free_index))) as accumulator:
            value = model._predict(stimulus, natural(free), segments=segments)
        expected = accumulator.jvp(value).numpy()
        np.testing.assert_allclose(jacobian[..., j], expected, rtol=2e-3, atol=2e-4 * np.abs(expected).max())


def test_rank_deficient_jacobian_at_the_damping_floor(rng, monkeypatch):
    """Two parameters that act only through a + 10⁴·b (exactly collinear Jacobian columns, curvatures 10⁸ apart)
    with the damping at its floor: the Jacobi-scaled damped system stays solvable and the fit reaches the
    least-squares optimum of a + 10⁴·b."""
    import tensorflow as tf

    import bids_encoder.optimize.levenberg_marquardt as lm
    from bids_encoder.models.base import EncodingModel

    class Collinear(EncodingModel):
        parameter_labels = ["a", "b", "baseline"]

        def _predict_neural(self, paradigm, parameters, weights=None):
            return (parameters[:, 0] + 1e4 * parameters[:, 1])[tf.newaxis, :] * paradigm[:, 0:1]

    monkeypatch.setattr(lm, "LAMBDA_INIT", 1e-9)
    signal = pd.DataFrame({"s": np.sin(np.linspace(0, 12, 80)).astype(np.float32)})
    truth = pd.DataFrame({"a": rng.normal(0, 1, 4), "b": np.zeros(4), "baseline": np.ones(4)})
    model = Collinear()
    data = model.simulate(signal, truth, noise=0.05, random_state=5)
    fitter = ParameterFitter(model, data, signal)
    estimate = fitter.fit(init_pars=truth.assign(a=0.0, b=0.0), optimizer="lm", progressbar=False)
    combined = (estimate["a"] + 1e4 * estimate["b"]).to_numpy()
    design = np.column_stack([signal["s"], np.ones(80)])
    optimum = np.linalg.lstsq(design, data.to_numpy(np.float64), rcond=None)[0][0]
    np.testing.assert_allclose(combined, optimum, atol=2e-3)
