"""gp_losses: search loss functions from scratch by genetic programming (AutoLoss-Zero).

The package is import-light on purpose: submodules are imported where they are used, so
that SCOOP workers and the CLI pay only for what they touch.
"""

__version__ = "0.1.0"
