"""Closed-form (ordinary or ridge) least squares for the weights of linear encoding models."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import tensorflow as tf

from ..models.base import run_lengths
from ._inputs import as_tensor, check_data_and_paradigm

logger = logging.getLogger(__name__)

__all__ = ["WeightFitter"]


def _intercepts(segments, n_time):
    """One intercept column per run (a single column for one run)."""
    segments = segments or (n_time,)
    columns = np.zeros((n_time, len(segments)))
    start = 0
    for i, length in enumerate(segments):
        columns[start : start + length, i] = 1.0
        start += length
    return columns


class WeightFitter:
    """Least-squares weights of a linear model given fixed per-voxel parameters.

    Parameters
    ----------
    model : LinearModelWithBaseline or LinearModelWithBaselineHRF
    parameters : DataFrame (voxels × parameters) or None
        Fixed parameters (for example per-voxel HRFs). When they hold a ``baseline``, it is subtracted from the
        data; otherwise the baseline is estimated together with the weights (one intercept per run, never
        penalised) and stored in ``self.parameters``.
    data : DataFrame, shape (time, voxels)
    paradigm : DataFrame, shape (time, regressors)
    memory_limit : int
        Bytes the per-voxel designs of one chunk of voxels may take (unique HRFs only).

    Attributes (after ``fit``)
    --------------------------
    weights : DataFrame (regressors × voxels)
    parameters : DataFrame (voxels × parameters), with the estimated baseline
    run_baselines : DataFrame (runs × voxels), the intercepts of each run
    r2 : Series, coefficient of determination per voxel (NaN for constant voxels)
    """

    def __init__(self, model, parameters, data, paradigm, memory_limit=666666666):
        if not model.uses_weights:
            raise ValueError(f"WeightFitter needs a linear model, not {type(model).__name__}")
        self.model = model
        self.data, self.paradigm = check_data_and_paradigm(model, data, paradigm)
        self.memory_limit = int(memory_limit)
        if parameters is None:
            self.parameters = None
        elif isinstance(parameters, pd.DataFrame):
            self.parameters = parameters.astype(np.float32).reindex(self.data.columns)
            if self.parameters.isna().any().any():
                raise ValueError("parameters must have one row for each data column (voxel)")
        else:
            labels = model.get_parameter_labels()
            array = np.asarray(parameters, dtype=np.float32)
            cols = labels if array.ndim == 2 and array.shape[1] == len(labels) else labels[: array.shape[-1]]
            self.parameters = pd.DataFrame(array, index=self.data.columns, columns=cols)
        if self.parameters is not None and len(self.parameters) != self.data.shape[1]:
            raise ValueError(
                f"parameters have {len(self.parameters)} voxels but the data have {self.data.shape[1]}"
            )

    def _full_parameters(self):
        """Parameters for the model's design: defaults where the user gave none."""
        defaults = self.model.get_default_parameters(self.data.shape[1], index=self.data.columns)
        if self.parameters is not None:
            for label in self.parameters.columns:
                if label in defaults.columns:
                    defaults[label] = self.parameters[label].to_numpy()
        return defaults

    def fit(self, alpha=0.0):
        """Solve for the weights.

        Parameters
        ----------
        alpha : float
            Ridge penalty on the weights (not on the intercepts); 0 gives ordinary least squares.

        Returns
        -------
        DataFrame, shape (regressors × voxels)
        """
        alpha = float(alpha)
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a non-negative number, got {alpha}")
        n_time, n_voxels = self.data.shape
        segments = run_lengths(self.paradigm.index)
        fit_baseline = self.parameters is None or "baseline" not in self.parameters.columns
        # (voxels × time) is how pandas stores a float frame: no transposing copy on the way to TensorFlow
        y_t = self.data.to_numpy().T
        if not fit_baseline:
            y_t = y_t - self.parameters["baseline"].to_numpy()[:, np.newaxis]
        intercepts = _intercepts(segments, n_time) if fit_baseline else np.zeros((n_time, 0))
        full = self._full_parameters()
        paradigm_tf = tf.constant(self.paradigm.to_numpy())
        if getattr(getattr(self.model, "hrf_model", None), "unique_hrfs", False):
            coefs, ssr, sst = self._fit_per_voxel(paradigm_tf, full, y_t, intercepts, alpha, segments)
        else:
            design = self.model._design(paradigm_tf, None, segments=segments).numpy().astype(np.float64)
            coefs, ssr, sst = self._fit_shared(design, y_t, intercepts, alpha)
        n_reg = self.paradigm.shape[1]
        self.weights = pd.DataFrame(coefs[:n_reg], index=self.paradigm.columns, columns=self.data.columns)
        self.run_baselines = pd.DataFrame(coefs[n_reg:], columns=self.data.columns)
        if fit_baseline:
            full["baseline"] = self.run_baselines.mean(axis=0).to_numpy()
        else:
            full["baseline"] = self.parameters["baseline"].to_numpy()
        self.parameters = full
        self._intercept_columns = intercepts
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(sst > 0, 1 - np.maximum(ssr, 0) / sst, np.nan)
        self.r2 = pd.Series(r2.astype(np.float32), index=self.data.columns, name="r2")
        return self.weights

    @staticmethod
    def _penalty(n_reg, n_intercepts, alpha):
        return np.diag(np.r_[np.full(n_reg, alpha), np.zeros(n_intercepts)])

    def _fit_shared(self, design, y_t, intercepts, alpha):
        """One design for all voxels.

        The small (regressors × regressors) system is solved once in float64; the data meet it in one float32
        product, after centring each voxel (the intercepts absorb the mean, so weights are unchanged and the
        residual sum of squares follows from the normal equations without forming predictions).
        """
        x = np.hstack([design, intercepts])
        cross = x.T @ x
        inverse = np.linalg.pinv(cross + self._penalty(design.shape[1], intercepts.shape[1], alpha))
        centre = intercepts.shape[1] > 0
        coefs, ssr, sst, mean = _shared_solve(
            as_tensor(y_t), tf.constant(x.astype(np.float32)), tf.constant(inverse.astype(np.float32)),
            tf.constant(cross.astype(np.float32)), centre,
        )
        coefs = coefs.numpy().T
        if centre:  # put the voxel means back into the intercepts
            coefs[design.shape[1] :] += mean.numpy()[np.newaxis, :]
        return coefs, ssr.numpy().astype(np.float64), sst.numpy().astype(np.float64)

    def _fit_per_voxel(self, paradigm_tf, parameters, y_t, intercepts, alpha, segments):
        """One design per voxel (unique HRFs): batched normal equations in float64, in chunks of voxels."""
        n_voxels, n_time = y_t.shape
        n_reg = self.paradigm.shape[1]
        n_cols = n_reg + intercepts.shape[1]
        bytes_per_voxel = 8 * n_time * (n_cols + 2) * 3
        chunk = max(1, min(n_voxels, self.memory_limit // bytes_per_voxel))
        penalty = tf.constant(self._penalty(n_reg, intercepts.shape[1], alpha))
        intercepts_tf = tf.constant(intercepts)
        coefs = np.empty((n_cols, n_voxels), dtype=np.float32)
        ssr = np.empty(n_voxels)
        sst = np.empty(n_voxels)
        for start in range(0, n_voxels, chunk):
            stop = min(start + chunk, n_voxels)
            pars = tf.constant(parameters.iloc[start:stop].to_numpy())
            design = tf.cast(self.model._design(paradigm_tf, pars, segments=segments), tf.float64)  # (T, v, R)
            if intercepts.shape[1]:
                tiled = tf.tile(intercepts_tf[:, tf.newaxis, :], [1, stop - start, 1])
                design = tf.concat([design, tiled], axis=2)
            target = tf.constant(y_t[start:stop].T.astype(np.float64))
            gram = tf.einsum("tvr,tvs->vrs", design, design) + penalty
            rhs = tf.einsum("tvr,tv->vr", design, target)[..., tf.newaxis]
            beta = tf.linalg.solve(gram, rhs)[..., 0]
            residual = target - tf.einsum("tvr,vr->tv", design, beta)
            coefs[:, start:stop] = beta.numpy().T
            ssr[start:stop] = tf.reduce_sum(tf.square(residual), axis=0).numpy()
            centred = target - tf.reduce_mean(target, axis=0, keepdims=True)
            sst[start:stop] = tf.reduce_sum(tf.square(centred), axis=0).numpy()
        return coefs, ssr, sst

    @property
    def predictions(self):
        """Fitted time series (time × voxels), each run with its own intercept."""
        if not hasattr(self, "weights"):
            raise AttributeError("predictions exist after fit()")
        prediction = self.model._predict(
            tf.constant(self.paradigm.to_numpy()),
            tf.constant(self.parameters.to_numpy()),
            tf.constant(self.weights.to_numpy()),
            segments=run_lengths(self.paradigm.index),
        ).numpy()
        if self._intercept_columns.shape[1]:
            offsets = self._intercept_columns @ self.run_baselines.to_numpy()
            prediction += (offsets - self.parameters["baseline"].to_numpy()).astype(np.float32)
        return pd.DataFrame(prediction, index=self.data.index, columns=self.data.columns)


@tf.function
def _shared_solve(y_t, design, inverse, cross, centre):
    """Weights (voxels × columns), SSR, SST and voxel means for one shared design.

    With intercepts in the design (``centre``), the data are centred first: the intercepts absorb the mean,
    and the residual sum of squares ``y'y - 2 b'X'y + b'X'X b`` then suffers no cancellation.
    """
    mean = tf.reduce_mean(y_t, axis=1, keepdims=True)
    centred = y_t - mean
    sst = tf.reduce_sum(tf.square(centred), axis=1)
    target = centred if centre else y_t
    moments = tf.matmul(target, design)  # X'y for every voxel
    coefs = tf.matmul(moments, inverse)
    total = sst if centre else tf.reduce_sum(tf.square(y_t), axis=1)
    ssr = total - 2.0 * tf.reduce_sum(coefs * moments, axis=1) + tf.reduce_sum(tf.matmul(coefs, cross) * coefs, axis=1)
    return coefs, ssr, sst, mean[:, 0]
