"""ResidualFitter: recovery of τ, ρ, σ² on simulated 1-D tuning data with known correlated noise."""

import numpy as np
import pandas as pd
import pytest
from _decoding_sim import GRID, gaussian_population, noise_covariance
from scipy import stats

from bids_encoder.decoding import ResidualFitter, tuning_matrix
from bids_encoder.models import GaussianPRF, GaussianPRF2D, LinearModelWithBaseline

RHO, SIGMA2 = 0.3, 0.01


def _gaussian_loglik(residuals, omega):
    return stats.multivariate_normal(np.zeros(len(omega)), omega).logpdf(residuals).sum()


def test_recovers_rho_sigma2_within_standard_errors(rng):
    """50 voxels, 150 volumes, 5 simulations: each ρ̂ and σ̂² within 3 SEs (Fisher information) of the truth,
    their means within 2.5 SEs of the mean; the SEs match the spread of the estimates (ratio 0.5–2); τ̂ correlates with τ (r > 0.9); the
    log-likelihood is the multivariate normal's (scipy) at Ω̂ and beats the truth's."""
    model, omega, tau = gaussian_population(rng, 50, RHO, SIGMA2)
    estimates, errors = [], []
    for repeat in range(5):
        paradigm = rng.uniform(0, 100, 150)
        data = model.simulate(paradigm=paradigm, noise=omega, random_state=100 + repeat)
        fitter = ResidualFitter(model, data, paradigm, stimulus_range=GRID)
        fitted = fitter.fit()
        se = fitter.standard_errors()
        estimates.append((fitter.rho, fitter.sigma2))
        errors.append((se["rho"], se["sigma2"]))
        if repeat == 0:
            assert fitted.shape == (50, 50) and fitted.index.equals(model.parameters.index)
            np.testing.assert_allclose(model.omega, fitted.to_numpy(), rtol=1e-6)
            np.testing.assert_allclose(fitted.to_numpy(), noise_covariance(
                fitter.tau.to_numpy(), fitter.rho, fitter.sigma2, fitter.WWT.to_numpy()), rtol=1e-10)
            assert np.corrcoef(fitter.tau, tau)[0, 1] > 0.9
            residuals = fitter.residuals.to_numpy(np.float64)
            assert fitter.log_likelihood == pytest.approx(_gaussian_loglik(residuals, fitted.to_numpy()), abs=0.5)
            assert fitter.log_likelihood > _gaussian_loglik(residuals, omega)
    estimates, errors = np.array(estimates), np.array(errors)
    truth = np.array([RHO, SIGMA2])
    assert np.all(np.abs(estimates - truth) < 3 * errors), (estimates, errors)
    mean_error = errors.mean(axis=0) / np.sqrt(len(estimates))  # the SE of the mean of the repeats
    assert np.all(np.abs(estimates.mean(axis=0) - truth) < 2.5 * mean_error), (estimates.mean(axis=0), mean_error)
    ratio = estimates.std(axis=0, ddof=1) / errors.mean(axis=0)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


def test_student_t_residuals_and_shrinkage(rng):
    """Student-t noise (ν = 5): the t fit finds 3 < ν̂ < 9 and ρ within 2 SEs (Hessian), and beats the Gaussian
    fit's likelihood; shrinkage λ = 0.4 returns exactly (1 − λ) Ω(τ̂, ρ̂, σ̂²) + λ S, positive definite."""
    model, omega, _ = gaussian_population(rng, 20, RHO, SIGMA2)
    paradigm = rng.uniform(0, 100, 250)
    data = model.simulate(paradigm=paradigm, noise=omega, dof=5, random_state=7)
    fitter = ResidualFitter(model, data, paradigm, stimulus_range=GRID)
    fitter.fit(method="t")
    se = fitter.standard_errors()
    assert 3 < fitter.dof < 9, fitter.dof
    assert abs(fitter.rho - RHO) < 2 * se["rho"], (fitter.rho, se["rho"])
    t_loglik = fitter.log_likelihood
    fitter.fit(method="gauss")
    assert t_loglik > fitter.log_likelihood + 100

    shrunk = fitter.fit(lambd=0.4).to_numpy()
    residuals = fitter.residuals.to_numpy(np.float64)
    empirical = residuals.T @ residuals / len(residuals)
    structured = noise_covariance(fitter.tau.to_numpy(), fitter.rho, fitter.sigma2, fitter.WWT.to_numpy())
    np.testing.assert_allclose(shrunk, 0.6 * structured + 0.4 * empirical, rtol=1e-10)
    assert np.linalg.eigvalsh(shrunk).min() > 0


