"""``python -m simda.cli``: the ``simda`` command."""

import sys

from simda.cli import main

sys.exit(main())
