"""Stimulus posteriors on grids: closed-form references, accuracy, calibration, circular and 2-D stimuli."""

import numpy as np
import pandas as pd
import pytest
from _decoding_sim import ANGLES, GRID, gaussian_population, von_mises_population
from scipy import special, stats

from bids_encoder.decoding import (
    ResidualFitter,
    disc_apertures,
    interval_contains,
    make_grid,
    posterior_summary,
    stimulus_pdf,
    tuning_matrix,
)
from bids_encoder.models import GaussianPRF, GaussianPRF2D, GaussianPRFWithHRF, SPMHRFModel
from bids_encoder.optimize import ParameterFitter


def _true_value_density(pdf, truth):
    """The posterior density at the grid point nearest to each true value."""
    grid = pdf.columns.to_numpy()
    nearest = np.argmin(np.abs(grid[np.newaxis, :] - np.asarray(truth)[:, np.newaxis]), axis=1)
    return pdf.to_numpy()[np.arange(len(pdf)), nearest]


@pytest.fixture(scope="module")
def numerosity():
    """200 voxels with Gaussian tuning (amplitudes 1–2), noise SDs τ in [0.5, 1.5] (SNR = amplitude / τ ≈ 1.5
    on average), ρ = 0.3, σ² = 0.005; Ω fitted on 100 training volumes with the true tuning; 400 test trials
    with stimuli uniform on [0, 100]."""
    rng = np.random.default_rng(5)
    model, omega, _ = gaussian_population(rng, 200, rho=0.3, sigma2=0.005, amplitude=(1.0, 2.0))
    train = rng.uniform(0, 100, 100)
    fitter = ResidualFitter(model, model.simulate(paradigm=train, noise=omega, random_state=1), train,
                            stimulus_range=GRID)
    fitted = fitter.fit()
    truth = rng.uniform(0, 100, 400)
    test = model.simulate(paradigm=truth, noise=omega, random_state=2)
    return model, fitted, fitter, truth, test


def test_matches_scipy_closed_forms(rng):
    """On 6 voxels and 40 grid points, the log posterior equals scipy's multivariate normal (and Student-t,
    ν = 4) log density over the grid, normalised by the sum × the grid step (to 1e-4)."""
    model, omega, _ = gaussian_population(rng, 6)
    grid = np.linspace(0, 100, 40)
    data = model.simulate(paradigm=rng.uniform(0, 100, 5), noise=omega, random_state=0)
    means = model.predict(paradigm=grid).to_numpy(np.float64)
    step = grid[1] - grid[0]
    for dof in (None, 4.0):
        pdf = stimulus_pdf(model, data, grid, omega=omega, dof=dof, log=True)
        assert pdf.shape == (5, 40) and pdf.columns.name == "stimulus" and pdf.index.equals(data.index)
        for row in range(5):
            if dof is None:
                reference = [stats.multivariate_normal(m, omega).logpdf(data.iloc[row]) for m in means]
            else:
                reference = [stats.multivariate_t(m, omega, df=dof).logpdf(data.iloc[row]) for m in means]
            reference = np.array(reference)
            reference -= special.logsumexp(reference) + np.log(step)
            np.testing.assert_allclose(pdf.iloc[row].to_numpy(), reference, atol=1e-4)
    # the model method is the same function, Ω from model.omega
    model.omega = omega
    np.testing.assert_allclose(model.get_stimulus_pdf(data, grid).to_numpy(),
                               stimulus_pdf(model, data, grid, omega=omega).to_numpy(), rtol=1e-6)


