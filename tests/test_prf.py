import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import bar_apertures

from bids_encoder.models import (
    DifferenceOfGaussiansPRF2D,
    DifferenceOfGaussiansPRF2DWithHRF,
    DivisiveNormalizationGaussianPRF2D,
    DivisiveNormalizationGaussianPRF2DWithHRF,
    GaussianPRF,
    GaussianPRF2D,
    GaussianPRF2DWithHRF,
    GaussianPRFWithHRF,
    SPMHRFModel,
    VonMisesPRF,
    VonMisesPRFWithHRF,
)
from bids_encoder.optimize import ParameterFitter

TR = 1.5
N_VOXELS = 80


def one_dimensional(model_class, rng, circular=False):
    """Stimulus values sweeping the tuning axis; truth with positions and sizes spread out."""
    n_time = 160
    if circular:
        stimulus = np.tile(np.linspace(-np.pi, np.pi, 16, endpoint=False), n_time // 16)
        truth = pd.DataFrame({"mu": rng.uniform(-2.5, 2.5, N_VOXELS), "kappa": rng.uniform(1.0, 4.0, N_VOXELS)})
        grid = [np.linspace(-np.pi, np.pi, 24, endpoint=False), np.geomspace(0.5, 8, 10)]
        size = "kappa"
    else:
        stimulus = rng.permutation(np.tile(np.linspace(0, 10, 20), n_time // 20))
        truth = pd.DataFrame({"mu": rng.uniform(2, 8, N_VOXELS), "sd": rng.uniform(0.5, 2.5, N_VOXELS)})
        grid = [np.linspace(0, 10, 41), np.geomspace(0.3, 4, 12)]
        size = "sd"
    truth["amplitude"] = rng.uniform(1.0, 2.0, N_VOXELS)
    truth["baseline"] = rng.normal(0, 1, N_VOXELS)
    return pd.DataFrame({"s": stimulus}), truth, grid + [None, None], ["mu", size]


def two_dimensional(rng, labels):
    paradigm, grid_coordinates = bar_apertures()
    values = {
        "x": rng.uniform(-3.5, 3.5, N_VOXELS), "y": rng.uniform(-3.5, 3.5, N_VOXELS),
        "sd": rng.uniform(0.6, 2.0, N_VOXELS), "baseline": rng.normal(0, 1, N_VOXELS),
        "amplitude": rng.uniform(1.0, 2.0, N_VOXELS), "srf_amplitude": rng.uniform(0.1, 0.4, N_VOXELS),
        "srf_size": rng.uniform(2.0, 3.0, N_VOXELS), "rf_amplitude": rng.uniform(1.0, 2.0, N_VOXELS),
        "neural_baseline": rng.uniform(0.5, 1.5, N_VOXELS), "surround_baseline": rng.uniform(1.0, 2.0, N_VOXELS),
    }
    return paradigm, grid_coordinates, pd.DataFrame({label: values[label] for label in labels})


CASES = [
    ("GaussianPRF", GaussianPRF, False), ("GaussianPRFWithHRF", GaussianPRFWithHRF, False),
    ("VonMisesPRF", VonMisesPRF, True), ("VonMisesPRFWithHRF", VonMisesPRFWithHRF, True),
]


@pytest.mark.parametrize(("name", "model_class", "circular"), CASES, ids=[c[0] for c in CASES])
def test_one_dimensional_recovery(rng, name, model_class, circular):
    """SNR (signal SD / noise SD) about 5; grid → LM recovers position and size with r ≥ 0.95."""
    paradigm, truth, grid, checked = one_dimensional(model_class, rng, circular)
    kwargs = {"hrf_model": SPMHRFModel(TR)} if "HRF" in name else {}
    model = model_class(paradigm=paradigm, **kwargs)
    signal = model.predict(parameters=truth)
    noise = float(signal.std().mean()) / 5.0
    data = model.simulate(parameters=truth, noise=noise, random_state=1)
    fitter = ParameterFitter(model, data, paradigm)
    init = fitter.fit_grid(*grid, progressbar=False)
    estimate = fitter.fit(init_pars=init, optimizer="lm", max_n_iterations=50, progressbar=False)
    for label in checked:
        if label == "mu" and circular:
            error = np.angle(np.exp(1j * (estimate[label] - truth[label])))
            assert np.median(np.abs(error)) < 0.1
            r = np.corrcoef(truth[label] + error, truth[label])[0, 1]  # each estimate wrapped near its truth
        else:
            r = np.corrcoef(estimate[label], truth[label])[0, 1]
        assert r >= 0.95, (label, r)


CASES_2D = [
    ("GaussianPRF2D", GaussianPRF2D), ("GaussianPRF2DWithHRF", GaussianPRF2DWithHRF),
    ("DifferenceOfGaussiansPRF2D", DifferenceOfGaussiansPRF2D),
    ("DifferenceOfGaussiansPRF2DWithHRF", DifferenceOfGaussiansPRF2DWithHRF),
    ("DivisiveNormalizationGaussianPRF2D", DivisiveNormalizationGaussianPRF2D),
    ("DivisiveNormalizationGaussianPRF2DWithHRF", DivisiveNormalizationGaussianPRF2DWithHRF),
]


@pytest.mark.parametrize(("name", "model_class"), CASES_2D, ids=[c[0] for c in CASES_2D])
def test_two_dimensional_recovery(rng, name, model_class):
    """SNR (signal SD / noise SD) 5 for Gaussians, 10 for the centre-surround models (whose centre size trades
    off against the surround); a Gaussian grid (closed-form baseline and amplitude), then LM on the full model."""
    kwargs = {"hrf_model": SPMHRFModel(TR)} if "HRF" in name else {}
    probe = model_class(grid_coordinates=bar_apertures()[1], **kwargs)
    paradigm, grid_coordinates, truth = two_dimensional(rng, probe.get_parameter_labels())
    model = model_class(grid_coordinates=grid_coordinates, paradigm=paradigm, **kwargs)
    signal = model.predict(parameters=truth)
    snr = 5.0 if model_class in (GaussianPRF2D, GaussianPRF2DWithHRF) else 10.0
    data = model.simulate(parameters=truth, noise=float(signal.std().mean()) / snr, random_state=2)

    gaussian_class = GaussianPRF2DWithHRF if "HRF" in name else GaussianPRF2D
    gaussian = gaussian_class(grid_coordinates=grid_coordinates, **kwargs)
    grid_fitter = ParameterFitter(gaussian, data, paradigm)
    start = grid_fitter.fit_grid(np.linspace(-5, 5, 21), np.linspace(-5, 5, 21), np.geomspace(0.4, 4, 10),
                                 None, None, progressbar=False)
    init = pd.DataFrame(index=data.columns)
    for label in model.get_parameter_labels():
        init[label] = start[label] if label in start else np.median(truth[label])
    if "neural_baseline" in init:  # the unstimulated level is the Gaussian fit's baseline
        init["neural_baseline"] = start["baseline"] * init["surround_baseline"]
    fitter = ParameterFitter(model, data, paradigm)
    estimate = fitter.fit(init_pars=init, optimizer="lm", max_n_iterations=100, progressbar=False)
    for label in ["x", "y", "sd"]:
        r = np.corrcoef(estimate[label], truth[label])[0, 1]
        assert r >= 0.95, (label, r)
    assert fitter.r2.median() > 0.9


ALL_MODELS = [c[1] for c in CASES] + [c[1] for c in CASES_2D]


@pytest.mark.parametrize("model_class", ALL_MODELS, ids=[m.__name__ for m in ALL_MODELS])
def test_gradients_finite_across_bounds(model_class):
    """Unconstrained values from -30 to 30 (sd → floor, kappa → large, sizes → bounds): finite gradients."""
    if "2D" in model_class.__name__:
        paradigm, grid_coordinates = bar_apertures(n_side=8)
        kwargs = {"grid_coordinates": grid_coordinates}
    else:
        paradigm = pd.DataFrame({"s": np.linspace(-3, 3, 40)})
        kwargs = {}
    if "HRF" in model_class.__name__:
        kwargs["hrf_model"] = SPMHRFModel(TR, unique_hrfs=True)
    model = model_class(paradigm=paradigm, **kwargs)
    labels = model.get_parameter_labels()
    transforms = [model.transforms[label] for label in labels]
    z = tf.Variable(np.tile(np.linspace(-30, 30, 7)[:, None], (1, len(labels))).astype(np.float32))
    with tf.GradientTape() as tape:
        natural = tf.stack([t.forward(z[:, i]) for i, t in enumerate(transforms)], axis=1)
        prediction = model._predict(tf.constant(paradigm.to_numpy(np.float32)), natural)
        loss = tf.reduce_sum(tf.square(prediction))
    gradient = tape.gradient(loss, z).numpy()
    assert np.all(np.isfinite(prediction.numpy()))
    assert np.all(np.isfinite(gradient))


def test_grid_finds_the_simulated_point_and_refine_is_exact(rng):
    paradigm, grid_coordinates = bar_apertures()
    model = GaussianPRF2DWithHRF(grid_coordinates=grid_coordinates, paradigm=paradigm, hrf_model=SPMHRFModel(TR))
    xs, ys, sds = np.linspace(-4, 4, 9), np.linspace(-4, 4, 9), np.array([0.8, 1.2, 1.8])
    picks = rng.integers(0, [9, 9, 3], size=(30, 3))
    truth = pd.DataFrame({"x": xs[picks[:, 0]], "y": ys[picks[:, 1]], "sd": sds[picks[:, 2]],
                          "baseline": rng.normal(5, 1, 30), "amplitude": rng.uniform(0.5, 3, 30)})
    data = model.predict(parameters=truth)
    fitter = ParameterFitter(model, data, paradigm)
    best = fitter.fit_grid(xs, ys, sds, None, None, progressbar=False)
    np.testing.assert_allclose(best[["x", "y", "sd"]], truth[["x", "y", "sd"]], atol=1e-6)
    np.testing.assert_allclose(best[["baseline", "amplitude"]], truth[["baseline", "amplitude"]], rtol=1e-3)
    assert fitter.grid_r2.min() > 0.9999
    scrambled = truth.assign(baseline=0.0, amplitude=1.0)
    refined = fitter.refine_baseline_and_amplitude(scrambled)
    np.testing.assert_allclose(refined[["baseline", "amplitude"]], truth[["baseline", "amplitude"]], rtol=1e-3)
    # with the grid's own baseline and amplitude (sum of squares): only exact matches score
    ssq = fitter.fit_grid(xs, ys, sds, [5.0], [1.0], progressbar=False)
    assert (ssq["baseline"] == 5.0).all()
    with pytest.raises(ValueError, match="one list of values per parameter"):
        fitter.fit_grid(xs, ys, sds)


def test_lm_beats_adam_in_fewer_iterations_and_honours_fixed_pars(rng):
    paradigm, grid_coordinates, truth = two_dimensional(rng, ["x", "y", "sd", "baseline", "amplitude"])
    model = GaussianPRF2DWithHRF(grid_coordinates=grid_coordinates, paradigm=paradigm, hrf_model=SPMHRFModel(TR))
    data = model.simulate(parameters=truth, noise=0.05, random_state=3)
    fitter = ParameterFitter(model, data, paradigm)
    init = fitter.fit_grid(np.linspace(-5, 5, 6), np.linspace(-5, 5, 6), [1.0, 2.0], None, None, progressbar=False)
    fitter.fit(init_pars=init, optimizer="adam", max_n_iterations=1000, learning_rate=0.01, progressbar=False)
    adam_r2, adam_steps = fitter.r2.median(), fitter.n_iterations
    fixed_sd = init.assign(sd=1.3)
    estimate = fitter.fit(init_pars=fixed_sd, optimizer="lm", fixed_pars=["sd"], max_n_iterations=20,
                          progressbar=False)
    assert (estimate["sd"] == np.float32(1.3)).all()
    estimate = fitter.fit(init_pars=init, optimizer="lm", max_n_iterations=100, progressbar=False)
    assert fitter.r2.median() >= adam_r2 - 1e-4
    assert fitter.n_iterations * 5 <= adam_steps
    with pytest.raises(ValueError, match="shared_pars"):
        fitter.fit(init_pars=init, optimizer="lm", shared_pars=["sd"])
    with pytest.raises(ValueError, match="Unknown optimizer"):
        fitter.fit(init_pars=init, optimizer="bfgs")


def test_positive_amplitude_and_bad_grid(rng):
    paradigm, grid_coordinates = bar_apertures(n_side=8)
    model = GaussianPRF2D(grid_coordinates=grid_coordinates, positive_amplitude=True)
    assert model.transforms["amplitude"].forward(tf.constant(-50.0)).numpy() >= 0
    assert GaussianPRF2D(grid_coordinates=grid_coordinates).transforms["amplitude"].__class__.__name__ == "Identity"
    with pytest.raises(ValueError, match="pixels"):
        model.get_paradigm(paradigm.iloc[:, :10])
    with pytest.raises(ValueError, match="grid_coordinates"):
        GaussianPRF2D(grid_coordinates=np.zeros((5, 3)))


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_prf_recipe_is_unaffected_by_the_signal_scale(rng, scale):
    """Grid → refine → Levenberg–Marquardt on BOLD ×1e-6 and ×1e6 (plus a constant voxel): the same positions,
    sizes and R², amplitudes and baselines scaled, nothing infinite, the constant voxel NaN."""
    from bids_encoder.optimize.recipes import fit_prf2d

    paradigm, grid_coordinates, truth = two_dimensional(rng, ["x", "y", "sd", "baseline", "amplitude"])
    model = GaussianPRF2DWithHRF(grid_coordinates=grid_coordinates, paradigm=paradigm, hrf_model=SPMHRFModel(TR))
    data = model.simulate(parameters=truth.assign(baseline=truth["baseline"] + 100), noise=0.1, random_state=5)
    data[N_VOXELS] = 100.0  # a voxel without signal
    original = fit_prf2d(model, data, paradigm, progressbar=False)
    scaled = fit_prf2d(model, data * scale, paradigm, progressbar=False)
    assert np.isnan(original.r2[N_VOXELS]) and np.isnan(scaled.r2[N_VOXELS])
    assert np.isnan(scaled.parameters.iloc[N_VOXELS]).all()
    fitted = scaled.parameters.iloc[:N_VOXELS]
    assert np.isfinite(fitted.to_numpy()).all() and np.isfinite(scaled.r2[:N_VOXELS]).all()
    reference = original.parameters.iloc[:N_VOXELS]
    np.testing.assert_allclose(scaled.r2[:N_VOXELS], original.r2[:N_VOXELS], atol=2e-3)
    np.testing.assert_allclose(fitted[["x", "y", "sd"]], reference[["x", "y", "sd"]], atol=0.05)
    np.testing.assert_allclose(fitted[["amplitude", "baseline"]] / scale, reference[["amplitude", "baseline"]],
                               rtol=0.02, atol=0.02)
