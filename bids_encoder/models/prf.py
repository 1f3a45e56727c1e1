"""Population receptive field (pRF) models: 1-D Gaussian, von Mises, and 2-D Gaussian families.

For the 2-D models the paradigm holds stimulus apertures, one row per time point and one column per pixel (in
the order of ``grid_coordinates``), and every receptive field is a normalised 2-D Gaussian: a stimulus covering
the whole field gives a response equal to the amplitude.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import tensorflow as tf

from ..transforms import Bounded, Identity, Positive
from . import _jacobians
from .base import EncodingModel, HRFEncodingModel

__all__ = [
    "GaussianPRF",
    "VonMisesPRF",
    "GaussianPRF2D",
    "DifferenceOfGaussiansPRF2D",
    "DivisiveNormalizationGaussianPRF2D",
    "GaussianPRFWithHRF",
    "VonMisesPRFWithHRF",
    "GaussianPRF2DWithHRF",
    "DifferenceOfGaussiansPRF2DWithHRF",
    "DivisiveNormalizationGaussianPRF2DWithHRF",
]


class _PRFModel(EncodingModel):
    """Shared parts: labels that are bounded, and the optional sign constraint on amplitudes."""

    positive_labels: dict[str, float] = {}  # label → lower bound
    amplitude_labels = ("amplitude",)

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
        return transforms

    def _columns(self, parameters, *labels):
        all_labels = self.get_parameter_labels()
        return [parameters[:, all_labels.index(label)][tf.newaxis, :] for label in labels]

    def _prediction_and_jacobian(self, paradigm, parameters_of, free, weights, segments, free_index=None):
        """Closed-form route for the Levenberg–Marquardt solver (see :mod:`bids_encoder.models._jacobians`);
        None (forward mode) for models without a registered neural Jacobian."""
        if free_index is None:
            return None
        return _jacobians.prediction_and_jacobian(self, paradigm, parameters_of, free, weights, segments,
                                                  free_index)


class GaussianPRF(_PRFModel):
    """1-D Gaussian tuning: amplitude · exp(-(s - mu)² / (2 sd²)) + baseline, for a scalar stimulus s(t).

    ``sd`` is kept above 1e-3 (in stimulus units).
    """

    parameter_labels = ["mu", "sd", "amplitude", "baseline"]
    positive_labels = {"sd": 1e-3}

    def _predict_neural(self, paradigm, parameters, weights=None):
        mu, sd, amplitude = self._columns(parameters, "mu", "sd", "amplitude")
        stimulus = paradigm[:, :1]
        return amplitude * tf.exp(-0.5 * tf.square((stimulus - mu) / sd))


class VonMisesPRF(_PRFModel):
    """Circular tuning: amplitude · exp(kappa (cos(s - mu) - 1)) + baseline, s in radians (peak = amplitude)."""

    parameter_labels = ["mu", "kappa", "amplitude", "baseline"]
    positive_labels = {"kappa": 1e-3}

    def _predict_neural(self, paradigm, parameters, weights=None):
        mu, kappa, amplitude = self._columns(parameters, "mu", "kappa", "amplitude")
        stimulus = paradigm[:, :1]
        return amplitude * tf.exp(kappa * (tf.cos(stimulus - mu) - 1.0))


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


class GaussianPRF2D(_PRFModel):
    """2-D isotropic Gaussian pRF on stimulus apertures.

    Parameters
    ----------
    grid_coordinates : DataFrame or array, shape (pixels, 2)
        x and y (degrees) of every aperture pixel, in the order of the paradigm's columns.
    paradigm : DataFrame, shape (time, pixels)
        Stimulus apertures (0 = no stimulus).
    positive_amplitude : bool
        Constrain amplitudes to be positive (a softplus transform); free sign otherwise.

    Notes
    -----
    Labels: x, y, sd, baseline, amplitude. Positions are kept within the stimulus extent widened by half its
    size on each side, ``sd`` (degrees) between half a pixel (the finest size the stimulus resolves) and the stimulus extent: an iterative
    fit cannot carry a noisy voxel to a huge, far-away field that acts as a linear gradient across the screen.
    """

    parameter_labels = ["x", "y", "sd", "baseline", "amplitude"]

    def __init__(self, grid_coordinates=None, paradigm=None, data=None, parameters=None, weights=None,
                 positive_amplitude=False, verbosity=logging.INFO, **kwargs):
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

    @property
    def transforms(self):
        transforms = super().transforms
        for label, (low, high) in self.bounds.items():
            transforms[label] = Bounded(low, high)
        return transforms

    def get_paradigm(self, paradigm=None):
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


class DivisiveNormalizationGaussianPRF2D(GaussianPRF2D):
    """Divisive normalisation (Aqil et al., 2021):

    (rf_amplitude · G(sd) + neural_baseline) / (srf_amplitude · G(srf_size · sd) + surround_baseline).

    Without stimulus the response is ``neural_baseline / surround_baseline``, which plays the role of the BOLD
    baseline (it is added after the HRF, the stimulus-driven change is convolved). ``rf_amplitude``, ``srf_amplitude`` ≥ 0, ``srf_size`` > 1, ``surround_baseline`` > 1e-3.
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


def _with_hrf(base):
    """Build the ``…WithHRF`` variant of a pRF model class."""

    def __init__(self, *args, hrf_model=None, **kwargs):
        self._init_hrf(hrf_model)
        base.__init__(self, *args, **kwargs)

    doc = (f"{base.__name__} convolved with an HRF (``hrf_model``), the baseline added after convolution. "
           "With ``hrf_model.unique_hrfs`` the parameters gain per-voxel hrf_delay and hrf_dispersion.")
    return type(f"{base.__name__}WithHRF", (HRFEncodingModel, base), {"__init__": __init__, "__doc__": doc,
                                                                      "__module__": __name__})


_jacobians.register(GaussianPRF2D._predict_neural)(_jacobians.gaussian2d_jacobian)

GaussianPRFWithHRF = _with_hrf(GaussianPRF)
VonMisesPRFWithHRF = _with_hrf(VonMisesPRF)
GaussianPRF2DWithHRF = _with_hrf(GaussianPRF2D)
DifferenceOfGaussiansPRF2DWithHRF = _with_hrf(DifferenceOfGaussiansPRF2D)
DivisiveNormalizationGaussianPRF2DWithHRF = _with_hrf(DivisiveNormalizationGaussianPRF2D)