def test_summaries_match_closed_forms():
    """A normal density on a fine grid: mean, SD, mode and the 95 % interval (μ ± 1.96σ); a von Mises density
    (κ = 2) straddling 0: circular mean, the circular SD sqrt(−2 ln(I₁(κ)/I₀(κ))) and an interval that wraps."""
    grid = np.linspace(-10, 30, 2001)
    pdf = pd.DataFrame([stats.norm(7.0, 2.0).pdf(grid), stats.norm(12.0, 0.5).pdf(grid)],
                       columns=pd.Index(grid, name="stimulus"))
    summary = posterior_summary(pdf)
    np.testing.assert_allclose(summary["mean"], [7.0, 12.0], atol=1e-3)
    np.testing.assert_allclose(summary["sd"], [2.0, 0.5], atol=1e-3)
    np.testing.assert_allclose(summary["mode"], [7.0, 12.0], atol=0.02)
    np.testing.assert_allclose(summary["lower"], [7.0 - 1.96 * 2.0, 12.0 - 1.96 * 0.5], atol=5e-3)
    np.testing.assert_allclose(summary["upper"], [7.0 + 1.96 * 2.0, 12.0 + 1.96 * 0.5], atol=5e-3)

    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    density = stats.vonmises(2.0, loc=0.1).pdf(angles)
    circular = posterior_summary(pd.DataFrame([density], columns=pd.Index(angles, name="angle")), circular=True)
    assert circular["mean"].iloc[0] == pytest.approx(0.1, abs=1e-3)
    assert circular["sd"].iloc[0] == pytest.approx(np.sqrt(-2 * np.log(special.i1(2.0) / special.i0(2.0))),
                                                   abs=1e-3)
    lower, upper = stats.vonmises(2.0, loc=0.1).ppf([0.025, 0.975])
    assert circular["lower"].iloc[0] == pytest.approx(lower % (2 * np.pi), abs=0.01)
    assert circular["upper"].iloc[0] == pytest.approx(upper, abs=0.01)
    assert interval_contains(circular, [0.0, 6.2, 3.0], circular=True).tolist() == [True, True, False]


def test_decoding_accuracy_and_calibration(numerosity):
    """Posterior means correlate with the true stimulus (r ≥ 0.8, here at SNR ≈ 1.5 per voxel and 200 voxels);
    the 95 % intervals hold the truth in 90–98 % of 400 trials; the fitted Ω is as good as the true one."""
    model, fitted, _, truth, test = numerosity
    pdf = model.get_stimulus_pdf(test, GRID, omega=fitted)
    summary = posterior_summary(pdf)
    r = np.corrcoef(summary["mean"], truth)[0, 1]
    coverage = interval_contains(summary, truth).mean()
    assert r >= 0.8, r
    assert 0.90 <= coverage <= 0.98, coverage
    assert np.all(summary["sd"] > 0) and np.all(summary["lower"] <= summary["upper"])


def test_spherical_omega_is_worse_on_correlated_noise(numerosity):
    """With Ω = σ² I (σ² the mean fitted variance) instead of the fitted Ω, on noise with ρ = 0.3: a larger
    RMSE of the posterior mean, a mean log posterior density at the truth lower by more than 1 nat, and
    overconfident intervals (coverage < 80 %)."""
    model, fitted, _, truth, test = numerosity
    spherical = np.mean(np.diag(fitted)) * np.eye(len(fitted))
    scores = {}
    for name, omega in (("fitted", fitted), ("spherical", spherical)):
        pdf = stimulus_pdf(model, test, GRID, omega=omega)
        summary = posterior_summary(pdf)
        scores[name] = (np.sqrt(np.mean((summary["mean"] - truth) ** 2)),
                        np.mean(np.log(np.maximum(_true_value_density(pdf, truth), 1e-300))),
                        interval_contains(summary, truth).mean())
    assert scores["spherical"][0] > 1.2 * scores["fitted"][0], scores
    assert scores["spherical"][1] < scores["fitted"][1] - 1.0, scores
    assert scores["spherical"][2] < 0.8, scores


