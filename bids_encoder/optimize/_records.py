"""Records of an iterative fit: TensorBoard scalars and the parameters of every step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._tensorflow import tf


def tensorboard_log(log_dir):
    """(callback, writer) writing loss and mean R² with steps continuous across chunks; (None, None)
    without ``log_dir``."""
    if log_dir is None or log_dir is False:
        return None, None
    root = Path(log_dir)
    number = 1
    while (root / f"fit-{number:03d}").exists():
        number += 1
    writer = tf.summary.create_file_writer(str(root / f"fit-{number:03d}"))
    step = [0]

    def log(mean_r2, loss):
        with writer.as_default():
            for r2_value, loss_value in zip(mean_r2, loss, strict=True):
                tf.summary.scalar("mean_r2", float(r2_value), step=step[0])
                tf.summary.scalar("loss", float(loss_value), step=step[0])
                step[0] += 1
        writer.flush()

    return log, writer

def stack_intermediate(intermediate, labels, voxels):
    n_steps = max((values.shape[0] for _, values in intermediate), default=0)
    stacked = np.full((n_steps, len(voxels), len(labels)), np.nan, dtype=np.float32)
    for chunk, values in intermediate:
        stacked[: values.shape[0], chunk] = values
        stacked[values.shape[0] :, chunk] = values[-1]
    index = pd.MultiIndex.from_product([range(n_steps), voxels], names=["step", "voxel"])
    return pd.DataFrame(stacked.reshape(-1, len(labels)), index=index, columns=labels)
