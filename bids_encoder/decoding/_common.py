"""Shared pieces of the decoders: the model's response to stimuli without HRF, Ω's Cholesky factor, grids."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import tensorflow as tf

from ..models.base import HRFEncodingModel, _as_frame

logger = logging.getLogger(__name__)


class ModelResponses:
    """The model's instantaneous response to stimuli, as tensors, for fixed parameters and weights.

    Decoders invert the model stimulus by stimulus: for a ``…WithHRF`` model the response to a stimulus is its
    neural response plus the baseline, without the HRF (decode single-trial betas, or responses that are
    otherwise deconvolved, with it).

    Parameters
    ----------
    model : EncodingModel
    example_paradigm : DataFrame, shape (n, features)
        Any paradigm of the right width (checks the weights against it).
    parameters, weights : DataFrame, optional
        Fall back to the model's stored ones.
    """

    def __init__(self, model, example_paradigm, parameters=None, weights=None):
        self.model = model
        paradigm, parameters, weights = model._resolve(example_paradigm, parameters, weights)
        self.n_features = paradigm.shape[1]
        self.voxels = weights.columns if weights is not None else parameters.index
        self.parameters = tf.constant(parameters.to_numpy(np.float32))
        self.weights = None if weights is None else tf.constant(weights.to_numpy(np.float32))

    @property
    def n_voxels(self):
        return len(self.voxels)

    def neural(self, paradigm):
        """(stimuli × voxels) response without baseline."""
        return self.model._predict_neural(paradigm, self.parameters, self.weights)

    def __call__(self, paradigm):
        """(stimuli × voxels) response with baseline, no HRF."""
        if isinstance(self.model, HRFEncodingModel):
            return self.neural(paradigm) + self.model._baseline(self.parameters)
        return self.model._predict(paradigm, self.parameters, self.weights, segments=None)


def check_data(data, voxels, name="data"):
    """data (time × voxels) as a float32 DataFrame whose columns follow ``voxels``.

    Columns named like the voxels (in any order) are reordered; otherwise the widths must agree.
    """
    frame = _as_frame(data, name)
    if frame.shape[1] != len(voxels):
        raise ValueError(f"{name} has {frame.shape[1]} voxels (columns) but the model has {len(voxels)}")
    if set(frame.columns) == set(voxels) and not frame.columns.equals(pd.Index(voxels)):
        frame = frame[list(voxels)]
    return frame


def omega_cholesky(omega, n_voxels, max_tries=6):
    """Lower Cholesky factor (float32 tensor) of a covariance, with a growing diagonal jitter if needed.

    The factorisation runs once per decoding in float64 (numpy); a jitter (1e-6, 1e-5, … of the mean diagonal) is
    added, with a warning, only when Ω is not numerically positive definite.
    """
    if omega is None:
        raise ValueError("Decoding needs a noise covariance omega (voxels × voxels): fit one with ResidualFitter "
                         "or pass omega=...")
    omega = np.asarray(omega.to_numpy() if isinstance(omega, pd.DataFrame) else omega, dtype=np.float64)
    if omega.shape != (n_voxels, n_voxels):
        raise ValueError(f"omega must be ({n_voxels}, {n_voxels}), got {omega.shape}")
    if not np.all(np.isfinite(omega)):
        raise ValueError("omega contains NaN or infinite values")
    omega = 0.5 * (omega + omega.T)
    scale = float(np.mean(np.diag(omega)))
    if not scale > 0:
        raise ValueError("omega must have a positive diagonal")
    for attempt in range(max_tries + 1):
        jitter = 0.0 if attempt == 0 else scale * 10.0 ** (attempt - 7)
        try:
            factor = np.linalg.cholesky(omega + jitter * np.eye(n_voxels))
        except np.linalg.LinAlgError:
            continue
        if jitter:
            logger.warning("omega is not numerically positive definite: added %.3g to its diagonal", jitter)
        return tf.constant(factor, tf.float32)
    raise ValueError("omega is not positive definite (Cholesky failed even with a diagonal jitter)")


def as_grid(stimulus_range, names=None):
    """Stimulus grid points, (points × dimensions) float32 array, and the column index naming them.

    A 1-D sequence is a grid of one dimension (index named ``stimulus``); a DataFrame has one column per
    dimension (a MultiIndex of its columns names the points); a 2-D array likewise, its columns named ``names``
    (default ``x``, ``y``, …).
    """
    if isinstance(stimulus_range, pd.DataFrame):
        points = stimulus_range.to_numpy(np.float32)
        dims = [str(c) for c in stimulus_range.columns]
    else:
        if isinstance(stimulus_range, pd.Series | pd.Index):
            name = stimulus_range.name
        else:
            name = None
        array = np.asarray(stimulus_range, dtype=np.float32)
        if array.ndim == 1:
            points = array[:, np.newaxis]
            dims = [str(name) if name is not None else "stimulus"]
        elif array.ndim == 2:
            points = array
            dims = list(names) if names is not None else ["x", "y", "z"][: array.shape[1]]
        else:
            raise ValueError(f"stimulus_range must be 1-D values or (points × dimensions), got shape {array.shape}")
    if len(points) < 2:
        raise ValueError("stimulus_range needs at least two grid points")
    if not np.all(np.isfinite(points)):
        raise ValueError("stimulus_range contains NaN or infinite values")
    if points.shape[1] == 1:
        columns = pd.Index(points[:, 0], name=dims[0])
    else:
        columns = pd.MultiIndex.from_arrays([points[:, i] for i in range(points.shape[1])], names=dims)
    return points, columns


def make_grid(**axes):
    """A regular grid over several stimulus dimensions, as a DataFrame (points × dimensions).

    Examples
    --------
    >>> make_grid(x=np.linspace(-5, 5, 21), y=np.linspace(-5, 5, 21)).shape
    (441, 2)
    """
    if not axes:
        raise ValueError("make_grid needs at least one axis, e.g. make_grid(x=..., y=...)")
    mesh = np.meshgrid(*[np.asarray(v, dtype=np.float32) for v in axes.values()], indexing="ij")
    return pd.DataFrame({name: m.ravel() for name, m in zip(axes, mesh, strict=True)})


def cell_sizes(values, circular=False, period=2 * np.pi):
    """Width of the grid cell of every value along one axis (half the distance to both neighbours).

    Circular axes wrap: the first and last points are neighbours across the period.
    """
    values = np.asarray(values, dtype=np.float64)
    unique, inverse = np.unique(values, return_inverse=True)
    if len(unique) < 2:
        return np.ones_like(values)
    if circular:
        ahead = np.diff(np.append(unique, unique[0] + period))
        behind = np.roll(ahead, 1)
        widths = 0.5 * (ahead + behind)
    else:
        gaps = np.diff(unique)
        widths = 0.5 * (np.append(gaps, gaps[-1]) + np.insert(gaps, 0, gaps[0]))
    return widths[inverse]


def is_circular(model):
    """Whether the model's stimulus is an angle (von Mises tuning)."""
    from ..models.prf import VonMisesPRF

    return isinstance(model, VonMisesPRF)
