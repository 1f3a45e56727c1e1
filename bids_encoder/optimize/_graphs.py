"""Keys under which compiled functions are cached: one trace per model *family and set-up*, not per instance.

A compiled function captures the model's constants (pixel coordinates, HRF kernel, bounds, stimulus values) when
it is traced. Two instances whose constants are equal give the same graph, so the caches of the grid search and of
the Levenberg–Marquardt steps are keyed by :func:`model_key` — the model's class and a digest of every attribute a
graph can read (the stored data, paradigm, parameters and weights are not: they enter as inputs) — and the
cross-validation folds, the candidates of ``--hrf auto`` and every recipe stage that rebuilds an equal model reuse
the first one's graphs.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .._tensorflow import tf

#: attributes that never enter a graph as constants (inputs, or plain bookkeeping)
_NOT_CAPTURED = frozenset({"data", "paradigm", "parameters", "weights", "omega", "verbosity"})


def _digest(value, seen):
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_digest(item, seen) for item in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key!r}:{_digest(value[key], seen)}" for key in sorted(value, key=repr)) + "}"
    if isinstance(value, (pd.DataFrame, pd.Series)):
        value = value.to_numpy()
    if isinstance(value, (tf.Tensor, tf.Variable)):
        value = value.numpy()
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return f"array{array.shape}{array.dtype}:{hashlib.sha1(array.tobytes()).hexdigest()}"
    if hasattr(value, "__dict__"):
        if id(value) in seen:
            return "<cycle>"
        seen = seen | {id(value)}
        return _digest(type(value), seen) + _digest({k: v for k, v in vars(value).items() if k not in _NOT_CAPTURED}, seen)
    return f"<{type(value).__name__}@{id(value)}>"  # unknown objects: never shared across instances


def model_key(model):
    """A hashable key equal for models whose compiled graphs are interchangeable (see the module docstring)."""
    return hashlib.sha1(_digest(model, frozenset()).encode()).hexdigest()
