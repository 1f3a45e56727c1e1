"""Encoding models: predict BOLD time series from a paradigm and per-voxel parameters."""

from ..hrf import CustomHRFModel, HRFModel, SPMHRFModel
from .base import EncodingModel, HRFEncodingModel
from .linear import LinearModelWithBaseline, LinearModelWithBaselineHRF

__all__ = [
    "EncodingModel",
    "HRFEncodingModel",
    "LinearModelWithBaseline",
    "LinearModelWithBaselineHRF",
    "HRFModel",
    "SPMHRFModel",
    "CustomHRFModel",
]
