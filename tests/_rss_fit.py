"""Child process of test_fit_defects.test_memory_limit_bounds_peak_rss: the peak RSS increase of one fit.

argv: solver ('lm' or 'adam'), memory_limit, voxels, pixels per side, volumes. Prints JSON with the increase of
ru_maxrss (bytes) over a warm-up fit of two voxels (TensorFlow's allocations are invisible to tracemalloc).
"""

import json
import os
import resource
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel  # noqa: E402
from bids_encoder.optimize import ParameterFitter  # noqa: E402

solver, limit, n_voxels, n_side, n_time = sys.argv[1], *map(int, sys.argv[2:])
rng = np.random.default_rng(0)
side = np.linspace(-5, 5, n_side)
gx, gy = np.meshgrid(side, side, indexing="ij")
grid = pd.DataFrame({"x": gx.ravel(), "y": gy.ravel()})
bars = np.abs(gx.ravel()[np.newaxis, :] - np.linspace(-5, 5, n_time)[:, np.newaxis]) < 0.8
paradigm = pd.DataFrame(bars.astype(np.float32))
model = GaussianPRF2DWithHRF(grid, hrf_model=SPMHRFModel(1.5))


def fit(n):
    data = pd.DataFrame(rng.standard_normal((n_time, n)).astype(np.float32))  # no prediction: nothing to hide
    init = pd.DataFrame({"x": rng.uniform(-3, 3, n), "y": rng.uniform(-3, 3, n), "sd": rng.uniform(1, 2, n),
                         "baseline": np.zeros(n), "amplitude": np.ones(n)})
    fitter = ParameterFitter(model, data, paradigm, memory_limit=limit)
    fitter.fit(init_pars=init, optimizer="lm" if solver == "lm" else "adam", max_n_iterations=2, min_n_iterations=2,
               progressbar=False)
    return len(fitter.history)


fit(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
chunks = fit(n_voxels)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"increase": after - before, "chunks": chunks}))
