"""Linear encoding models: BOLD = design @ weights + baseline, with or without an HRF."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import tensorflow as tf

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
        else:
            bold = self.hrf_model.convolve(tf.matmul(paradigm, weights), hrf_parameters, segments=segments)
        return bold + self._baseline(parameters)

    def _design(self, paradigm, parameters, segments=None):
        hrf_parameters = None if parameters is None else self._hrf_parameters(parameters)
        if hrf_parameters is None:
            return self.hrf_model.convolve(paradigm, segments=segments)
        n_voxels = tf.shape(hrf_parameters)[0]
        tiled = tf.tile(paradigm[:, tf.newaxis, :], tf.stack([1, n_voxels, 1]))
        return self.hrf_model.convolve(tiled, hrf_parameters, segments=segments)