def test_more_voxels_than_volumes_and_scale_free(rng):
    """200 voxels × 100 volumes (S singular): a positive definite Ω; ρ̂ within 0.1 of the truth (ML is biased
    low by about one SE at this size, see the README); data and tuning × 1e4 give τ̂ × 1e4 and the same ρ̂ and σ̂² (WᵀW
    grows × 1e8)."""
    model, omega, _ = gaussian_population(rng, 200, RHO, SIGMA2)
    paradigm = rng.uniform(0, 100, 100)
    data = model.simulate(paradigm=paradigm, noise=omega, random_state=3)
    fitter = ResidualFitter(model, data, paradigm, stimulus_range=GRID)
    fitted = fitter.fit().to_numpy()
    assert np.linalg.eigvalsh(fitted).min() > 0
    assert abs(fitter.rho - RHO) < 0.1
    rho, sigma2, tau = fitter.rho, fitter.sigma2, fitter.tau.to_numpy()

    scaled_model = GaussianPRF(parameters=model.parameters.assign(amplitude=model.parameters.amplitude * 1e4,
                                                                  baseline=model.parameters.baseline * 1e4))
    scaled = ResidualFitter(scaled_model, data * 1e4, paradigm, stimulus_range=GRID)
    scaled.fit()
    assert scaled.rho == pytest.approx(rho, abs=1e-3)
    assert scaled.sigma2 == pytest.approx(sigma2, rel=1e-2)
    np.testing.assert_allclose(scaled.tau.to_numpy(), tau * 1e4, rtol=1e-2)


def test_tuning_matrix_bases(rng):
    """W is the weight matrix for linear models, the receptive fields over the pixels for 2-D pRFs, and the
    tuning curves over a grid for 1-D pRFs (closed form)."""
    weights = pd.DataFrame(rng.normal(size=(3, 5)))
    linear = LinearModelWithBaseline(weights=weights, paradigm=np.zeros((4, 3)))
    np.testing.assert_allclose(tuning_matrix(linear).to_numpy(), weights.to_numpy(), rtol=1e-6)

    xy = np.stack(np.meshgrid(np.linspace(-2, 2, 5), np.linspace(-2, 2, 5)), -1).reshape(-1, 2)
    prf = GaussianPRF2D(xy, parameters=pd.DataFrame({"x": [0.5], "y": [-1.0], "sd": [1.0], "baseline": [3.0],
                                                     "amplitude": [2.0]}))
    field = 2.0 * np.exp(-0.5 * ((xy[:, 0] - 0.5) ** 2 + (xy[:, 1] + 1.0) ** 2)) * 1.0 / (2 * np.pi)
    np.testing.assert_allclose(tuning_matrix(prf).to_numpy()[:, 0], field, rtol=1e-5)

    model, _, _ = gaussian_population(rng, 4)
    p = model.parameters
    curves = p.amplitude.to_numpy() * np.exp(-0.5 * ((GRID[:, None] - p.mu.to_numpy()) / p.sd.to_numpy()) ** 2)
    np.testing.assert_allclose(tuning_matrix(model, GRID).to_numpy(), curves, rtol=1e-5, atol=1e-6)
