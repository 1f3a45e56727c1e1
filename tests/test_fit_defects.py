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
        fitter.fit(init_pars=init, optimizer="lm", max_n_iterations=3, progressbar=False)
    np.testing.assert_allclose(by_data.predictions.to_numpy(), by_paradigm.predictions.to_numpy(), rtol=1e-5)


def test_runs_that_disagree_raise(rng):
    model, paradigm, weights, data = two_run_problem(rng)
    other = pd.MultiIndex.from_product([[1, 2, 3], range(80)], names=["run", "time"])
    with pytest.raises(ValueError, match="runs"):
        WeightFitter(model, None, data, paradigm.set_axis(other))
    with pytest.raises(ValueError, match="runs"):
        ParameterFitter(model, data.set_axis(other), paradigm)
    WeightFitter(model, None, data.set_axis(paradigm.index.set_names(["session", "volume"])), paradigm)
