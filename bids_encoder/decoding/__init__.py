"""Decoding: invert fitted encoding models.

The residual covariance across voxels (:class:`ResidualFitter`), the posterior of the stimulus on a grid
(:func:`stimulus_pdf`, also ``model.get_stimulus_pdf``) and its summaries (:func:`posterior_summary`), the
maximum-a-posteriori stimulus by gradient descent (:class:`StimulusFitter`), and single-trial betas by
least-squares-separate (:func:`lss_betas`). Numeric core: TensorFlow, numpy, pandas and scipy only.
"""

from ._common import make_grid
from .posterior import disc_apertures, stimulus_pdf
from .residuals import ResidualFitter, tuning_matrix
from .single_trial import lss_betas, trial_regressors
from .stimulus_fitter import StimulusFitter, pixel_neighbours
from .summary import interval_contains, posterior_summary

__all__ = [
    "ResidualFitter",
    "tuning_matrix",
    "stimulus_pdf",
    "disc_apertures",
    "make_grid",
    "posterior_summary",
    "interval_contains",
    "StimulusFitter",
    "pixel_neighbours",
    "lss_betas",
    "trial_regressors",
]
