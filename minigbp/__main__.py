"""``python -m minigbp``: the ``minigbp`` command."""

import sys

from .cli import main

sys.exit(main())
