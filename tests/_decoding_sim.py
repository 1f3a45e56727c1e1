"""Simulated 1-D tuning data with known correlated noise, shared by the decoding tests."""

import numpy as np
import pandas as pd

from bids_encoder.decoding import tuning_matrix
from bids_encoder.models import GaussianPRF, VonMisesPRF

GRID = np.linspace(0.0, 100.0, 101)  # numerosity-like stimulus values, and the basis of W
ANGLES = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)


def noise_covariance(tau, rho, sigma2, wwt):
    """Ω = τ τᵀ ∘ (ρ + (1 − ρ) I) + σ² WᵀW."""
    return rho * np.outer(tau, tau) + (1 - rho) * np.diag(tau**2) + sigma2 * wwt


def gaussian_population(rng, n_voxels, rho=0.3, sigma2=0.01, amplitude=(0.5, 1.5)):
    """Gaussian tuning (mu in [0, 100], sd 10–30, amplitudes in ``amplitude``), noise SDs τ in [0.5, 1.5]."""
    parameters = pd.DataFrame({"mu": rng.uniform(0, 100, n_voxels), "sd": rng.uniform(10, 30, n_voxels),
                               "amplitude": rng.uniform(*amplitude, n_voxels),
                               "baseline": rng.normal(0, 1, n_voxels)})
    model = GaussianPRF(parameters=parameters)
    tuning = tuning_matrix(model, GRID).to_numpy(np.float64)
    tau = rng.uniform(0.5, 1.5, n_voxels)
    return model, noise_covariance(tau, rho, sigma2, tuning.T @ tuning), tau


def von_mises_population(rng, n_voxels, rho=0.3, sigma2=0.005):
    parameters = pd.DataFrame({"mu": rng.uniform(0, 2 * np.pi, n_voxels), "kappa": rng.uniform(1, 4, n_voxels),
                               "amplitude": rng.uniform(0.5, 1.5, n_voxels), "baseline": rng.normal(0, 1, n_voxels)})
    model = VonMisesPRF(parameters=parameters)
    tuning = tuning_matrix(model, ANGLES).to_numpy(np.float64)
    tau = rng.uniform(0.5, 1.5, n_voxels)
    return model, noise_covariance(tau, rho, sigma2, tuning.T @ tuning), tau
