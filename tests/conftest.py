"""Shared fixtures. TensorFlow's C++ logging is quietened before it is imported."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)


def event_paradigm(rng, n_time, n_regressors, rate=0.08):
    """Sparse random events, one column per condition."""
    return pd.DataFrame(
        (rng.random((n_time, n_regressors)) < rate).astype(np.float32),
        columns=[f"condition{i}" for i in range(n_regressors)],
    )


def bar_apertures(n_side=16, extent=5.0, n_steps=16, blank=4):
    """Bars sweeping in four directions over an (n_side × n_side) grid spanning ±extent degrees.

    Returns (paradigm: time × pixels DataFrame, grid: pixels × 2 DataFrame of x, y).
    """
    coords = np.linspace(-extent, extent, n_side)
    gx, gy = np.meshgrid(coords, coords, indexing="ij")
    grid = pd.DataFrame({"x": gx.ravel(), "y": gy.ravel()})
    width = 2.5 * (coords[1] - coords[0])
    frames = []
    for direction in [(1, 0), (0, 1), (-1, 0), (0, -1), (0.7071, 0.7071), (-0.7071, -0.7071)]:
        for position in np.linspace(-extent, extent, n_steps):
            projection = gx * direction[0] + gy * direction[1]
            frames.append((np.abs(projection - position) < width / 2).astype(np.float32).ravel())
        frames.extend([np.zeros(n_side * n_side, np.float32)] * blank)
    return pd.DataFrame(np.array(frames)), grid
