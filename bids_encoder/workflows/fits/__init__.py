"""One model fitted to one set of inputs (``bids_encoder.bids.inputs.FitInputs``), and its maps.

- :mod:`.kinds`: the ``--model`` and ``--hrf`` choices (no imports: the command line reads them first).
- :mod:`.dispatch`: :func:`~.dispatch.fit_model`, the entry point, which hands each model kind to its module:
  :mod:`.glm` (GLM: canonical, shared or per-voxel HRF), :mod:`.prf` (2-D pRF family), :mod:`.tuning` (1-D tuning).
- :mod:`.results`: what a fit returns (:class:`~.results.FitResult`, :class:`~.results.MapSpec`) and the plumbing
  the kinds share (HRF sidecars, LM settings, predictors for held-out runs).
- :mod:`.crossval`: cross-validated R² (leave one run out, split halves) and ``--hrf auto``.
- :mod:`.glm_inference`: GLM contrasts, AR(1)/OLS statistics as maps.
- :mod:`.outputs`: writing a fit as BIDS-Derivatives (maps, sidecars, design TSV).

To add a model: its class in :mod:`bids_encoder.models`, its kind in :mod:`.kinds`, a fitting function returning a
:class:`~.results.FitResult` (see :mod:`.prf`), and a branch in :func:`~.dispatch.fit_model`.
"""
