"""Linear encoding models: BOLD = design @ weights + baseline, with or without an HRF."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import tensorflow as tf

from ..hrf import lagged
from .base import EncodingModel, HRFEncodingModel

__all__ = ["LinearModelWithBaseline", "LinearModelWithBaselineHRF"]


class LinearModelWithBaseline(EncodingModel):
    """prediction = paradigm @ weights + baseline.

    One parameter per voxel, ``baseline``; weights are regressors × voxels.
    """

    parameter_labels = ["baseline"]
    uses_weights = True

    def get_default_parameters(self, n_voxels, index=None):
        defaults = {label: 0.0 for label in self.get_parameter_labels()}
        defaults.update(self._default_hrf_parameters())
        frame = pd.DataFrame({label: np.full(n_voxels, value, np.float32) for label, value in defaults.items()})
        if index is not None:
            frame.index = index
        frame.columns.name = "parameter"
        return frame[self.get_parameter_labels()]

    def _default_hrf_parameters(self):
        return {}

    def _predict_neural(self, paradigm, parameters, weights):
        return tf.matmul(paradigm, weights)

    def _design(self, paradigm, parameters, segments=None):
        """The regressors each voxel sees: (time, regressors) shared, or (time, voxels, regressors)."""
        return paradigm


class LinearModelWithBaselineHRF(HRFEncodingModel, LinearModelWithBaseline):
    """prediction = HRF ∗ (paradigm @ weights) + baseline.

    Parameters
    ----------
    hrf_model : HRFModel
        For example ``SPMHRFModel(tr)``; with ``unique_hrfs=True`` the parameters gain ``hrf_delay`` and
        ``hrf_dispersion`` per voxel.
    """

    def __init__(self, paradigm=None, data=None, parameters=None, weights=None, hrf_model=None,
                 verbosity=logging.INFO, **kwargs):
        self._init_hrf(hrf_model)
        super().__init__(paradigm=paradigm, data=data, parameters=parameters, weights=weights,
                         verbosity=verbosity, **kwargs)

    def _default_hrf_parameters(self):
        return self.hrf_model.get_default_parameters()

    def _predict(self, paradigm, parameters, weights=None, segments=None):
        hrf_parameters = self._hrf_parameters(parameters)
        if hrf_parameters is None:  # one kernel: convolve the few regressors, not the many voxels
            bold = tf.matmul(self.hrf_model.convolve(paradigm, segments=segments), weights)
        else:  # per-voxel kernels: each regressor's response is a product of its lagged copies and the kernels
            responses = self._responses(paradigm, hrf_parameters, segments)  # (regressors, time, voxels)
            bold = tf.einsum("rtv,rv->tv", responses, tf.cast(weights, responses.dtype))
        return bold + self._baseline(parameters)

    def _prediction_and_jacobian(self, paradigm, parameters_of, free, weights, segments):
        """Prediction (time × voxels) and its Jacobian (time × voxels × free) with respect to ``free``.

        With per-voxel kernels the prediction is linear in the kernels, so forward-mode differentiation is needed
        only up to the kernels (taps × voxels, cheap); the rest is the same two products as the prediction.
        ``parameters_of(free)`` gives the natural parameters. None when the model has no per-voxel kernels.
        """
        if not self.hrf_model.unique_hrfs:
            return None
        n_free = free.shape[1]
        labels = self.get_parameter_labels()
        weights = tf.cast(weights, tf.float32)
        kernel_tangents, baseline_tangents = [], []
        for j in range(n_free):
            tangent = tf.one_hot(tf.fill([tf.shape(free)[0]], j), n_free, dtype=free.dtype)
            with tf.autodiff.ForwardAccumulator(free, tangent) as accumulator:
                parameters = parameters_of(free)
                kernels = self.hrf_model.get_kernel(self._hrf_parameters(parameters))
            kernel_tangents.append(accumulator.jvp(kernels, unconnected_gradients="zero"))
            baseline_tangents.append(accumulator.jvp(parameters, unconnected_gradients="zero")[
                :, labels.index("baseline")])
        shifted = lagged(tf.cast(paradigm, tf.float32), kernels.shape[0], segments)  # (reg, time, taps)
        prediction = tf.einsum("rtv,rv->tv", tf.einsum("rtk,kv->rtv", shifted, kernels), weights)
        prediction = prediction + parameters[:, labels.index("baseline")][tf.newaxis, :]
        columns = [tf.einsum("rtv,rv->tv", tf.einsum("rtk,kv->rtv", shifted, kernel_tangents[j]), weights)
                   + baseline_tangents[j][tf.newaxis, :] for j in range(n_free)]
        return prediction, tf.stack(columns, axis=-1)

    def _responses(self, paradigm, hrf_parameters, segments):
        kernels = self.hrf_model.get_kernel(hrf_parameters)  # (taps, voxels)
        shifted = lagged(tf.cast(paradigm, kernels.dtype), kernels.shape[0], segments)
        return tf.einsum("rtk,kv->rtv", shifted, kernels)

    def _design(self, paradigm, parameters, segments=None):
        hrf_parameters = None if parameters is None else self._hrf_parameters(parameters)
        if hrf_parameters is None:
            return self.hrf_model.convolve(paradigm, segments=segments)
        return tf.transpose(self._responses(paradigm, hrf_parameters, segments), [1, 2, 0])  # (time, voxels, reg)
