"""Single-trial response estimates.

- :func:`trial_regressors`, :func:`lss_betas` (:mod:`.lss`): one regressor per trial, and least-squares-separate
  betas (Mumford et al., 2012).
- :func:`fit_single_trials` (:mod:`.estimator`): GLMsingle's method (Prince et al., 2022) — a per-voxel HRF from a
  library (:mod:`.hrf_library`), noise regressors from the principal components of a noise pool (GLMdenoise; Kay
  et al., 2013; :mod:`.denoise`), and per-voxel fractional ridge regression (Rokem & Kay, 2020; :mod:`.ridge`),
  each stage switchable, chosen by cross-validation (:mod:`.repeats`), in chunks of voxels under a memory budget.

Numeric core: TensorFlow, numpy, pandas and scipy only.
"""

from .lss import lss_betas, trial_regressors

__all__ = ["lss_betas", "trial_regressors"]
