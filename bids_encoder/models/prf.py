"""Population receptive field (pRF) models: 1-D Gaussian, log-Gaussian, von Mises, and 2-D Gaussian families.

The 1-D (tuning) models read either one stimulus value per time point (the first paradigm column), or — built
with ``stimulus_values`` (K values) — a (time × K) design whose column k says how much value k was shown at each
time point (event occupancy, or regressors already convolved): the response is then ``design @ tuning(values)``,
exact for events of any value whatever their timing.

For the 2-D models the paradigm holds stimulus apertures, one row per time point and one column per pixel (in
the order of ``grid_coordinates``), and every receptive field is a normalised 2-D Gaussian: a stimulus covering
the whole field gives a response equal to the amplitude.
"""

from __future__ import annotations

import inspect
import logging

import numpy as np
import pandas as pd

from .._docstrings import add_parameters, parameter_entries
from .._tensorflow import tf
from . import _jacobians
from ._jacobians import CSS_FLOOR
from .base import EncodingModel, HRFEncodingModel
from .transforms import Bounded, Identity, Positive

__all__ = [
    "GaussianPRF",
    "LogGaussianPRF",
    "VonMisesPRF",
    "GaussianPRF2D",
    "CSSPRF2D",
    "DifferenceOfGaussiansPRF2D",
    "DivisiveNormalizationGaussianPRF2D",
    "GaussianPRFWithHRF",
    "LogGaussianPRFWithHRF",
    "VonMisesPRFWithHRF",
    "GaussianPRF2DWithHRF",
    "CSSPRF2DWithHRF",
    "DifferenceOfGaussiansPRF2DWithHRF",
    "DivisiveNormalizationGaussianPRF2DWithHRF",
]

#: the constructor parameters every pRF model shares (numpydoc entries, added to the class docstrings)
_SHARED_PARAMETERS = """data : DataFrame or array, shape (time, voxels), optional
    Stored (the fitters take their own).
parameters : DataFrame or array, shape (voxels, parameters), optional
    Columns: ``get_parameter_labels()``; the default of ``predict``.
weights : optional
    Not used by pRF models (braincoder's signature).
positive_amplitude : bool
    Keep ``amplitude`` positive (a softplus transform); free sign if False (the default).
verbosity : int
    Logging level of the model's messages.
omega : array, shape (voxels, voxels), optional
    Noise covariance, the default of ``get_stimulus_pdf``."""
_TUNING_PARAMETERS = """paradigm : DataFrame or array, shape (time, 1) or (time, K), optional
    One stimulus value per time point (the first column is read), or with ``stimulus_values`` a design with one
    column per value (how much of value k is shown at each time point).
stimulus_values : array of K floats, optional
    The stimulus value of each design column, in the model's units (radians for von Mises)."""
_PRF2D_PARAMETERS = """grid_coordinates : DataFrame or array, shape (pixels, 2)
    x and y (degrees) of every aperture pixel, in the order of the paradigm's columns (required).
paradigm : DataFrame or array, shape (time, pixels), optional
    Stimulus apertures (0 = no stimulus).
min_visibility : float, optional
    The smallest visibility of a field, in [0, 1) (see :class:`GaussianPRF2D`); None: :data:`MIN_VISIBILITY`."""



class _PRFModel(EncodingModel):
    """Shared parts: labels that are bounded, and the optional sign constraint on amplitudes."""

    positive_labels: dict[str, float] = {}  # label → lower bound
    bounds: dict[str, tuple] = {}  # label → (low, high): a bounded transform (models set their own, never this one)
    amplitude_labels = ("amplitude",)
    supports_frames = True  # the neural response is a function of the time point's apertures or values only

    def __init__(self, paradigm=None, data=None, parameters=None, weights=None, positive_amplitude=False,
                 verbosity=logging.INFO, **kwargs):
        self.positive_amplitude = bool(positive_amplitude)
        super().__init__(paradigm=paradigm, data=data, parameters=parameters, weights=weights,
                         verbosity=verbosity, **kwargs)

    @property
    def transforms(self):
        transforms = {label: Identity() for label in self.get_parameter_labels()}
        for label, lower in self.positive_labels.items():
            transforms[label] = Positive(lower)
        if self.positive_amplitude:
            for label in self.amplitude_labels:
                if label in transforms:
                    transforms[label] = Positive(0.0)
        for label, (low, high) in self.bounds.items():
            transforms[label] = Bounded(low, high)
        return transforms

    def _columns(self, parameters, *labels):
        all_labels = self.get_parameter_labels()
        return [parameters[:, all_labels.index(label)][tf.newaxis, :] for label in labels]

    def _prediction_and_jacobian(self, paradigm, parameters_of, free, weights, segments, free_index=None,
                                 frames=None):
        """Closed-form route for the Levenberg–Marquardt solver (see :mod:`bids_encoder.models._jacobians`);
        None (forward mode) for models without a registered neural Jacobian. ``frames``: as for ``_predict``."""
        if free_index is None:
            return None
        return _jacobians.prediction_and_jacobian(self, paradigm, parameters_of, free, weights, segments,
                                                  free_index, frames=frames)


