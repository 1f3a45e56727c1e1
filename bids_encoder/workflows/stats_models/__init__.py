"""``--model-file``: a BIDS Stats Model through pybids. :mod:`.participant_nodes`: its run node fitted as GLMs, its
session and subject nodes combining their inputs; :mod:`.dataset_nodes`: its dataset nodes at the group level."""
