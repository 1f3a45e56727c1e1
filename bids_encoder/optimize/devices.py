"""Where chunks of work run: every visible GPU, or the CPU.

The fitters cut their work into chunks that fit ``memory_limit`` (voxels for the iterative and per-voxel fits,
grid points for the grid search). With one compute device the chunks run one after the other on it. With several
(every GPU TensorFlow sees; on a machine without GPU, several *logical* CPU devices, which is how the split is
tested), chunk ``i`` goes to device ``i mod n`` and each device works through its own chunks in a thread of its own,
so that all devices compute at once; results are gathered in chunk order, so they do not depend on the number of
devices. Each device holds at most one chunk at a time: ``memory_limit`` is a per-device budget.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from .._tensorflow import tf

logger = logging.getLogger(__name__)

__all__ = ["compute_devices", "run_chunks"]


def compute_devices():
    """Names of the logical devices the fitters split their chunks over: every GPU, else every CPU device (one,
    unless logical CPU devices were configured)."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [device.name for device in gpus]
    return [device.name for device in tf.config.list_logical_devices("CPU")] or ["/device:CPU:0"]


def run_chunks(function, chunks, devices=None, reduce=None):
    """``[function(chunk) for chunk in chunks]``, chunk ``i`` run under ``tf.device(devices[i % n])``.

    Parameters
    ----------
    function : callable
        Computes one chunk.
    chunks : sequence
        The chunks, in order.
    devices : list of str, optional
        Logical devices (default: :func:`compute_devices`).
    reduce : callable, optional
        ``reduce(i, result)`` receives every result in chunk order, as soon as it and every earlier one are done,
        and the results are not kept: the caller folds them into its own (per-voxel) arrays while the other
        chunks run, so memory does not grow with the number of chunks. With several devices a result waits only
        for the earlier chunks still running elsewhere.

    Returns
    -------
    results : list, in chunk order (empty with ``reduce``)
    placement : list of str, the device of every chunk
    """
    devices = compute_devices() if devices is None else list(devices)
    placement = [devices[i % len(devices)] for i in range(len(chunks))]
    if len(devices) == 1 or len(chunks) <= 1:
        results = []
        for i, (chunk, device) in enumerate(zip(chunks, placement, strict=True)):
            with tf.device(device):
                result = function(chunk)
            if reduce is None:
                results.append(result)
            else:
                reduce(i, result)
        return results, placement

    lock = threading.Lock()
    pending, state = {}, {"next": 0}

    def deliver(i, result):
        with lock:  # hand results over in chunk order, one thread at a time
            pending[i] = result
            while state["next"] in pending:
                reduce(state["next"], pending.pop(state["next"]))
                state["next"] += 1

    def work(device):
        done = {}
        for i, chunk in enumerate(chunks):
            if placement[i] == device:
                with tf.device(device):
                    result = function(chunk)
                if reduce is None:
                    done[i] = result
                else:
                    deliver(i, result)
        return done

    logger.info("%d chunks over %d devices: %s", len(chunks), len(devices), ", ".join(devices))
    results = {}
    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="bids_encoder-device") as pool:
        for done in pool.map(work, devices):
            results.update(done)
    return ([] if reduce is not None else [results[i] for i in range(len(chunks))]), placement