class _TuningModel(_PRFModel):
    """1-D tuning: ``amplitude · shape(s) + baseline``; subclasses define ``_shape(stimulus, parameters)``."""

    def __init__(self, paradigm=None, data=None, parameters=None, weights=None, positive_amplitude=False,
                 stimulus_values=None, verbosity=logging.INFO, **kwargs):
        if stimulus_values is None:
            self.stimulus_values = None
        else:
            values = np.asarray(stimulus_values, dtype=np.float64).ravel()
            if values.size == 0 or not np.all(np.isfinite(values)):
                raise ValueError("stimulus_values must be a non-empty array of finite values")
            self.stimulus_values = values
        super().__init__(paradigm=paradigm, data=data, parameters=parameters, weights=weights,
                         positive_amplitude=positive_amplitude, verbosity=verbosity, **kwargs)

    def _axis(self, values):
        """Stimulus values on the axis of ``mu`` and ``sd`` (the log for the log-Gaussian)."""
        return values

    @property
    def bounds(self):
        """With ``stimulus_values``: ``mu`` within their range (a 5 % margin on each side, so that a start at an end
        of the range can still move), ``sd`` between its floor and twice the range. A peak
        outside the values shown is not identifiable (the curve is a monotonic ramp over them): an iterative fit
        would carry noisy voxels to arbitrary preferred values far outside; a preferred value at an end of the
        range means "there or beyond". Without stimulus values (or one value): none."""
        if self.stimulus_values is None or "sd" not in self.parameter_labels:
            return {}
        values = self._axis(self.stimulus_values)
        values = values[np.isfinite(values)]
        span = float(values.max() - values.min()) if values.size else 0.0
        if span <= 0:
            return {}
        margin = 0.05 * span
        return {"mu": (float(values.min()) - margin, float(values.max()) + margin),
                "sd": (self.positive_labels.get("sd", 1e-3), 2.0 * span)}

    def get_paradigm(self, paradigm=None):
        paradigm = super().get_paradigm(paradigm)
        if self.stimulus_values is not None and paradigm.shape[1] != self.stimulus_values.size:
            raise ValueError(f"The design has {paradigm.shape[1]} columns but stimulus_values has "
                             f"{self.stimulus_values.size} values")
        return paradigm

    def _floats_per_voxel(self, n_time, n_features):
        return super()._floats_per_voxel(n_time, n_features) + 3 * n_features

    def _predict_neural(self, paradigm, parameters, weights=None):
        (amplitude,) = self._columns(parameters, "amplitude")
        if self.stimulus_values is None:
            return amplitude * self._shape(paradigm[:, :1], parameters)
        values = tf.constant(self.stimulus_values[:, np.newaxis], tf.float32)
        return tf.matmul(paradigm, amplitude * self._shape(values, parameters))

    def tuning_curve(self, stimulus, parameters):
        """The tuning curve (values × voxels, DataFrame) without the baseline, at the stimulus values given."""
        parameters = self._check_parameters(parameters)
        stimulus = np.asarray(stimulus, dtype=np.float32).reshape(-1, 1)
        p = tf.constant(parameters.to_numpy())
        (amplitude,) = self._columns(p, "amplitude")
        curve = amplitude * self._shape(tf.constant(stimulus), p)
        return pd.DataFrame(curve.numpy(), index=stimulus[:, 0], columns=parameters.index)


