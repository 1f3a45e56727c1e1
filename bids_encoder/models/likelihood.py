"""The likelihood of data given a stimulus under an encoding model, and the stimulus posterior on a grid.

An encoding model defines p(data | stimulus): the response f(s) of every voxel to a stimulus s with noise
covariance Ω. This module holds that likelihood (:func:`stimulus_pdf`, also ``model.get_stimulus_pdf``) and the
grid helpers it needs; :mod:`bids_encoder.decoding` builds the decoders on it (Ω from residuals, posterior
summaries, the maximum-a-posteriori stimulus).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._tensorflow import tf
from ._frames import as_frame

logger = logging.getLogger(__name__)

__all__ = ["ModelResponses", "as_grid", "cell_sizes", "check_data", "grid_log_weights", "is_circular", "make_grid",
           "omega_cholesky", "stimulus_pdf"]

_FLOOR = -1e30  # log densities are clamped here instead of reaching -inf
_BATCH_VALUES = 2**23  # time points per batch × grid points: about 32 MB per float32 (batch × grid) tensor


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
        return self.model._respond(paradigm, self.parameters, self.weights)


def check_data(data, voxels, name="data"):
    """data (time × voxels) as a float32 DataFrame whose columns follow ``voxels``.

    Columns named like the voxels (in any order) are reordered; otherwise the widths must agree.
    """
    frame = as_frame(data, name)
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

    Parameters
    ----------
    **axes : array-like
        One 1-D array of values per dimension, named by its keyword (``x=…, y=…``); the product grid, the first
        dimension varying slowest.

    Returns
    -------
    DataFrame, shape (points, dimensions)

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
    return bool(getattr(model, "circular_stimulus", False))


def grid_log_weights(columns, circular=False, period=2 * np.pi):
    """log of every grid point's cell volume (the product of its cell widths along each dimension).

    The grid must be regular along each dimension (a product grid, or one axis) for the cells to tile it.
    """
    if isinstance(columns, pd.MultiIndex):
        values = [columns.get_level_values(i).to_numpy() for i in range(columns.nlevels)]
    else:
        values = [columns.to_numpy()]
    flags = _circular_flags(circular, len(values))
    log_volume = np.zeros(len(columns))
    for axis, flag in zip(values, flags, strict=True):
        log_volume += np.log(cell_sizes(axis, flag, period))
    return log_volume


def _circular_flags(circular, n_dims):
    if isinstance(circular, bool | np.bool_):
        return [bool(circular)] * n_dims
    flags = [bool(c) for c in circular]
    if len(flags) != n_dims:
        raise ValueError(f"circular has {len(flags)} flags for {n_dims} stimulus dimensions")
    return flags


def stimulus_pdf(model, data, stimulus_range, omega=None, parameters=None, weights=None, dof=None, prior=None,
                 paradigm_fn=None, circular=None, period=2 * np.pi, log=False, batch_size=None):
    """Posterior density of the stimulus over a grid, for every row of ``data``.

    The likelihood of a pattern x (one row) given a stimulus s is multivariate normal, N(x; f(s), Ω), or
    Student-t with ``dof`` degrees of freedom and scale Ω; f(s) is the model's response to s (for ``…WithHRF``
    models, the neural response plus baseline, without HRF: decode single-trial betas). The posterior is the
    likelihood times the prior, normalised over the grid so that Σ p(s) · cell volume = 1.

    Parameters
    ----------
    model : EncodingModel
    data : DataFrame or array, shape (time points or trials, voxels)
    stimulus_range : array, Series or DataFrame
        The grid: 1-D values (one stimulus dimension, e.g. numerosities, angles), or points × dimensions (a
        DataFrame whose columns name the dimensions, e.g. from :func:`make_grid`). Each dimension must be
        regularly spaced for the cell volumes (a product grid in 2-D).
    omega : array or DataFrame, shape (voxels, voxels), optional
        The noise covariance (Student-t: scale matrix); defaults to ``model.omega``.
    parameters, weights : DataFrame, optional
        Fall back to the model's.
    dof : float, optional
        Student-t likelihood with these degrees of freedom (Gaussian without).
    prior : array, shape (grid points,), optional
        Prior density over the grid (any positive scale; default uniform). Zeros are allowed.
    paradigm_fn : callable, optional
        Maps the grid points (points × dimensions array) to paradigm rows (points × features), e.g. a point's
        (x, y) to its aperture (:func:`disc_apertures`). Without it the grid values are the paradigm.
    circular : bool or sequence of bool, optional
        Whether each dimension is an angle of period ``period`` (cell widths wrap). Default: True for von Mises
        models, False otherwise.
    period : float
        The period of circular dimensions (2π: radians).
    log : bool
        Return log densities instead of densities.
    batch_size : int, optional
        Time points per batch (default: as many as keep a batch's (time × grid) tensor near 32 MB).

    Returns
    -------
    DataFrame, shape (time points, grid points)
        Indexed like ``data``; the columns are the grid values (a MultiIndex named by the dimensions in 2-D).
        Densities are per unit of stimulus (per unit² in 2-D). Log densities are finite (clamped at -1e30).

    Notes
    -----
    Everything is computed in log space from whitened quantities: with Ω = L Lᵀ, x̃ = L⁻¹(x − m) and
    f̃(s) = L⁻¹(f(s) − m), m the mean response over the grid, the Gaussian log-likelihood is, up to a constant
    of s, x̃ᵀf̃(s) − |f̃(s)|²/2, and the Student-t one −(ν + V)/2 · log(ν + |x̃ − f̃(s)|²). Each row is divided by
    its largest absolute value before the products, so huge data do not overflow and the posterior is never NaN;
    rows are normalised by a log-sum-exp.
    """
    points, columns = as_grid(stimulus_range)
    circular = is_circular(model) if circular is None else circular
    log_volume = grid_log_weights(columns, circular, period)
    rows = np.asarray(paradigm_fn(points) if paradigm_fn is not None else points, dtype=np.float32)
    if rows.ndim != 2 or len(rows) != len(points):
        raise ValueError(f"paradigm_fn must return one paradigm row per grid point, got shape {rows.shape}")
    responses = ModelResponses(model, pd.DataFrame(rows), parameters, weights)
    data = check_data(data, responses.voxels)
    factor = omega_cholesky(model.omega if omega is None else omega, responses.n_voxels)
    log_prior = _log_prior(prior, len(points))

    predicted = responses(tf.constant(rows))  # (grid, voxels)
    centre = tf.reduce_mean(predicted, axis=0, keepdims=True)
    grid_white = tf.transpose(tf.linalg.triangular_solve(factor, tf.transpose(predicted - centre), lower=True))
    decoder = _Decoder(factor, centre, grid_white, log_prior + log_volume, log_prior, dof)

    values = data.to_numpy(np.float32)
    if batch_size is None:
        batch_size = max(1, _BATCH_VALUES // len(points))
    batches = [decoder(tf.constant(values[start:start + batch_size]))
               for start in range(0, len(values), batch_size)]
    log_density = np.concatenate([b.numpy() for b in batches], axis=0) if batches else \
        np.zeros((0, len(points)), np.float32)
    result = pd.DataFrame(log_density if log else np.exp(log_density), index=data.index, columns=columns)
    result.attrs.update(circular=_circular_flags(circular, points.shape[1]), period=float(period), log=bool(log))
    return result


def _log_prior(prior, n_points):
    if prior is None:
        return np.zeros(n_points)
    prior = np.asarray(prior, dtype=np.float64).ravel()
    if prior.shape != (n_points,) or not np.all(np.isfinite(prior)) or np.any(prior < 0) or not prior.max() > 0:
        raise ValueError(f"prior must be {n_points} finite non-negative densities, not all zero")
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(prior / prior.max()), _FLOOR)


class _Decoder:
    """The compiled per-batch computation (traced once: the batch dimension is left free)."""

    def __init__(self, factor, centre, grid_white, log_weights, log_prior, dof):
        self.factor, self.centre, self.grid_white = factor, centre, grid_white
        self.grid_sq = tf.reduce_sum(tf.square(grid_white), axis=1)  # (grid,)
        self.log_weights = tf.constant(log_weights, tf.float32)
        self.log_prior = tf.constant(log_prior, tf.float32)
        self.dof = None if dof is None else float(dof)
        if self.dof is not None and not self.dof > 0:
            raise ValueError(f"dof must be positive, got {dof}")
        n_voxels = int(factor.shape[0])
        self.run = tf.function(self._run, input_signature=[tf.TensorSpec([None, n_voxels], tf.float32)])

    def __call__(self, batch):
        return self.run(batch)

    def _run(self, batch):
        white = tf.transpose(tf.linalg.triangular_solve(self.factor, tf.transpose(batch - self.centre), lower=True))
        scale = tf.maximum(tf.reduce_max(tf.abs(white), axis=1, keepdims=True), 1.0)  # (batch, 1)
        unit = white / scale
        cross = tf.matmul(unit, self.grid_white, transpose_b=True)  # x̃ᵀf̃ / scale, (batch, grid)
        if self.dof is None:
            # Gaussian: scale · (x̃ᵀf̃ − |f̃|²/2) / scale, shifted by its row maximum before multiplying back
            reduced = cross - 0.5 * self.grid_sq[tf.newaxis, :] / scale
            reduced = reduced - tf.reduce_max(reduced + self.log_prior / scale, axis=1, keepdims=True)
            log_likelihood = scale * reduced
        else:
            n_voxels = tf.cast(tf.shape(white)[1], tf.float32)
            distance = (tf.reduce_sum(tf.square(unit), axis=1, keepdims=True) - 2.0 * cross / scale
                        + self.grid_sq[tf.newaxis, :] / tf.square(scale))  # |x̃ − f̃|² / scale²
            distance = tf.maximum(distance, 0.0)
            log_likelihood = -0.5 * (self.dof + n_voxels) * tf.math.log(
                tf.maximum(self.dof / tf.square(scale) + distance, 1e-30))
        log_likelihood = tf.where(tf.math.is_finite(log_likelihood), log_likelihood, _FLOOR)
        log_post = tf.maximum(log_likelihood + self.log_prior, _FLOOR)
        norm = tf.reduce_logsumexp(log_post + self.log_weights, axis=1, keepdims=True)
        return tf.maximum(log_post - norm, _FLOOR)
