"""StimulusFitter: MAP stimuli by gradient descent (1-D values against scipy, whole apertures with a prior)."""

import numpy as np
import pandas as pd
from _decoding_sim import GRID, gaussian_population
from conftest import bar_apertures
from scipy import optimize

from bids_encoder.decoding import StimulusFitter, pixel_neighbours
from bids_encoder.models import GaussianPRF2D


def test_one_dimensional_map_matches_scipy(rng):
    """30 Gaussian-tuned voxels: grid start then Adam reach the minimiser of the Gaussian negative
    log-likelihood found by scipy's bounded scalar search around the grid optimum (to 0.05 stimulus units)."""
    model, omega, _ = gaussian_population(rng, 30, amplitude=(2.0, 4.0))
    truth = rng.uniform(10, 90, 12)
    data = model.simulate(paradigm=truth, noise=omega, random_state=8)
    fitter = StimulusFitter(model, data, omega)
    start = fitter.fit_grid(GRID)
    fitted = fitter.fit(init_pars=start, learning_rate=0.05, max_n_iterations=300).iloc[:, 0]
    precision = np.linalg.inv(omega)
    p = model.parameters

    def negative_log_likelihood(s, row):
        f = p.amplitude * np.exp(-0.5 * ((s - p.mu) / p.sd) ** 2) + p.baseline
        r = data.iloc[row].to_numpy(np.float64) - f.to_numpy()
        return 0.5 * r @ precision @ r

    for row in range(len(truth)):
        s0 = float(start.iloc[row, 0])
        reference = optimize.minimize_scalar(negative_log_likelihood, bounds=(s0 - 1.0, s0 + 1.0), args=(row,),
                                             method="bounded", options={"xatol": 1e-4}).x
        assert abs(fitted.iloc[row] - reference) < 0.05, (row, fitted.iloc[row], reference)


def test_aperture_map_with_smoothness_prior():
    """100 voxels, a 12 × 12 pixel screen (more pixels than voxels), 8 bar apertures, noise SDs 1–2: the MAP
    apertures (bounded to (0, 1)) correlate with the true ones r ≥ 0.8 with a smoothness prior (weight 0.3),
    better by > 0.05 than without it."""
    rng = np.random.default_rng(3)
    paradigm, grid = bar_apertures(n_side=12, extent=5.0, n_steps=8, blank=0)
    assert pixel_neighbours(grid).shape == (2 * 12 * 11, 2)
    n_voxels = 100
    parameters = pd.DataFrame({"x": rng.uniform(-5, 5, n_voxels), "y": rng.uniform(-5, 5, n_voxels),
                               "sd": rng.uniform(0.7, 1.5, n_voxels), "baseline": 0.0,
                               "amplitude": rng.uniform(5, 10, n_voxels)})
    model = GaussianPRF2D(grid, parameters=parameters)
    frames = paradigm.iloc[[2, 5, 10, 13, 20, 27, 35, 42]]
    tau = rng.uniform(1.0, 2.0, n_voxels)
    omega = 0.2 * np.outer(tau, tau) + 0.8 * np.diag(tau**2)
    data = model.simulate(paradigm=frames, noise=omega, random_state=1)
    fitter = StimulusFitter(model, data, omega)
    r = {}
    for smoothness in (0.0, 0.3):
        fitted = fitter.fit(bounds=(0, 1), smoothness=smoothness, learning_rate=0.1, max_n_iterations=400)
        assert fitted.shape == frames.shape and fitted.to_numpy().min() >= 0 and fitted.to_numpy().max() <= 1
        r[smoothness] = np.corrcoef(fitted.to_numpy().ravel(), frames.to_numpy().ravel())[0, 1]
    assert r[0.3] >= 0.8 and r[0.3] > r[0.0] + 0.05, r
