"""``python -m promptlab`` runs the same command as the ``promptlab`` console script."""

import sys

from promptlab.cli import main

sys.exit(main())
