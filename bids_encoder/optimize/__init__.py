"""Fitters: closed-form weights (WeightFitter) and iterative parameter fits (ParameterFitter)."""

from .parameters import ParameterFitter
from .weights import WeightFitter

__all__ = ["ParameterFitter", "WeightFitter"]
