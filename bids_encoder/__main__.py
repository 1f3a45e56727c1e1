"""``python -m bids_encoder``: the same as the ``bids_encoder`` command."""

import sys

from .cli import main

sys.exit(main())
