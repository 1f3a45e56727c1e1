"""``--model singletrial``: one response per event for every voxel or vertex, by GLMsingle's method
(:func:`bids_encoder.decoding.single_trial.estimator.fit_single_trials`) on the runs of one fit.

- :mod:`.trials`: the events of each run → the trial table (the events' own columns kept), what repeats, and the
  nuisance regressors of the events that are not trials.
- :mod:`.run`: one fit: inputs, the estimator, its maps as a :class:`~bids_encoder.workflows.fits.results.FitResult`
  (written by :func:`~bids_encoder.workflows.fits.outputs.write_fit`), the 4-D betas and their trial table, the
  report section.
- :mod:`.outputs`: the 4-D map of single-trial betas (NIfTI, GIFTI, CIFTI) and the TSV naming each volume's trial.
"""
