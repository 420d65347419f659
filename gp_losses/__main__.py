"""`python -m gp_losses ...` is the `gp-losses` command."""

import sys

from gp_losses.cli import main

sys.exit(main())