@add_parameters(_TUNING_PARAMETERS, _SHARED_PARAMETERS)
class GaussianPRF(_TuningModel):
    """1-D Gaussian tuning: amplitude · exp(-(s - mu)² / (2 sd²)) + baseline, for a scalar stimulus s(t).

    ``sd`` is kept above 1e-3 (in stimulus units). Derived: preferred value ``mu``, FWHM ``2 sqrt(2 ln 2) sd``.
    """

    parameter_labels = ["mu", "sd", "amplitude", "baseline"]
    positive_labels = {"sd": 1e-3}

    def _shape(self, stimulus, parameters):
        mu, sd = self._columns(parameters, "mu", "sd")
        return tf.exp(-0.5 * tf.square((stimulus - mu) / sd))


#: Stimulus values at or below this are treated as this value by the log-Gaussian model (its log is finite)
LOG_FLOOR = 1e-6


@add_parameters(_TUNING_PARAMETERS, _SHARED_PARAMETERS)
class LogGaussianPRF(_TuningModel):
    """Log-Gaussian tuning (numerosity-style): amplitude · exp(-(log s - mu)² / (2 sd²)) + baseline.

    ``mu`` and ``sd`` are in natural-log units of the stimulus (s > 0; values ≤ 1e-6 count as 1e-6); ``sd`` is
    kept above 1e-3. In stimulus units the preferred value (the peak) is ``exp(mu)`` and the full width at half
    maximum ``exp(mu + h) - exp(mu - h)`` with ``h = sd sqrt(2 ln 2)`` (see :meth:`natural_parameters`).
    """

    parameter_labels = ["mu", "sd", "amplitude", "baseline"]
    positive_labels = {"sd": 1e-3}

    def _axis(self, values):
        return np.log(np.maximum(values, LOG_FLOOR))

    def _shape(self, stimulus, parameters):
        mu, sd = self._columns(parameters, "mu", "sd")
        log_stimulus = tf.math.log(tf.maximum(stimulus, LOG_FLOOR))
        return tf.exp(-0.5 * tf.square((log_stimulus - mu) / sd))

    @staticmethod
    def natural_parameters(parameters):
        """Preferred value and FWHM in stimulus units.

        Parameters
        ----------
        parameters : DataFrame or mapping
            Columns ``mu`` and ``sd`` (natural-log units), one row per voxel.

        Returns
        -------
        DataFrame
            Columns ``preferred`` (``exp(mu)``) and ``fwhm``, indexed like ``parameters``.
        """
        mu, sd = np.asarray(parameters["mu"], float), np.asarray(parameters["sd"], float)
        half = sd * np.sqrt(2 * np.log(2))
        return pd.DataFrame({"preferred": np.exp(mu), "fwhm": np.exp(mu + half) - np.exp(mu - half)},
                            index=getattr(parameters, "index", None))


@add_parameters(_TUNING_PARAMETERS, _SHARED_PARAMETERS)
class VonMisesPRF(_TuningModel):
    """Circular tuning: amplitude · exp(kappa (cos(s - mu) - 1)) + baseline, s in radians (peak = amplitude)."""

    parameter_labels = ["mu", "kappa", "amplitude", "baseline"]
    positive_labels = {"kappa": 1e-3}
    circular_stimulus = True

    def _shape(self, stimulus, parameters):
        mu, kappa = self._columns(parameters, "mu", "kappa")
        return tf.exp(kappa * (tf.cos(stimulus - mu) - 1.0))


#: Default smallest visibility of a 2-D field (see :class:`GaussianPRF2D`): at some time point the stimulus covers
#: at least this share of the field.
MIN_VISIBILITY = 0.03


def _check_grid(grid_coordinates):
    if grid_coordinates is None:
        raise ValueError("2-D pRF models need grid_coordinates (pixels × 2: x and y in degrees)")
    grid = np.asarray(grid_coordinates, dtype=np.float64)
    if grid.ndim != 2 or grid.shape[1] != 2 or not np.all(np.isfinite(grid)):
        raise ValueError(f"grid_coordinates must be a finite (pixels × 2) array, got shape {grid.shape}")
    steps = []
    for axis in range(2):
        values = np.unique(grid[:, axis])
        steps.append(float(np.median(np.diff(values))) if len(values) > 1 else 1.0)
    return grid, steps[0] * steps[1]


