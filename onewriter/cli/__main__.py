"""``python -m onewriter.cli``: the ``onewriter`` command."""

import sys

from .main import main

sys.exit(main())
