"""``python -m mmedge`` runs the CLI."""

import sys

from mmedge.cli import main

sys.exit(main())
