"""The entry point of a fit: the BIDS inputs of one fit handed to the numeric core — which model, which fitters,
which maps.

- ``glm``, canonical HRF: the exact SPM-convolved design (16× oversampled events) in ``LinearModelWithBaseline``;
  weights in closed form with ``WeightFitter`` (confounds and run intercepts fitted alongside).
- ``glm``, ``--hrf shared``: the TR-occupancy paradigm in ``LinearModelWithBaselineHRF``; canonical weights, one
  HRF delay and dispersion for all voxels estimated from the voxels the canonical fit explains best
  (:mod:`bids_encoder.optimize.shared_hrf`), then the weights with that HRF.
- ``glm``, ``--hrf fit``: the same paradigm; canonical weights, then per-voxel HRF delay and dispersion with
  ``ParameterFitter`` (Levenberg–Marquardt, confounds projected out of data and predictions), then closed-form
  weights again with the fitted HRFs.
- ``prf2d``: ``GaussianPRF2DWithHRF``: grid → refine → Levenberg–Marquardt; ``shared`` estimates one HRF from the
  canonical fit's best voxels and refits from the canonical solution; ``fit`` has a per-voxel HRF (its grid
  includes HRF values).
- ``css2d``, ``dog2d``, ``dn2d``: the staged fit (:func:`~bids_encoder.optimize.recipes.fit_prf2d_staged`): the
  Gaussian as above, then the model seeded from it with a small grid over its extra parameters, then LM.
- ``gauss1d``, ``loggauss1d``, ``vonmises1d``: 1-D tuning models of the events' stimulus values
  (:mod:`.tuning`): grid over preferred value × width → LM.

Every fit also returns a predictor of the stimulus-driven signal for any runs of the same inputs, which the
cross-validation (:mod:`.crossval`) uses on held-out data.
"""

from __future__ import annotations

import logging

from .kinds import HRF_CHOICES, MODEL_KINDS

logger = logging.getLogger(__name__)


def fit_model(inputs, model, hrf="canonical", alpha=0.0, max_iterations=None, noise_model="ssq",
              memory_limit=2_000_000_000, progressbar=True, positive_amplitude=False, stimulus_period=None,
              run_model="joint", min_grid_rsquared=None):
    """Fit ``model`` (one of :data:`MODELS`) with the HRF choice ``hrf`` (see :data:`HRF_CHOICES`) to the inputs.

    ``positive_amplitude`` constrains the amplitudes of pRF and tuning models; ``stimulus_period`` (degrees,
    180 or 360) is the period of the von Mises model's stimulus values; ``min_grid_rsquared`` the grid-R² gate of
    their iterative stage (None: the recipes' ``MIN_GRID_R2``; 0 iterates every voxel); ``run_model`` (GLM):
    ``joint`` (the runs share their conditions' columns) or ``fixed-effects`` (each run fitted on its own,
    :mod:`.glm_runs`). Returns a :class:`FitResult`.
    """
    from .glm import fit_glm
    from .glm_runs import fit_glm_fixed_effects
    from .prf import fit_prf2d_inputs
    from .tuning import fit_tuning_inputs

    if hrf not in HRF_CHOICES:
        raise ValueError(f"Unknown HRF choice {hrf!r}; choose from {', '.join(HRF_CHOICES)}")
    gate = {} if min_grid_rsquared is None else {"min_grid_rsquared": float(min_grid_rsquared)}
    kind = MODEL_KINDS.get(model)
    if kind == "glm":
        fit = fit_glm_fixed_effects if run_model == "fixed-effects" else fit_glm
        result = fit(inputs, hrf, alpha, max_iterations, noise_model, memory_limit, progressbar)
    elif kind == "prf2d":
        result = fit_prf2d_inputs(inputs, hrf, max_iterations, noise_model, memory_limit, progressbar,
                                  model=model, positive_amplitude=positive_amplitude, **gate)
    elif kind == "tuning":
        result = fit_tuning_inputs(inputs, model, hrf, max_iterations, noise_model, memory_limit, progressbar,
                                   positive_amplitude=positive_amplitude, stimulus_period=stimulus_period, **gate)
    else:
        raise ValueError(f"Unknown model {model!r}")
    result.hrf_choice = hrf
    return result
