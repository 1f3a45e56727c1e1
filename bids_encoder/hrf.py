"""Haemodynamic response functions (braincoder's ``braincoder.hrf``): the SPM double gamma, custom kernels, and
their batched convolution.

The public face of :mod:`bids_encoder.models.hrf`, where they are implemented beside the encoding models that
convolve with them.
"""

from .models.hrf import TOEPLITZ_MAX_TIME, CustomHRFModel, HRFModel, SPMHRFModel, convolve, lagged, spm_hrf

__all__ = ["spm_hrf", "HRFModel", "SPMHRFModel", "CustomHRFModel", "convolve", "lagged", "TOEPLITZ_MAX_TIME"]
