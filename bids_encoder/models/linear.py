"""Linear encoding models: BOLD = design @ weights + baseline, with or without an HRF."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._tensorflow import tf
from .base import EncodingModel, HRFEncodingModel
from .hrf import lagged

__all__ = ["LinearModelWithBaseline", "LinearModelWithBaselineHRF"]


class LinearModelWithBaseline(EncodingModel):
    """prediction = paradigm @ weights + baseline.

    One parameter per voxel, ``baseline``; weights are regressors × voxels.

    Parameters
    ----------
    paradigm : DataFrame or array, shape (time, regressors), optional
        The design; a (run, time) MultiIndex marks runs.
    data : DataFrame or array, shape (time, voxels), optional
        Stored (the fitters take their own).
    parameters : DataFrame or array, shape (voxels, parameters), optional
        None: the defaults (``get_default_parameters``) for the weights' voxels when predicting.
    weights : DataFrame or array, shape (regressors, voxels), optional
        The default of ``predict`` (needed there, from the constructor or the call).
    omega : array, shape (voxels, voxels), optional
        Noise covariance, the default of ``get_stimulus_pdf``.
    verbosity : int
        Logging level of the model's messages.
    """

    parameter_labels = ["baseline"]
    uses_weights = True

    def get_default_parameters(self, n_voxels, index=None):
        """Default parameters: ``baseline`` 0 and, with per-voxel HRFs, the HRF model's canonical values.

        Parameters
        ----------
        n_voxels : int
            Number of rows.
        index : Index, optional
            Row labels (voxels, e.g. the weights' columns); a range index otherwise.

        Returns
        -------
        DataFrame, shape (n_voxels, parameters), float32
        """
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
    paradigm : DataFrame or array, shape (time, regressors), optional
        The design before convolution; a (run, time) MultiIndex marks runs (the HRF never crosses them).
    data : DataFrame or array, shape (time, voxels), optional
        Stored (the fitters take their own).
    parameters : DataFrame or array, shape (voxels, parameters), optional
        None: the defaults (``get_default_parameters``) for the weights' voxels when predicting.
    weights : DataFrame or array, shape (regressors, voxels), optional
        The default of ``predict`` (needed there, from the constructor or the call).
    hrf_model : HRFModel
        Required: for example ``SPMHRFModel(tr)``; with ``unique_hrfs=True`` the parameters gain ``hrf_delay``
        and ``hrf_dispersion`` per voxel.
    verbosity : int
        Logging level of the model's messages.
    omega : array, shape (voxels, voxels), optional
        Noise covariance, the default of ``get_stimulus_pdf`` (by keyword).
    """

    def __init__(self, paradigm=None, data=None, parameters=None, weights=None, hrf_model=None,
                 verbosity=logging.INFO, **kwargs):
        self._init_hrf(hrf_model)
        super().__init__(paradigm=paradigm, data=data, parameters=parameters, weights=weights,
                         verbosity=verbosity, **kwargs)

    def _default_hrf_parameters(self):
        return self.hrf_model.get_default_parameters()

    def _floats_per_voxel(self, n_time, n_features):
        floats = super()._floats_per_voxel(n_time, n_features)
        if self.hrf_model.unique_hrfs:  # each regressor's response for each voxel: (regressors, time, voxels)
            floats += 2 * n_features * n_time
        return floats

    def _fixed_floats(self, n_time, n_features):
        taps = len(self.hrf_model.get_kernel().numpy())
        return super()._fixed_floats(n_time, n_features) + n_features * n_time * taps  # the lagged regressors

    def _predict(self, paradigm, parameters, weights=None, segments=None, frames=None):
        if frames is not None:
            raise ValueError("linear models take the whole paradigm (supports_frames is False)")
        hrf_parameters = self._hrf_parameters(parameters)
        if hrf_parameters is None:  # one kernel: convolve the few regressors, not the many voxels
            bold = tf.matmul(self.hrf_model.convolve(paradigm, segments=segments), weights)
        else:  # per-voxel kernels: each regressor's response is a product of its lagged copies and the kernels
            kernels = self.hrf_model.get_kernel(hrf_parameters)  # (taps, voxels)
            bold = _weighted_responses(self._lagged(paradigm, kernels, segments), kernels, weights)
        return bold + self._baseline(parameters)

    @staticmethod
    def _lagged(paradigm, kernels, segments):
        return lagged(tf.cast(paradigm, kernels.dtype), kernels.shape[0], segments)  # (regressors, time, taps)

    def _prediction_and_jacobian(self, paradigm, parameters_of, free, weights, segments, free_index=None):
        """Prediction (time × voxels) and its Jacobian (time × voxels × free) with respect to ``free``.

        With per-voxel kernels the prediction is linear in the kernels, so forward-mode differentiation is needed
        only up to the kernels (taps × voxels, cheap); the rest is the same two products as the prediction.
        ``parameters_of(free)`` gives the natural parameters. None when the model has no per-voxel kernels.
        """
        if not self.hrf_model.unique_hrfs:
            return None
        n_free = free.shape[1]
        baseline = self.get_parameter_labels().index("baseline")
        columns = []
        for j in range(n_free):
            tangent = tf.one_hot(tf.fill([tf.shape(free)[0]], j), n_free, dtype=free.dtype)
            with tf.autodiff.ForwardAccumulator(free, tangent) as accumulator:
                parameters = parameters_of(free)
                kernels = self.hrf_model.get_kernel(self._hrf_parameters(parameters))
            columns.append((accumulator.jvp(kernels, unconnected_gradients="zero"),
                            accumulator.jvp(parameters, unconnected_gradients="zero")[:, baseline]))
        shifted = self._lagged(paradigm, kernels, segments)
        prediction = _weighted_responses(shifted, kernels, weights) + parameters[:, baseline][tf.newaxis, :]
        jacobian = [_weighted_responses(shifted, d_kernels, weights) + d_baseline[tf.newaxis, :]
                    for d_kernels, d_baseline in columns]
        return prediction, tf.stack(jacobian, axis=-1)

    def _responses(self, paradigm, hrf_parameters, segments):
        """Each regressor convolved with each voxel's kernel: (regressors, time, voxels)."""
        kernels = self.hrf_model.get_kernel(hrf_parameters)  # (taps, voxels)
        return tf.einsum("rtk,kv->rtv", self._lagged(paradigm, kernels, segments), kernels)

    def _design(self, paradigm, parameters, segments=None):
        hrf_parameters = None if parameters is None else self._hrf_parameters(parameters)
        if hrf_parameters is None:
            return self.hrf_model.convolve(paradigm, segments=segments)
        return tf.transpose(self._responses(paradigm, hrf_parameters, segments), [1, 2, 0])  # (time, voxels, reg)


def _weighted_responses(shifted, kernels, weights):
    """Σ_r weights[r, v] · (shifted[r] @ kernels)[:, v]: (time, voxels)."""
    return tf.einsum("rtv,rv->tv", tf.einsum("rtk,kv->rtv", shifted, kernels), tf.cast(weights, kernels.dtype))
