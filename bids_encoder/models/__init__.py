"""Encoding models: predict BOLD time series from a paradigm and per-voxel parameters."""

from ..hrf import CustomHRFModel, HRFModel, SPMHRFModel
from .base import EncodingModel, HRFEncodingModel
from .linear import LinearModelWithBaseline, LinearModelWithBaselineHRF
from .prf import (
    DifferenceOfGaussiansPRF2D,
    DifferenceOfGaussiansPRF2DWithHRF,
    DivisiveNormalizationGaussianPRF2D,
    DivisiveNormalizationGaussianPRF2DWithHRF,
    GaussianPRF,
    GaussianPRF2D,
    GaussianPRF2DWithHRF,
    GaussianPRFWithHRF,
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
    "VonMisesPRF",
    "VonMisesPRFWithHRF",
    "GaussianPRF2D",
    "GaussianPRF2DWithHRF",
    "DifferenceOfGaussiansPRF2D",
    "DifferenceOfGaussiansPRF2DWithHRF",
    "DivisiveNormalizationGaussianPRF2D",
    "DivisiveNormalizationGaussianPRF2DWithHRF",
]
