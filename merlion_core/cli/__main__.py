"""``python -m merlion_core.cli``: the ``merlion`` command."""

import sys

from merlion_core.cli.main import main

sys.exit(main())
