"""Child process of test_devices: fits on several logical CPU devices (they must be configured before TensorFlow
initialises, hence a process of its own) and on one, and prints what it found as JSON."""

import json
import sys

import tensorflow as tf

n_devices = int(sys.argv[1])
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n_devices)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bids_encoder.models import GaussianPRF2DWithHRF, SPMHRFModel  # noqa: E402
from bids_encoder.optimize import ParameterFitter  # noqa: E402
from bids_encoder.optimize.devices import compute_devices  # noqa: E402

rng = np.random.default_rng(3)
side = np.linspace(-5, 5, 15)
gx, gy = np.meshgrid(side, side)
grid = np.column_stack([gx.ravel(), gy.ravel()])
n_time = 120
positions = np.concatenate([np.linspace(-6, 6, 60), np.linspace(6, -6, 60)])
horizontal = np.abs(gx.ravel()[np.newaxis, :] - positions[:, np.newaxis]) < 1.0
vertical = np.abs(gy.ravel()[np.newaxis, :] - positions[:, np.newaxis]) < 1.0
bars = np.where((np.arange(n_time) // 30 % 2 == 0)[:, np.newaxis], horizontal, vertical)
paradigm = pd.DataFrame(bars.astype(np.float32))
model = GaussianPRF2DWithHRF(grid, hrf_model=SPMHRFModel(tr=1.5))
n_voxels = 48
truth = pd.DataFrame({"x": rng.uniform(-3, 3, n_voxels), "y": rng.uniform(-3, 3, n_voxels),
                      "sd": rng.uniform(0.8, 2.0, n_voxels), "baseline": rng.normal(0, 1, n_voxels),
                      "amplitude": rng.uniform(1, 3, n_voxels)})
data = model.simulate(paradigm, truth, noise=0.3, random_state=4)
limit = 500_000  # about ten voxels per chunk: several chunks


def run(devices):
    fitter = ParameterFitter(model, data, paradigm, memory_limit=limit, devices=devices)
    grid_values = [np.linspace(-4, 4, 9), np.linspace(-4, 4, 9), [0.8, 1.5, 2.5], None, None]
    start = fitter.fit_grid(*grid_values, use_correlation_cost=True, progressbar=False)
    init = fitter.refine_baseline_and_amplitude(start)
    lm = fitter.fit(init_pars=init, optimizer="lm", progressbar=False)
    lm_devices = list(fitter.chunk_devices)
    adam = fitter.fit(init_pars=init, optimizer="adam", learning_rate=0.02, max_n_iterations=30,
                      min_n_iterations=30, progressbar=False)
    return {"grid": start.to_numpy().tolist(), "lm": lm.to_numpy().tolist(), "adam": adam.to_numpy().tolist(),
            "lm_devices": lm_devices, "adam_devices": list(fitter.chunk_devices),
            "lm_r2": float(np.median(fitter.r2))}


split = run(None)
single = run([compute_devices()[0]])
print(json.dumps({"devices": compute_devices(), "split": split, "single": single,
                  "truth_x": truth["x"].tolist()}))
