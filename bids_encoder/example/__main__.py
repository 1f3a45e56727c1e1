"""``python -m bids_encoder.example [FOLDER]``: see :mod:`bids_encoder.example.whole_brain`."""

from .whole_brain import main

main()
