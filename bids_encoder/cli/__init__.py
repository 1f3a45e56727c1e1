"""The command line: ``bids_encoder BIDS_DIR OUTPUT_DIR {participant,group} [options]``.

:mod:`.app` holds the click command and the dispatch to the levels; :mod:`.support` its helpers (option parsing,
configuration files, logging, threads and devices).
"""

from .app import cli, main

__all__ = ["cli", "main"]
