"""``python -m bids_encoder``: the same as the ``bids_encoder`` command."""

from .cli.app import console

console()
