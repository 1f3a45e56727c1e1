"""Maximum-a-posteriori stimuli by gradient descent, for stimuli that do not fit on a grid (whole apertures)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._tensorflow import tf
from ..models.likelihood import ModelResponses, check_data, omega_cholesky
from ..models.transforms import Bounded, Identity
from .posterior import stimulus_pdf

logger = logging.getLogger(__name__)

__all__ = ["StimulusFitter", "pixel_neighbours"]

_STEPS_PER_CALL = 50


def pixel_neighbours(grid_coordinates):
    """Pairs of pixels that are next to each other (left-right, up-down) on a regular pixel grid.

    Parameters
    ----------
    grid_coordinates : DataFrame or array, shape (pixels, 2)

    Returns
    -------
    numpy.ndarray, shape (pairs, 2)
        Indices into the pixels (the paradigm's columns).
    """
    xy = np.asarray(grid_coordinates, dtype=np.float64)
    ix, iy = (np.unique(xy[:, i], return_inverse=True)[1].ravel() for i in range(2))
    n_y = int(iy.max()) + 1
    keys = ix * n_y + iy
    order = np.argsort(keys)
    sorted_keys = keys[order]
    pairs = []
    for target, valid in ((keys + n_y, np.ones_like(keys, bool)), (keys + 1, iy + 1 < n_y)):
        position = np.clip(np.searchsorted(sorted_keys, target), 0, len(keys) - 1)
        found = valid & (sorted_keys[position] == target)
        pairs.append(np.stack([np.flatnonzero(found), order[position[found]]], axis=1))
    return np.concatenate(pairs, axis=0).astype(np.int64)


class StimulusFitter:
    """The stimulus that maximises the posterior, time point by time point, by gradient descent.

    The objective of every row x is −log N(x; f(s), Ω) (or the Student-t likelihood with ``dof``) plus an
    optional Gaussian smoothness prior, ``smoothness`` · Σ (sᵢ − sⱼ)² over neighbouring features (pixels), with
    f the model's response to the paradigm row s (for ``…WithHRF`` models without the HRF, as in
    :func:`stimulus_pdf`).

    Parameters
    ----------
    model : EncodingModel
    data : DataFrame, shape (time points, voxels)
    omega : array, shape (voxels, voxels), optional
        Defaults to ``model.omega``.
    parameters, weights : DataFrame, optional
        Fall back to the model's.
    dof : float, optional
        Student-t likelihood.
    """

    def __init__(self, model, data, omega=None, parameters=None, weights=None, dof=None):
        self.model, self.dof = model, dof
        self.parameters, self.weights = parameters, weights
        n_features = _n_features(model, weights)
        self.responses = ModelResponses(model, pd.DataFrame(np.zeros((1, n_features), np.float32)), parameters,
                                        weights)
        self.n_features = n_features
        self.data = check_data(data, self.responses.voxels)
        self.omega = model.omega if omega is None else omega
        self.factor = omega_cholesky(self.omega, self.responses.n_voxels)

    def fit_grid(self, stimulus_range):
        """The grid value of highest likelihood for every row (1-D paradigms: the stimulus value).

        Parameters
        ----------
        stimulus_range : array-like
            The 1-D grid of stimulus values to try.

        Returns
        -------
        DataFrame, shape (time points, 1)
        """
        log_pdf = stimulus_pdf(self.model, self.data, stimulus_range, omega=self.omega,
                               parameters=self.parameters, weights=self.weights, dof=self.dof, log=True,
                               circular=False)
        values = log_pdf.columns.to_numpy()[np.argmax(log_pdf.to_numpy(), axis=1)]
        return pd.DataFrame(values.astype(np.float32), index=self.data.index, columns=["stimulus"])

    def fit(self, init_pars=None, bounds=None, smoothness=0.0, neighbours=None, max_n_iterations=1000,
            min_n_iterations=100, learning_rate=0.05, rtol=1e-6, lag=50):
        """Maximum-a-posteriori paradigm rows (time points × features).

        Parameters
        ----------
        init_pars : DataFrame or array, shape (time points, features), optional
            Starting stimuli (e.g. :meth:`fit_grid` for 1-D models); default the middle of ``bounds``, else 0.
        bounds : (float, float), optional
            Keep every value in (low, high) by a sigmoid (apertures: (0, 1)).
        smoothness : float
            Weight of the smoothness prior (0: none).
        neighbours : array, shape (pairs, 2), optional
            Feature pairs the prior ties together; default :func:`pixel_neighbours` of a 2-D pRF model's grid.
        max_n_iterations, min_n_iterations, lag, rtol : optional
            Adam iterations; past ``min_n_iterations``, stop when the total objective fell by less than a
            fraction ``rtol`` over the last ``lag`` iterations.
        learning_rate : float
            Adam's step size (in the unconstrained values).

        Returns
        -------
        DataFrame, shape (time points, features)
            Indexed like the data; every row holds its lowest objective over all iterations.
        """
        transform = Identity() if bounds is None else Bounded(*bounds)
        init = self._initial(init_pars, bounds)
        edges = self._edges(smoothness, neighbours)
        z = tf.Variable(tf.constant(transform.backward(init), tf.float32))
        best_z = tf.Variable(z)
        best_loss = tf.Variable(tf.fill([init.shape[0]], np.float32(np.inf)))
        optimizer = tf.keras.optimizers.Adam(learning_rate)
        optimizer.build([z])
        target = tf.constant(self.data.to_numpy(np.float32))
        weight = tf.constant(float(smoothness), tf.float32)

        def row_loss(values):
            return self._row_loss(target, transform.forward(values), edges, weight)

        @tf.function
        def run_steps(n_steps):
            totals = tf.TensorArray(tf.float32, size=n_steps)
            for i in tf.range(n_steps):
                with tf.GradientTape() as tape:
                    losses = row_loss(z)
                    total = tf.reduce_sum(losses)
                better = losses < best_loss
                best_z.assign(tf.where(better[:, tf.newaxis], z, best_z))
                best_loss.assign(tf.where(better, losses, best_loss))
                optimizer.apply_gradients([(tape.gradient(total, z), z)])
                totals = totals.write(i, total)
            return totals.stack()

        history = []
        while len(history) < max_n_iterations:
            history.extend(run_steps(tf.constant(min(_STEPS_PER_CALL, max_n_iterations - len(history)))).numpy())
            n = len(history)
            if n >= max(min_n_iterations, lag + 1):
                previous, current = history[-1 - lag], history[-1]
                if previous - current < rtol * abs(previous):
                    break
        final = row_loss(z)
        better = final < best_loss
        best_z.assign(tf.where(better[:, tf.newaxis], z, best_z))
        self.n_iterations, self.history = len(history), np.asarray(history)
        logger.info("StimulusFitter: %d iterations, objective %.6g", len(history), float(history[-1]))
        values = transform.forward(best_z).numpy()
        columns = self.model.paradigm.columns if self.model.paradigm is not None else None
        return pd.DataFrame(values, index=self.data.index, columns=columns)

    # ------------------------------------------------------------------ pieces
    def _row_loss(self, target, stimulus, edges, weight):
        residuals = target - self.responses(stimulus)  # (time, voxels)
        white = tf.linalg.triangular_solve(self.factor, tf.transpose(residuals), lower=True)
        quad = tf.reduce_sum(tf.square(white), axis=0)
        if self.dof is None:
            loss = 0.5 * quad
        else:
            n_voxels = float(self.responses.n_voxels)
            loss = 0.5 * (self.dof + n_voxels) * tf.math.log1p(quad / self.dof)
        if edges is not None:
            differences = tf.gather(stimulus, edges[:, 0], axis=1) - tf.gather(stimulus, edges[:, 1], axis=1)
            loss = loss + weight * tf.reduce_sum(tf.square(differences), axis=1)
        return loss

    def _initial(self, init_pars, bounds):
        shape = (len(self.data), self.n_features)
        if init_pars is None:
            middle = 0.0 if bounds is None else 0.5 * (bounds[0] + bounds[1])
            return np.full(shape, middle, np.float64)
        init = np.asarray(init_pars, dtype=np.float64)
        if init.ndim == 1:
            init = init[:, np.newaxis]
        if init.shape != shape or not np.all(np.isfinite(init)):
            raise ValueError(f"init_pars must be a finite {shape} array, got {init.shape}")
        return init

    def _edges(self, smoothness, neighbours):
        if smoothness < 0:
            raise ValueError(f"smoothness must be non-negative, got {smoothness}")
        if not smoothness:
            return None
        if neighbours is None:
            if not hasattr(self.model, "grid_coordinates"):
                raise ValueError("A smoothness prior needs neighbours (feature pairs) for models without pixels")
            neighbours = pixel_neighbours(self.model.grid_coordinates)
        neighbours = np.asarray(neighbours, dtype=np.int64)
        if neighbours.ndim != 2 or neighbours.shape[1] != 2 or neighbours.size == 0 \
                or neighbours.min() < 0 or neighbours.max() >= self.n_features:
            raise ValueError(f"neighbours must be (pairs, 2) indices below {self.n_features}")
        return tf.constant(neighbours)


def _n_features(model, weights):
    if model.paradigm is not None:
        return model.paradigm.shape[1]
    if hasattr(model, "grid_coordinates"):
        return len(model.grid_coordinates)
    if weights is not None:
        return np.asarray(weights).shape[0]
    if model.weights is not None:
        return model.weights.shape[0]
    return 1
