"""The encoding-model base class: numpy/pandas in, TensorFlow (float32) underneath, pandas out."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._tensorflow import tf
from ._frames import as_frame as _as_frame
from ._frames import run_lengths
from .likelihood import stimulus_pdf
from .transforms import Identity

logger = logging.getLogger(__name__)

__all__ = ["EncodingModel", "HRFEncodingModel", "run_lengths"]


class EncodingModel:
    """Abstract base of all encoding models.

    An encoding model predicts a (time × voxels) BOLD signal from a paradigm (time × features) and per-voxel
    parameters (voxels × parameter labels), plus, for linear models, weights (features × voxels).

    Parameters
    ----------
    paradigm : DataFrame or array, shape (time, features), optional
        Stored for later calls. A (run, time) MultiIndex marks runs: the HRF never crosses from one run to the
        next.
    data : DataFrame or array, shape (time, voxels), optional
        Stored as float32 (no NaN or infinite values).
    parameters : DataFrame or array, shape (voxels, parameters), optional
        Columns ``get_parameter_labels()`` (extra columns are dropped); the default of ``predict``.
    weights : DataFrame or array, shape (features, voxels), optional
        Regressor weights of linear models; the default of ``predict``.
    omega : array, shape (voxels, voxels), optional
        Noise covariance, the default of ``get_stimulus_pdf``.
    verbosity : int
        Logging level of this model's messages (stored; ``logging.INFO`` by default).
    """

    parameter_labels: list[str] = []
    uses_weights = False
    #: the neural response at a time point depends on that time point's paradigm row only (the fitters then compute
    #: it on the distinct rows: :func:`~bids_encoder.models._frames.distinct_rows`)
    supports_frames = False
    #: the stimulus is an angle (its grid wraps when decoding): von Mises tuning
    circular_stimulus = False
    #: the parameters must satisfy :meth:`_feasible` beyond their bounds (2-D pRFs: the stimulus sees the field)
    constrained = False

    def __init__(self, paradigm=None, data=None, parameters=None, weights=None, omega=None, verbosity=logging.INFO):
        self.verbosity = verbosity
        self.paradigm = None if paradigm is None else self.get_paradigm(paradigm)
        self.data = None if data is None else _as_frame(data, "data")
        self.parameters = None if parameters is None else self._check_parameters(parameters)
        self.weights = None if weights is None else self._check_weights(weights)
        self.omega = None if omega is None else np.asarray(omega, dtype=np.float32)

    # ------------------------------------------------------------------ labels and transforms
    def get_parameter_labels(self):
        """The ordered parameter labels: the columns of ``parameters``.

        Returns
        -------
        list of str
        """
        return list(self.parameter_labels)

    @property
    def transforms(self):
        """Mapping parameter label → transform (Identity unless the model bounds the parameter)."""
        return {label: Identity() for label in self.get_parameter_labels()}

    def get_default_parameters(self, n_voxels, index=None):
        """Default parameters, when a model has natural ones (linear models); None otherwise.

        Parameters
        ----------
        n_voxels : int
            Number of rows.
        index : Index, optional
            Row labels (voxels); a range index otherwise.

        Returns
        -------
        DataFrame, shape (n_voxels, parameters), or None
        """
        return None

    def _feasible(self, paradigm, parameters, margin=1.0):
        """(voxels,) bool tensor: which parameter rows (tensor, voxels × labels) the fitters may use, for models
        with ``constrained = True`` (``margin`` > 1 asks for rows well inside the feasible set); None for the
        others (every row is)."""
        return None

    # ------------------------------------------------------------------ memory plan
    def _floats_per_voxel(self, n_time, n_features):
        """float32 values that one prediction holds per voxel at its peak, beside its (time × voxels) output: the
        model's own intermediates (receptive fields over the pixels, per-voxel kernels), for the fitters'
        memory plans."""
        return 0

    def _fixed_floats(self, n_time, n_features):
        """float32 values one prediction holds whatever the number of voxels (the paradigm and its copies)."""
        return 2 * n_time * n_features

    # ------------------------------------------------------------------ input cleaning
    def get_paradigm(self, paradigm=None):
        """The cleaned paradigm, falling back to the stored one.

        Parameters
        ----------
        paradigm : DataFrame, Series or array, shape (time, features), optional
            Converted to float32 (a 1-D array becomes one column; NaN and infinite values are refused). None: the
            paradigm given to the constructor (an error if there is none).

        Returns
        -------
        DataFrame, shape (time, features), float32
        """
        if paradigm is None:
            if self.paradigm is None:
                raise ValueError(f"{type(self).__name__} needs a paradigm: pass one or give it to the constructor")
            return self.paradigm
        return _as_frame(paradigm, "paradigm")

    def _check_parameters(self, parameters):
        labels = self.get_parameter_labels()
        if isinstance(parameters, pd.Series):
            parameters = parameters.to_frame().T if set(parameters.index) >= set(labels) else parameters.to_frame()
        if isinstance(parameters, pd.DataFrame):
            missing = [label for label in labels if label not in parameters.columns]
            if missing:
                raise ValueError(f"parameters lack column(s) {missing}; {type(self).__name__} needs {labels}")
            frame = parameters[labels].astype(np.float32)
        else:
            array = np.asarray(parameters, dtype=np.float32)
            if array.ndim == 1:
                array = array[np.newaxis, :]
            if array.ndim != 2 or array.shape[1] != len(labels):
                raise ValueError(f"parameters must have shape (voxels, {len(labels)}) for {labels}, got {array.shape}")
            frame = pd.DataFrame(array, columns=labels)
        frame.columns.name = "parameter"
        if not np.all(np.isfinite(frame.to_numpy())):
            raise ValueError("parameters contain NaN or infinite values")
        return frame

    def _check_weights(self, weights, paradigm=None):
        weights = _as_frame(weights, "weights")
        if paradigm is not None and weights.shape[0] != paradigm.shape[1]:
            raise ValueError(
                f"weights have {weights.shape[0]} rows but the paradigm has {paradigm.shape[1]} regressors"
            )
        return weights

    def _resolve(self, paradigm, parameters, weights):
        """Cleaned (paradigm, parameters, weights) with the stored values as fallbacks."""
        paradigm = self.get_paradigm(paradigm)
        weights = self.weights if weights is None else self._check_weights(weights)
        if self.uses_weights:
            if weights is None:
                raise ValueError(f"{type(self).__name__} needs weights (regressors × voxels)")
            weights = self._check_weights(weights, paradigm)
        parameters = self.parameters if parameters is None else self._check_parameters(parameters)
        if parameters is None and weights is not None:
            parameters = self.get_default_parameters(weights.shape[1], index=weights.columns)
        if parameters is None:
            raise ValueError(f"{type(self).__name__} needs parameters (voxels × {self.get_parameter_labels()})")
        if weights is not None and weights.shape[1] != parameters.shape[0]:
            raise ValueError(f"weights have {weights.shape[1]} voxels but parameters have {parameters.shape[0]}")
        return paradigm, parameters, weights

    # ------------------------------------------------------------------ prediction
    def _predict_neural(self, paradigm, parameters, weights):
        """Neural response (time × voxels) without baseline, as a tensor."""
        raise NotImplementedError

    def _baseline(self, parameters):
        labels = self.get_parameter_labels()
        if "baseline" not in labels:
            return 0.0
        return parameters[:, labels.index("baseline")][tf.newaxis, :]

    def _predict(self, paradigm, parameters, weights=None, segments=None, frames=None):
        """Prediction tensor (time × voxels) from tensors: paradigm (T, F), parameters (V, P), weights (F, V).

        ``frames`` (models with ``supports_frames``): the paradigm holds the distinct rows only and ``frames`` (T,)
        says which one each time point shows (:func:`~bids_encoder.models._frames.distinct_rows`)."""
        return self._expand(self._predict_neural(paradigm, parameters, weights), frames) + self._baseline(parameters)

    @staticmethod
    def _expand(neural, frames):
        """The neural response of the distinct paradigm rows at every time point (``frames`` None: as it is)."""
        return neural if frames is None else tf.gather(neural, frames, axis=0)

    def _respond(self, paradigm, parameters, weights=None):
        """The instantaneous response (stimuli × voxels) to each paradigm row, as decoders invert it: the
        prediction of a single time point (models with an HRF: the neural response plus baseline, no HRF)."""
        return self._predict(paradigm, parameters, weights, segments=None)

    def predict(self, paradigm=None, parameters=None, weights=None):
        """Predicted BOLD signal.

        Parameters
        ----------
        paradigm : DataFrame or array, shape (time, features), optional
            A (run, time) MultiIndex marks runs (the HRF never crosses them). None: the stored paradigm.
        parameters : DataFrame, Series or array, shape (voxels, parameters), optional
            None: the stored parameters, else (linear models) the defaults for the weights' voxels.
        weights : DataFrame or array, shape (features, voxels), optional
            Linear models only (needed there); None: the stored weights.

        Returns
        -------
        DataFrame, shape (time, voxels)
            Indexed like the paradigm; columns are the parameters' index (or the weights' columns).
        """
        paradigm, parameters, weights = self._resolve(paradigm, parameters, weights)
        prediction = self._predict(
            tf.constant(paradigm.to_numpy()),
            tf.constant(parameters.to_numpy()),
            None if weights is None else tf.constant(weights.to_numpy()),
            segments=run_lengths(paradigm.index),
        )
        columns = weights.columns if weights is not None else parameters.index
        return pd.DataFrame(prediction.numpy(), index=paradigm.index, columns=columns)

    def get_stimulus_pdf(self, data, stimulus_range, parameters=None, omega=None, dof=None, weights=None,
                         **kwargs):
        """Posterior density of the stimulus over a grid for every row of ``data``.

        Parameters
        ----------
        data : DataFrame or array, shape (time points or trials, voxels)
            The patterns to decode.
        stimulus_range : array, Series or DataFrame
            The grid: 1-D values, or points × dimensions (see :func:`bids_encoder.decoding.stimulus_pdf`).
        parameters, weights : DataFrame, optional
            None: the model's.
        omega : array, shape (voxels, voxels), optional
            Noise covariance; None: ``self.omega``.
        dof : float, optional
            Student-t likelihood with these degrees of freedom; Gaussian if None.
        **kwargs
            ``prior``, ``paradigm_fn``, ``circular``, ``period``, ``log``, ``batch_size``: as for
            :func:`bids_encoder.decoding.stimulus_pdf`.

        Returns
        -------
        DataFrame, shape (time points, grid points)
            Densities per unit of stimulus (log densities with ``log=True``).
        """
        return stimulus_pdf(self, data, stimulus_range, omega=omega, parameters=parameters, weights=weights,
                            dof=dof, **kwargs)

    def simulate(self, paradigm=None, parameters=None, weights=None, noise=1.0, dof=None, n_repeats=1,
                 random_state=None):
        """Predictions plus noise.

        Parameters
        ----------
        paradigm, parameters, weights : optional
            As for :meth:`predict` (None: the stored ones).
        noise : float or array, shape (voxels, voxels)
            Standard deviation of iid Gaussian noise, or a noise covariance matrix.
        dof : float, optional
            Degrees of freedom of a (multivariate) Student-t noise instead of a Gaussian.
        n_repeats : int
            Repeat the paradigm; the result is indexed by (repeat, time).
        random_state : int or numpy.random.Generator, optional
            Seed of the noise.

        Returns
        -------
        DataFrame, shape (n_repeats · time, voxels)
            The prediction plus noise, float32.
        """
        paradigm = self.get_paradigm(paradigm)
        if n_repeats < 1:
            raise ValueError(f"n_repeats must be at least 1, got {n_repeats}")
        if n_repeats > 1:
            repeated = pd.concat([paradigm] * n_repeats, ignore_index=True)
            levels = [np.repeat(np.arange(n_repeats), len(paradigm))]
            inner = paradigm.index
            if isinstance(inner, pd.MultiIndex):
                levels += [np.tile(inner.get_level_values(i), n_repeats) for i in range(inner.nlevels)]
                names = ["repeat", *inner.names]
            else:
                levels.append(np.tile(np.asarray(inner), n_repeats))
                names = ["repeat", inner.name or "time"]
            repeated.index = pd.MultiIndex.from_arrays(levels, names=names)
            paradigm = repeated
        prediction = self.predict(paradigm, parameters, weights)
        rng = np.random.default_rng(random_state)
        n_time, n_voxels = prediction.shape
        noise_array = np.asarray(noise, dtype=np.float64)
        if noise_array.ndim == 0:
            if noise_array < 0:
                raise ValueError(f"noise must be non-negative, got {noise}")
            draws = rng.standard_normal((n_time, n_voxels)) if dof is None else rng.standard_t(dof, (n_time, n_voxels))
            eps = float(noise_array) * draws
        else:
            if noise_array.shape != (n_voxels, n_voxels):
                raise ValueError(f"a noise covariance must be ({n_voxels}, {n_voxels}), got {noise_array.shape}")
            eps = rng.multivariate_normal(np.zeros(n_voxels), noise_array, size=n_time, method="cholesky")
            if dof is not None:
                eps = eps / np.sqrt(rng.chisquare(dof, size=(n_time, 1)) / dof)
        return prediction + eps.astype(np.float32)


class HRFEncodingModel:
    """Mixin: the neural prediction convolved with an HRF, the baseline added after convolution.

    With ``hrf_model.unique_hrfs`` the parameters gain the HRF model's per-voxel labels (``hrf_delay``,
    ``hrf_dispersion`` for :class:`~bids_encoder.hrf.SPMHRFModel`).
    """

    def _init_hrf(self, hrf_model):
        if hrf_model is None:
            raise ValueError(f"{type(self).__name__} needs an hrf_model (for example SPMHRFModel(tr=...))")
        self.hrf_model = hrf_model

    def get_parameter_labels(self):
        """The model's own labels, then the HRF model's per-voxel ones (``unique_hrfs``).

        Returns
        -------
        list of str
        """
        return list(self.parameter_labels) + self.hrf_model.get_parameter_labels()

    @property
    def transforms(self):
        transforms = super().transforms
        transforms.update(self.hrf_model.transforms)
        return transforms

    def _floats_per_voxel(self, n_time, n_features):
        floats = super()._floats_per_voxel(n_time, n_features) + 2 * n_time  # the neural series and its response
        if self.hrf_model.unique_hrfs:  # one kernel per voxel: shifted copies, one per tap
            floats += 2 * n_time * len(self.hrf_model.get_kernel().numpy())
        return floats

    def _hrf_parameters(self, parameters):
        if not self.hrf_model.unique_hrfs:
            return None
        labels = self.get_parameter_labels()
        columns = [labels.index(label) for label in self.hrf_model.get_parameter_labels()]
        return tf.gather(parameters, columns, axis=1)

    def _predict(self, paradigm, parameters, weights=None, segments=None, frames=None):
        neural = self._expand(self._predict_neural(paradigm, parameters, weights), frames)
        bold = self.hrf_model.convolve(neural, self._hrf_parameters(parameters), segments=segments)
        return bold + self._baseline(parameters)

    def _respond(self, paradigm, parameters, weights=None):
        return self._predict_neural(paradigm, parameters, weights) + self._baseline(parameters)
