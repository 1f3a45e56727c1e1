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