@add_parameters(_PRF2D_PARAMETERS, _SHARED_PARAMETERS)
class GaussianPRF2D(_PRFModel):
    """2-D isotropic Gaussian pRF on stimulus apertures.

    Notes
    -----
    Labels: x, y, sd, baseline, amplitude. Positions are kept within the stimulus extent widened by half its
    size on each side, ``sd`` (degrees) between half a pixel (the finest size the stimulus resolves) and the
    stimulus extent: an iterative fit cannot carry a noisy voxel to a huge, far-away field that acts as a linear
    gradient across the screen.

    The stimulus must see the field: its *visibility*, the largest share of the (normalised) field that the
    apertures cover at any one time, relative to the brightest aperture value, must be at least
    ``min_visibility`` (:data:`MIN_VISIBILITY`). A field centred beyond the stimulated region is not identified —
    moving it further out while raising the amplitude predicts nearly the same response, so an iterative fit
    would slide it to the position bound with an amplitude no experiment measured (a full-field response of
    10⁴ times the data's). The constraint is the same as an amplitude ceiling of ``1 / min_visibility`` times the
    largest response the fit predicts. The grid search skips points below it and Levenberg–Marquardt never
    accepts a step that leaves it (:meth:`_feasible`).
    """

    parameter_labels = ["x", "y", "sd", "baseline", "amplitude"]
    constrained = True  # see _feasible
    hrf_coupled_labels = ("sd",)  # trades off against per-voxel HRF dispersion (see optimize._uncertainty)

    def __init__(self, grid_coordinates=None, paradigm=None, data=None, parameters=None, weights=None,
                 positive_amplitude=False, verbosity=logging.INFO, min_visibility=None, **kwargs):
        self.min_visibility = MIN_VISIBILITY if min_visibility is None else float(min_visibility)
        if not 0.0 <= self.min_visibility < 1.0:
            raise ValueError(f"min_visibility must be in [0, 1), got {min_visibility}")
        grid, self.pixel_area = _check_grid(grid_coordinates)
        self.grid_coordinates = pd.DataFrame(grid, columns=["x", "y"])
        self._grid = tf.constant(grid, tf.float32)
        low, high = grid.min(axis=0), grid.max(axis=0)
        half = np.maximum((high - low) / 2.0, np.sqrt(self.pixel_area))
        self.bounds = {
            "x": (low[0] - half[0], high[0] + half[0]),
            "y": (low[1] - half[1], high[1] + half[1]),
            "sd": (0.5 * np.sqrt(self.pixel_area), 2.0 * float(half.max())),
        }
        self.positive_labels = {}
        if "srf_size" in self.parameter_labels:
            self.positive_labels["srf_size"] = 1.0
        super().__init__(paradigm=paradigm, data=data, parameters=parameters, weights=weights,
                         positive_amplitude=positive_amplitude, verbosity=verbosity, **kwargs)

    def get_paradigm(self, paradigm=None):
        """The cleaned apertures, falling back to the stored ones.

        Parameters
        ----------
        paradigm : DataFrame or array, shape (time, pixels), optional
            One column per pixel of ``grid_coordinates``; None: the stored paradigm.

        Returns
        -------
        DataFrame, shape (time, pixels), float32
        """
        paradigm = super().get_paradigm(paradigm)
        if paradigm.shape[1] != self._grid.shape[0]:
            raise ValueError(
                f"The stimulus has {paradigm.shape[1]} pixels but grid_coordinates has {self._grid.shape[0]}"
            )
        return paradigm

    n_fields = 1  # Gaussian fields over the pixels per voxel (centre, surround)

    def _floats_per_voxel(self, n_time, n_features):
        """Each field is a (pixels × voxels) tensor built in a few steps (squared distances, exponential,
        scaling): about three of them alive at once."""
        return super()._floats_per_voxel(n_time, n_features) + 3 * self.n_fields * self._grid.shape[0]

    def _gaussian_response(self, paradigm, x, y, sd):
        """Stimulus overlap with normalised Gaussians: (time, voxels)."""
        d2 = tf.square(self._grid[:, 0:1] - x) + tf.square(self._grid[:, 1:2] - y)  # (pixels, voxels)
        field = tf.exp(-0.5 * d2 / tf.square(sd)) * (self.pixel_area / (2.0 * np.pi) / tf.square(sd))
        return tf.matmul(paradigm, field)

    def _predict_neural(self, paradigm, parameters, weights=None):
        x, y, sd, amplitude = self._columns(parameters, "x", "y", "sd", "amplitude")
        return amplitude * self._gaussian_response(paradigm, x, y, sd)

    def _visibility(self, paradigm, parameters):
        """Largest share of each voxel's (centre) field that the apertures cover at one time, relative to the
        brightest aperture value: (voxels,) tensor, 1 for a small field under the brightest pixel."""
        x, y, sd = self._columns(parameters, "x", "y", "sd")
        paradigm = tf.cast(paradigm, tf.float32)
        response = self._gaussian_response(paradigm, x, y, sd)
        return tf.reduce_max(response, axis=0) / tf.maximum(tf.reduce_max(tf.abs(paradigm)), 1e-30)

    def _feasible(self, paradigm, parameters, margin=1.0):
        """Whether each voxel's field is seen by the stimulus (visibility ≥ ``margin · min_visibility``):
        (voxels,) bool."""
        return self._visibility(paradigm, parameters) >= margin * self.min_visibility


