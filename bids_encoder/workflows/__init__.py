"""The pipeline: BIDS inputs → the numeric core → BIDS-Derivatives, one subpackage per stage.

Data flow one way, and so do the imports (a test checks): each stage uses the ones listed before it.

- :mod:`.common`: what every stage shares — output names and finished-fit markers, the console's records,
  thresholded group maps, signal handling.
- :mod:`.fits`: one model fitted to one set of inputs (GLM, 2-D pRF, 1-D tuning), its cross-validation, GLM
  inference, and writing its maps.
- :mod:`.comparison`: the best model per voxel (participant level) and across participants (group level).
- :mod:`.decoding`: ``--decode``, the stimulus of every trial decoded leave one run out.
- :mod:`.stats_models`: ``--model-file``, a BIDS Stats Model's nodes (run, session and subject nodes at the
  participant level, dataset nodes at the group level).
- :mod:`.sessions`: a subject's fixed effects over its sessions.
- :mod:`.participant`: the participant level — plans every fit of the selection, runs them, writes the report.
- :mod:`.group`: the group level — participants' maps into group maps, tables and the group report.

The subpackages' ``__init__`` modules import nothing, so that the command line can read their names (``--model``
choices) before TensorFlow loads.
"""
