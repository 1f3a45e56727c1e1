"""Start TensorFlow without its start-up noise on the console, keeping its real errors.

TensorFlow's C++ side writes to file descriptor 2 before its logging is configured (``WARNING: All log messages
before absl::InitializeLog() …``, ``I0000 … cudart_stub.cc] Could not find cuda drivers``, ``E0000 …
cuda_platform.cc] failed call to cuInit`` on every machine without a GPU), whatever ``TF_CPP_MIN_LOG_LEVEL`` says.
:func:`quiet_environment` sets the environment before TensorFlow loads; :func:`filtered_stderr` sends descriptor
2 to a file while a block runs (the imports that load TensorFlow, :func:`start_tensorflow`'s device listing), then
writes back every line that is not known start-up noise (and logs the noise at debug level).

The library's modules import TensorFlow as ``from .._tensorflow import tf``: the first such import loads it, and
lists its devices (where the missing GPU is reported), inside :func:`filtered_stderr`, so that a script or a
notebook importing :mod:`bids_encoder` sees TensorFlow's real errors but not its start-up lines. The library
never sets ``TF_CPP_MIN_LOG_LEVEL``; the command line sets it (to 2) only when the user has not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

logger = logging.getLogger(__name__)

__all__ = ["NOISE", "aligned_empty", "filtered_stderr", "load_tensorflow", "quiet_environment", "shared_tensor", "start_tensorflow",
           "is_noise"]

#: start-up lines that say nothing about the run: configuration notices, and the missing GPU of a CPU machine
NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called",
    r"^[IW]\d{4} .*\b(port|cudart_stub|cpu_feature_guard|cuda_executor|gpu_device|cuda_dnn|cuda_fft|cuda_blas|"
    r"computation_placer|service|dso_loader)\.cc:\d+\]",
    r"^E\d{4} .*\] (failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory)",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$",
    r"oneDNN custom operations are on",
    r"TF-TRT Warning: Could not find TensorRT",
]))


def is_noise(line):
    return bool(NOISE.search(line))


def quiet_environment():
    """TensorFlow's C++ logging at errors only (``TF_CPP_MIN_LOG_LEVEL=2``, unless set); call before it loads."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def filtered_stderr():
    """Send file descriptor 2 to a file for the block, then write back its lines that are not start-up noise."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a detached process): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = []
            for line in text.splitlines():
                if is_noise(line):
                    logger.debug("TensorFlow: %s", line)
                elif line.strip():
                    kept.append(line)
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


_LOADED = []  # the tensorflow module once it has been loaded (and its devices listed) quietly


def load_tensorflow():
    """The ``tensorflow`` module, imported (and its devices listed) with the start-up noise filtered out of
    descriptor 2; later calls return it at once."""
    if _LOADED:
        return _LOADED[0]
    with filtered_stderr():
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")  # the platform reports a missing GPU (cuInit) here
    _LOADED.append(tensorflow)
    return tensorflow


def __getattr__(name):
    if name == "tf":  # ``from .._tensorflow import tf`` loads TensorFlow quietly on first use
        return load_tensorflow()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def aligned_empty(shape, dtype, alignment=64):
    """``numpy.empty`` whose data start on a multiple of ``alignment`` bytes: large arrays come from ``mmap`` with a
    16-byte header, and TensorFlow shares (:func:`shared_tensor`) only 64-byte-aligned buffers."""
    import numpy as np

    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + alignment, dtype=np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset:offset + size].view(dtype).reshape(shape)


def shared_tensor(array):
    """A float32 tensor sharing the memory of a C-contiguous, 64-byte-aligned float32 array (DLPack), else a copy.

    TensorFlow never writes into its inputs, so sharing is safe; it saves copying whole-brain data. A read-only
    view of writeable memory (what pandas' ``to_numpy`` returns under copy-on-write) is shared through a writeable
    view of the same memory, since the DLPack version TensorFlow reads cannot flag read-only buffers.
    """
    import numpy as np

    tf = load_tensorflow()
    array = np.asarray(array)
    # TensorFlow's kernels assume 64-byte-aligned buffers: share only those (large arrays usually are)
    aligned = array.ctypes.data % 64 == 0
    if array.dtype == np.float32 and array.flags.c_contiguous and array.size and aligned:
        if not array.flags.writeable:
            view = array.view()
            try:
                view.flags.writeable = True
            except ValueError:  # memory that is read-only itself (a read-only memory map): copied below
                view = None
            array = array if view is None else view
        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except Exception:  # unsupported buffer: fall back to a copy
            pass
    return tf.constant(array, dtype=tf.float32)


def start_tensorflow(nthreads=None):
    """Import TensorFlow (with ``nthreads`` intra-op threads, before its runtime starts) and list its GPUs quietly;
    returns (the tensorflow module, the visible GPUs)."""
    quiet_environment()
    with filtered_stderr():
        import tensorflow as tf

        if nthreads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(nthreads)
                tf.config.threading.set_inter_op_parallelism_threads(min(nthreads, 2))
            except RuntimeError:  # a second run in one process (tests, notebooks): the runtime keeps its pools
                if tf.config.threading.get_intra_op_parallelism_threads() != nthreads:
                    logger.warning("--nthreads %d: TensorFlow already started in this process with %d threads; "
                                   "it keeps them", nthreads, tf.config.threading.get_intra_op_parallelism_threads())
        gpus = tf.config.list_physical_devices("GPU")
    if not _LOADED:
        _LOADED.append(tf)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; nothing to quieten without it
        pass
    return tf, gpus


def gpu_free_memory():
    """Free memory (bytes) of the least free visible GPU, from ``nvidia-smi`` (honouring CUDA_VISIBLE_DEVICES);
    None when it cannot be read."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    free = {}
    for line in done.stdout.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            free[parts[0]] = int(parts[1]) * 2**20
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        free = {index: value for index, value in free.items() if index in visible.split(",")} or free
    return min(free.values()) if free else None