def test_circular_decoding_with_von_mises():
    """100 von Mises voxels, angles uniform on [0, 2π): the circular error of the posterior mean is below
    0.5 rad on average, stimuli within 0.3 rad of the wrap (0 ≡ 2π) are decoded as well as the others, and
    the circular 95 % intervals hold the truth in 88–99 % of 300 trials."""
    rng = np.random.default_rng(11)
    model, omega, _ = von_mises_population(rng, 100)
    truth = rng.uniform(0, 2 * np.pi, 300)
    data = model.simulate(paradigm=truth, noise=omega, random_state=4)
    pdf = stimulus_pdf(model, data, ANGLES, omega=omega)
    assert pdf.attrs["circular"] == [True]
    summary = posterior_summary(pdf)
    error = np.abs(np.angle(np.exp(1j * (summary["mean"].to_numpy() - truth))))
    near_wrap = np.minimum(truth, 2 * np.pi - truth) < 0.3
    assert error.mean() < 0.5, error.mean()
    assert near_wrap.sum() >= 10 and error[near_wrap].mean() < 1.5 * error.mean() + 0.05
    assert np.all((summary["mean"] >= 0) & (summary["mean"] < 2 * np.pi))
    coverage = interval_contains(summary, truth, circular=True).mean()
    assert 0.88 <= coverage <= 0.99, coverage


def test_posterior_never_nan_for_extreme_data(numerosity):
    """Data × 1e30, 1e-30 and single voxels at ±1e35: finite log densities, densities integrating to 1
    (Gaussian and Student-t), and a degenerate prior (zero but on 3 grid points) respected."""
    model, fitted, _, _, test = numerosity
    extreme = test.iloc[:4].copy()
    extreme.iloc[0] *= 1e30
    extreme.iloc[1] *= 1e-30
    extreme.iloc[2, 0] = 1e35
    extreme.iloc[3, :] = -1e35
    for dof in (None, 3.0):
        log_pdf = stimulus_pdf(model, extreme, GRID, omega=fitted, dof=dof, log=True)
        assert np.all(np.isfinite(log_pdf.to_numpy()))
        mass = np.exp(log_pdf.to_numpy()).sum(axis=1) * (GRID[1] - GRID[0])
        np.testing.assert_allclose(mass, 1.0, rtol=0.02)  # a point mass may sit on a half-width edge cell
        assert np.all(np.isfinite(posterior_summary(log_pdf).to_numpy()))
    prior = np.zeros(len(GRID))
    prior[[10, 50, 90]] = 1.0
    pdf = stimulus_pdf(model, test.iloc[:5], GRID, omega=fitted, prior=prior)
    assert np.all(pdf.to_numpy()[:, prior == 0] == 0) and np.all(np.isfinite(pdf.to_numpy()))


def test_two_dimensional_position_decoding():
    """GaussianPRF2D, 150 voxels on a 13 × 13 pixel screen, a disc (radius 1°) at random positions: posterior
    means over a 21 × 21 grid of positions correlate with the true x and y (r ≥ 0.8), the 95 % intervals hold
    the truth in 85–99 % of trials, per dimension."""
    rng = np.random.default_rng(3)
    axis = np.linspace(-6, 6, 13)
    pixels = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    n_voxels = 150
    parameters = pd.DataFrame({"x": rng.uniform(-5, 5, n_voxels), "y": rng.uniform(-5, 5, n_voxels),
                               "sd": rng.uniform(1, 3, n_voxels), "baseline": 0.0,
                               "amplitude": rng.uniform(5, 10, n_voxels)})
    model = GaussianPRF2D(pixels, parameters=parameters)
    apertures = disc_apertures(model.grid_coordinates, radius=1.0)
    tuning = tuning_matrix(model).to_numpy(np.float64)
    tau = rng.uniform(0.5, 1.0, n_voxels)
    omega = 0.2 * np.outer(tau, tau) + 0.8 * np.diag(tau**2) + 0.01 * tuning.T @ tuning
    truth = rng.uniform(-5, 5, (150, 2))
    data = model.simulate(paradigm=apertures(truth), noise=omega, random_state=6)
    grid = make_grid(x=np.linspace(-6, 6, 21), y=np.linspace(-6, 6, 21))
    pdf = stimulus_pdf(model, data, grid, omega=omega, paradigm_fn=apertures)
    assert pdf.shape == (150, 441) and list(pdf.columns.names) == ["x", "y"]
    summary = posterior_summary(pdf)
    for i, dim in enumerate("xy"):
        assert np.corrcoef(summary[f"{dim}_mean"], truth[:, i])[0, 1] >= 0.8
        coverage = interval_contains(summary, truth[:, i], dimension=dim).mean()
        assert 0.85 <= coverage <= 0.99, (dim, coverage)


