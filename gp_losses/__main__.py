"""`python -m gp_losses ...` is the `gp-losses` command."""

from gp_losses.cli import program

program()
