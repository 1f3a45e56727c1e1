"""Frames in and out of the models: float32 DataFrames from user inputs, the runs of a time index, and the
distinct rows of a paradigm (:func:`distinct_rows`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["as_frame", "distinct_rows", "run_lengths"]


def as_frame(values, name, columns=None):
    """A float32 DataFrame from a DataFrame, Series or array (1-D arrays become one column)."""
    if isinstance(values, pd.Series):
        values = values.to_frame()
    if isinstance(values, pd.DataFrame):
        frame = values.astype(np.float32)
    else:
        array = np.asarray(values, dtype=np.float32)
        if array.ndim == 1:
            array = array[:, np.newaxis]
        if array.ndim != 2:
            raise ValueError(f"{name} must be 2-dimensional (got an array of shape {array.shape})")
        frame = pd.DataFrame(array, columns=columns)
    if not np.all(np.isfinite(frame.to_numpy())):
        raise ValueError(f"{name} contains NaN or infinite values")
    return frame


def run_lengths(index):
    """Lengths of the runs in a time index, or None for a single run.

    A :class:`pandas.MultiIndex` identifies runs by all its levels but the last (for example (run, time) or
    (repeat, time)); each run must be contiguous.
    """
    if not isinstance(index, pd.MultiIndex) or index.nlevels < 2:
        return None
    keys = index.droplevel(-1)
    change = np.ones(len(keys), dtype=bool)
    change[1:] = np.asarray(keys[1:] != keys[:-1])
    starts = np.flatnonzero(change)
    if len(set(keys[starts])) != len(starts):
        raise ValueError("The runs of a (run, time) paradigm index must each be contiguous")
    return tuple(int(n) for n in np.diff(np.append(starts, len(keys))))


def distinct_rows(paradigm):
    """The distinct rows of a paradigm and, for every time point, which one it shows.

    Stimulus movies repeat: blank frames, the cycles of a wedge or ring, a bar run shown twice. A model whose
    neural response at a time point depends on that time point's paradigm row only (``supports_frames``: every
    pRF and tuning model) computes it once per distinct row; the fitters expand it to the time points with
    ``tf.gather(neural, index)`` before the HRF, which is exact.

    Parameters
    ----------
    paradigm : array-like, shape (time, features)

    Returns
    -------
    rows : ndarray, shape (distinct rows, features), float32
    index : ndarray, shape (time,), int32
        ``rows[index]`` equals the paradigm.
    """
    values = np.ascontiguousarray(np.asarray(paradigm, dtype=np.float32))
    rows, index = np.unique(values, axis=0, return_inverse=True)
    return np.ascontiguousarray(rows, dtype=np.float32), np.asarray(index, dtype=np.int32).ravel()
