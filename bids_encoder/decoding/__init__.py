"""Decoding: invert fitted encoding models.

The residual covariance across voxels (:class:`ResidualFitter`), the posterior of the stimulus on a grid
(:func:`stimulus_pdf`, also ``model.get_stimulus_pdf``) and its summaries (:func:`posterior_summary`), the
maximum-a-posteriori stimulus by gradient descent (:class:`StimulusFitter`), single-trial betas by
least-squares-separate (:func:`lss_betas`), and the accuracy of decoded values (:mod:`.metrics`, numpy only).
Numeric core: TensorFlow, numpy, pandas and scipy only.

The names load on first use, so that :mod:`.metrics` (read by the group level) imports without TensorFlow.
"""

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

_LAZY = {"ResidualFitter": "residuals", "tuning_matrix": "residuals", "stimulus_pdf": "posterior",
         "disc_apertures": "posterior", "make_grid": "posterior", "posterior_summary": "summary",
         "interval_contains": "summary", "StimulusFitter": "stimulus_fitter", "pixel_neighbours": "stimulus_fitter",
         "lss_betas": "single_trial", "trial_regressors": "single_trial"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
