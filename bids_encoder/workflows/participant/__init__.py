"""The participant level: :mod:`.options` (what the command line fills in, and its checks), :mod:`.plan` (the runs
of every fit of the selection, checked before anything is fitted; ``--dry-run``'s listing), :mod:`.run` (each fit:
inputs, model, cross-validation, inference, decoding, outputs, report; then the sessions' fixed effects) and
:mod:`.summary` (the summary rows of the report and the confound settings of the sidecars)."""
