"""Encoding models: predict BOLD time series from a paradigm and per-voxel parameters."""

from .base import EncodingModel, HRFEncodingModel
from .hrf import CustomHRFModel, HRFModel, SPMHRFModel
from .linear import LinearModelWithBaseline, LinearModelWithBaselineHRF
from .prf import (
    CSSPRF2D,
    CSSPRF2DWithHRF,
    DifferenceOfGaussiansPRF2D,
    DifferenceOfGaussiansPRF2DWithHRF,
    DivisiveNormalizationGaussianPRF2D,
    DivisiveNormalizationGaussianPRF2DWithHRF,
    GaussianPRF,
    GaussianPRF2D,
    GaussianPRF2DWithHRF,
    GaussianPRFWithHRF,
    LogGaussianPRF,
    LogGaussianPRFWithHRF,
    VonMisesPRF,
    VonMisesPRFWithHRF,
)

__all__ = [
    "EncodingModel",
    "HRFEncodingModel",
    "LinearModelWithBaseline",
    "LinearModelWithBaselineHRF",
    "HRFModel",
    "SPMHRFModel",
    "CustomHRFModel",
    "GaussianPRF",
    "GaussianPRFWithHRF",
    "LogGaussianPRF",
    "LogGaussianPRFWithHRF",
    "VonMisesPRF",
    "VonMisesPRFWithHRF",
    "GaussianPRF2D",
    "GaussianPRF2DWithHRF",
    "CSSPRF2D",
    "CSSPRF2DWithHRF",
    "DifferenceOfGaussiansPRF2D",
    "DifferenceOfGaussiansPRF2DWithHRF",
    "DivisiveNormalizationGaussianPRF2D",
    "DivisiveNormalizationGaussianPRF2DWithHRF",
]