def test_hrf_models_decode_without_the_hrf(rng):
    """A …WithHRF model decodes (single-trial) patterns with its neural response plus baseline, as the same
    model without HRF; its ResidualFitter works on BOLD time series (the HRF-convolved prediction)."""
    model, omega, _ = gaussian_population(rng, 8)
    with_hrf = GaussianPRFWithHRF(parameters=model.parameters, hrf_model=SPMHRFModel(tr=1.0))
    data = model.simulate(paradigm=rng.uniform(0, 100, 6), noise=omega, random_state=0)
    np.testing.assert_allclose(stimulus_pdf(with_hrf, data, GRID, omega=omega).to_numpy(),
                               stimulus_pdf(model, data, GRID, omega=omega).to_numpy(), rtol=1e-5, atol=1e-9)
    series = np.repeat(rng.uniform(0, 100, 20), 6)
    bold = with_hrf.simulate(paradigm=series, noise=omega, random_state=1)
    fitter = ResidualFitter(with_hrf, bold, series, stimulus_range=GRID)
    np.testing.assert_allclose(fitter.residuals.to_numpy(), bold.to_numpy() - with_hrf.predict(series).to_numpy(),
                               atol=1e-5)
    assert np.linalg.eigvalsh(fitter.fit().to_numpy()).min() > 0


def test_decoding_with_a_fitted_encoding_model():
    """The whole chain on simulated numerosity data: Gaussian pRFs fitted by ParameterFitter (grid, then LM) on
    150 training volumes of 100 voxels, the better-fitted half kept (R² ≥ median, centres within the range,
    sd < 100), Ω fitted on their training residuals, 300 new trials decoded: posterior means r ≥ 0.8 with the
    truth, σ̂² within a factor 2 of the truth, 95 % intervals covering 80–98 % (below the true model's ~95 %:
    the fitted tuning's errors are not in Ω)."""
    rng = np.random.default_rng(21)
    model, omega, _ = gaussian_population(rng, 100, rho=0.3, sigma2=0.005, amplitude=(1.0, 2.0))
    train = rng.uniform(0, 100, 150)
    data = model.simulate(paradigm=train, noise=omega, random_state=1)
    fitter = ParameterFitter(GaussianPRF(), data, train)
    grid = fitter.fit_grid(np.linspace(0, 100, 21), np.linspace(5, 40, 8), None, None, use_correlation_cost=True)
    parameters = fitter.fit(init_pars=fitter.refine_baseline_and_amplitude(grid), optimizer="lm")
    r2 = pd.Series(np.asarray(fitter.r2), index=parameters.index)
    keep = (r2 >= r2.median()) & parameters.mu.between(-20, 120) & (parameters.sd < 100)
    fitted_model = GaussianPRF(parameters=parameters[keep])
    residuals = ResidualFitter(fitted_model, data.loc[:, keep], train, stimulus_range=GRID)
    fitted_omega = residuals.fit()
    assert 0.0025 < residuals.sigma2 < 0.01, residuals.sigma2
    truth = rng.uniform(0, 100, 300)
    test = model.simulate(paradigm=truth, noise=omega, random_state=2)
    summary = posterior_summary(fitted_model.get_stimulus_pdf(test.loc[:, keep], GRID, omega=fitted_omega))
    assert np.corrcoef(summary["mean"], truth)[0, 1] >= 0.8
    coverage = interval_contains(summary, truth).mean()
    assert 0.80 <= coverage <= 0.98, coverage
