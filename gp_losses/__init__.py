"""gp_losses: search loss functions from scratch by genetic programming (AutoLoss-Zero).

    import gp_losses
    result = gp_losses.search(MyTask, evaluations=30)   # gp_losses/api.py
    criterion = result.export()                         # a drop-in torch.nn.Module

The package is import-light on purpose: submodules are imported where they are used, so
that SCOOP workers and the CLI pay only for what they touch; the names below are imported
on first use.
"""

__version__ = "0.1.0"

_LAZY = {"search": "gp_losses.api", "load_run": "gp_losses.api", "SearchResult": "gp_losses.api",
         "LabelTask": "tasks.templates", "DenseTask": "tasks.templates", "Task": "gp_losses.contract"}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gp_losses' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["__version__", *_LAZY]