#: Bounds of the CSS exponent
CSS_EXPONENT_BOUNDS = (0.01, 2.0)


@add_parameters(_PRF2D_PARAMETERS, _SHARED_PARAMETERS)
class CSSPRF2D(GaussianPRF2D):
    """Compressive spatial summation (Kay et al., 2013): amplitude · (stimulus overlap with G(sd))^n + baseline.

    The exponent ``n`` is kept in (0.01, 2) by a sigmoid; n < 1 is compressive. The overlap of a stimulus
    covering the whole field is 1, so ``amplitude`` is still the response to a full-field stimulus.
    """

    parameter_labels = ["x", "y", "sd", "baseline", "amplitude", "n"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bounds["n"] = CSS_EXPONENT_BOUNDS

    def _predict_neural(self, paradigm, parameters, weights=None):
        x, y, sd, amplitude, n = self._columns(parameters, "x", "y", "sd", "amplitude", "n")
        overlap = self._gaussian_response(paradigm, x, y, sd)
        return amplitude * tf.pow(tf.maximum(overlap, CSS_FLOOR), n)


@add_parameters(_PRF2D_PARAMETERS, _SHARED_PARAMETERS)
class DifferenceOfGaussiansPRF2D(GaussianPRF2D):
    """Centre minus surround: amplitude · (G(sd) − srf_amplitude · G(srf_size · sd)) + baseline.

    ``srf_amplitude`` ≥ 0 and ``srf_size`` > 1 (relative to ``sd``).
    """

    parameter_labels = ["x", "y", "sd", "baseline", "amplitude", "srf_amplitude", "srf_size"]
    n_fields = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.positive_labels["srf_amplitude"] = 0.0

    def _predict_neural(self, paradigm, parameters, weights=None):
        x, y, sd, amplitude, srf_amplitude, srf_size = self._columns(
            parameters, "x", "y", "sd", "amplitude", "srf_amplitude", "srf_size")
        centre = self._gaussian_response(paradigm, x, y, sd)
        surround = self._gaussian_response(paradigm, x, y, sd * srf_size)
        return amplitude * (centre - srf_amplitude * surround)


@add_parameters(_PRF2D_PARAMETERS, _SHARED_PARAMETERS.replace(
    "Keep ``amplitude`` positive (a softplus transform); free sign if False (the default).",
    "No effect: the model has no ``amplitude`` (``rf_amplitude`` and ``srf_amplitude`` are always ≥ 0)."))
class DivisiveNormalizationGaussianPRF2D(GaussianPRF2D):
    """Divisive normalisation (Aqil et al., 2021):

    (rf_amplitude · G(sd) + neural_baseline) / (srf_amplitude · G(srf_size · sd) + surround_baseline).

    Without stimulus the response is ``neural_baseline / surround_baseline``, which plays the role of the BOLD
    baseline (it is added after the HRF, the stimulus-driven change is convolved). ``rf_amplitude``,
    ``srf_amplitude`` ≥ 0, ``srf_size`` > 1, ``surround_baseline`` > 1e-3. Positions and ``sd`` as
    :class:`GaussianPRF2D` (bounds, visibility).
    """

    parameter_labels = ["x", "y", "sd", "rf_amplitude", "srf_amplitude", "srf_size", "neural_baseline",
                        "surround_baseline"]
    amplitude_labels = ()
    n_fields = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.positive_labels.update({"rf_amplitude": 0.0, "srf_amplitude": 0.0, "surround_baseline": 1e-3})

    def _predict_neural(self, paradigm, parameters, weights=None):
        x, y, sd, rf_amp, srf_amp, srf_size, neural_base, surround_base = self._columns(
            parameters, *self.parameter_labels)
        centre = self._gaussian_response(paradigm, x, y, sd)
        surround = self._gaussian_response(paradigm, x, y, sd * srf_size)
        return (rf_amp * centre + neural_base) / (srf_amp * surround + surround_base) - neural_base / surround_base

    def _baseline(self, parameters):
        """The unstimulated level, added after the HRF so that runs do not start with a ramp."""
        neural_base, surround_base = self._columns(parameters, "neural_baseline", "surround_baseline")
        return neural_base / surround_base


def _init_signature(cls):
    """The signature of ``cls``'s constructor, through the ``(*args, **kwargs)`` ones that pass everything on (so
    that ``help()`` and editors show the real parameters)."""
    for klass in cls.__mro__:
        signature = inspect.signature(klass.__init__)
        kinds = {parameter.kind for parameter in list(signature.parameters.values())[1:]}
        if kinds - {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
            return signature
    return inspect.signature(cls.__init__)


def _with_hrf(base):
    """Build the ``…WithHRF`` variant of a pRF model class."""

    def __init__(self, *args, hrf_model=None, **kwargs):
        self._init_hrf(hrf_model)
        base.__init__(self, *args, **kwargs)

    parameters = list(_init_signature(base).parameters.values())
    hrf = inspect.Parameter("hrf_model", inspect.Parameter.KEYWORD_ONLY, default=None)
    tail = [p for p in parameters if p.kind == inspect.Parameter.VAR_KEYWORD]
    head = [p for p in parameters if p.kind != inspect.Parameter.VAR_KEYWORD]
    __init__.__signature__ = inspect.Signature([*head, hrf, *tail])

    doc = (f"{base.__name__} convolved with an HRF (``hrf_model``), the baseline added after convolution.\n\n"
           f"See Also\n--------\n{base.__name__}\n")
    hrf_entry = ("hrf_model : HRFModel\n    Required, by keyword: for example ``SPMHRFModel(tr)``; with ``unique_hrfs``"
                 " the parameters gain per-voxel\n    ``hrf_delay`` and ``hrf_dispersion``.")
    return add_parameters(hrf_entry, parameter_entries(base))(type(
        f"{base.__name__}WithHRF", (HRFEncodingModel, base), {"__init__": __init__, "__doc__": doc,
                                                              "__module__": __name__}))


for _staged in (CSSPRF2D, DifferenceOfGaussiansPRF2D, DivisiveNormalizationGaussianPRF2D):
    _staged.__init__.__signature__ = _init_signature(GaussianPRF2D)
_jacobians.register(GaussianPRF2D._predict_neural)(_jacobians.gaussian2d_jacobian)
_jacobians.register(CSSPRF2D._predict_neural)(_jacobians.css2d_jacobian)
_jacobians.register(DifferenceOfGaussiansPRF2D._predict_neural)(_jacobians.dog2d_jacobian)

GaussianPRFWithHRF = _with_hrf(GaussianPRF)
LogGaussianPRFWithHRF = _with_hrf(LogGaussianPRF)
VonMisesPRFWithHRF = _with_hrf(VonMisesPRF)
GaussianPRF2DWithHRF = _with_hrf(GaussianPRF2D)
CSSPRF2DWithHRF = _with_hrf(CSSPRF2D)
DifferenceOfGaussiansPRF2DWithHRF = _with_hrf(DifferenceOfGaussiansPRF2D)
DivisiveNormalizationGaussianPRF2DWithHRF = _with_hrf(DivisiveNormalizationGaussianPRF2D)
