"""Checks shared by the fitters: data and paradigm as aligned float32 frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._tensorflow import shared_tensor
from ..models.base import _as_frame, run_lengths


def _runs(index, what):
    """Run lengths of a (run, time) index (None for one run), with a clear error for a malformed one."""
    try:
        return run_lengths(index)
    except ValueError as error:
        raise ValueError(f"The {what} index: {error}") from None


def check_data_and_paradigm(model, data, paradigm):
    """Return (data, paradigm) as float32 DataFrames of equal length, or raise ValueError.

    Runs are read from either index (a (run, time) MultiIndex); the other one then takes it, so both carry the
    same runs. Both with runs that differ is an error.
    """
    paradigm = model.get_paradigm(paradigm)
    if data is None:
        if model.data is None:
            raise ValueError("No data: pass a (time × voxels) DataFrame or array")
        data = model.data
    data = _as_frame(data, "data")
    if data.shape[0] != paradigm.shape[0]:
        raise ValueError(
            f"The paradigm has {paradigm.shape[0]} time points but the data have {data.shape[0]}"
        )
    data_runs, paradigm_runs = _runs(data.index, "data"), _runs(paradigm.index, "paradigm")
    if data_runs is not None and paradigm_runs is not None:
        if data_runs != paradigm_runs:
            raise ValueError(f"The data and the paradigm have different runs: run lengths {list(data_runs)} "
                             f"(data index) and {list(paradigm_runs)} (paradigm index)")
    elif paradigm_runs is not None:
        data = data.set_axis(paradigm.index, axis=0)
    elif data_runs is not None:
        paradigm = paradigm.set_axis(data.index, axis=0)  # a copy: a model's stored paradigm stays as it is
    return data, paradigm


def later_run_indicators(segments, n_time):
    """Indicator columns (time × runs - 1) of runs 2..n: with a constant, every run has its own mean."""
    segments = segments or (n_time,)
    columns = np.zeros((n_time, len(segments) - 1))
    starts = np.cumsum((0, *segments))
    for i in range(1, len(segments)):
        columns[starts[i] : starts[i + 1], i - 1] = 1.0
    return columns


def confound_basis(confounds, n_time, segments=None):
    """Orthonormal basis (time × rank, float64) of the confounds' column space, or None.

    With ``segments`` (run lengths) of several runs, the indicators of runs 2..n join the confounds.
    """
    if confounds is None:
        values = np.zeros((n_time, 0))
    else:
        values = np.asarray(confounds, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, np.newaxis]
        if values.shape[0] != n_time:
            raise ValueError(f"confounds have {values.shape[0]} rows but the data have {n_time} time points")
        if not np.all(np.isfinite(values)):
            raise ValueError("confounds contain NaN or infinite values")
    if segments is not None and len(segments) > 1:
        values = np.hstack([values, later_run_indicators(segments, n_time)])
    if values.shape[1] == 0:
        return None
    u, s, _ = np.linalg.svd(values, full_matrices=False)
    rank = int(np.sum(s > s.max(initial=0.0) * max(values.shape) * np.finfo(float).eps)) if s.size else 0
    return u[:, :rank] if rank else None  # no confounds at all: the same as none given


def projected_constant(basis, n_time):
    """A constant time series with the span of ``basis`` (orthonormal confounds, or None) removed: the part of a
    baseline that the confounds do not explain."""
    constant = np.ones(n_time)
    if basis is not None and basis.shape[1]:
        constant = constant - basis @ (basis.T @ constant)
    return constant


def meaningful_voxels(data):
    """Boolean mask of voxels whose time series is not constant."""
    values = data.to_numpy()
    return np.ptp(values, axis=0) > 0


def as_tensor(array):
    """A float32 tensor sharing the memory of a C-contiguous, 64-byte-aligned float32 array, else a copy
    (:func:`bids_encoder._tensorflow.shared_tensor`)."""
    return shared_tensor(array)


def iterate_mask(iterate, voxels):
    """Boolean array over ``voxels`` (the data's columns) from ``ParameterFitter.fit``'s ``iterate`` (None: every
    voxel; a Series is aligned on its index)."""
    n_voxels = len(voxels)
    if iterate is None:
        return np.ones(n_voxels, dtype=bool)
    if isinstance(iterate, pd.Series):
        if not iterate.index.equals(voxels):
            if set(iterate.index) != set(voxels):
                raise ValueError("iterate's index does not match the data's voxels")
            iterate = iterate.reindex(voxels)
        iterate = iterate.to_numpy()
    values = np.asarray(iterate)
    if values.shape != (n_voxels,) or values.dtype != bool:
        raise ValueError(f"iterate must be a boolean array of {n_voxels} voxels, got {values.dtype} {values.shape}")
    return values
