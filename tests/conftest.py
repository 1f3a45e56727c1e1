"""Shared fixtures. TensorFlow's C++ logging is quietened before it is imported."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from bids_encoder.datasets.synthetic import bar_apertures  # noqa: E402, F401  (shared by the tests)


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)


def event_paradigm(rng, n_time, n_regressors, rate=0.08):
    """Sparse random events, one column per condition."""
    return pd.DataFrame(
        (rng.random((n_time, n_regressors)) < rate).astype(np.float32),
        columns=[f"condition{i}" for i in range(n_regressors)],
    )

