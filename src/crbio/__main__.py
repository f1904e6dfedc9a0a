"""``python -m crbio``: the same as the ``crbio`` command."""

import sys

from crbio.cli import main

sys.exit(main())
