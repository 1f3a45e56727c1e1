"""bids_encoder: fMRI encoding models fitted with TensorFlow, as a library and a BIDS-App."""

import logging

from ._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
