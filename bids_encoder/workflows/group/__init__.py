"""The group level: :mod:`.run` (checks every input, then aggregates each task × space × model), :mod:`.maps`
(each participant's maps read, thresholded and sessions averaged; the group maps and their tests), :mod:`.design`
(the group design: covariates, mixed effects or OLS), :mod:`.sessions` (fixed effects over sessions as inputs,
paired session differences), :mod:`.tables` (participants' summaries, ROI tables, decoding accuracy)."""
