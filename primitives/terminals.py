"""Loss inputs per branch kind (paper sections 3.1 and A.2).

Classification-like branches see the prediction `yhat`, the target `y` and the constant
`one`; box-regression branches see the intersection `i`, union `u` and enclosing area `e`
of predicted and target boxes, and `one`. `one` is a tensor of ones shaped like the other
inputs: DEAP-style float constants break one-argument torch operators.
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

from gp_losses.core.errors import InputError, did_you_mean
from primitives.base import Terminal

YHAT = Terminal("yhat", prediction=True, assumptions={"positive": True})
"""A predicted probability (softmax output)."""
YHAT_REAL = Terminal("yhat", prediction=True, assumptions={"real": True})
"""A prediction on the whole real line (e.g. a regressed heatmap)."""
Y = Terminal("y", target=True, assumptions={"nonnegative": True})
ONE = Terminal("one", constant=1.0)
I = Terminal("i", prediction=True, target=True, assumptions={"nonnegative": True})
U = Terminal("u", prediction=True, target=True, assumptions={"positive": True})
E = Terminal("e", prediction=True, target=True, assumptions={"positive": True})

CLASSIFICATION_INPUTS: Tuple[Terminal, ...] = (YHAT, Y, ONE)
BOX_INPUTS: Tuple[Terminal, ...] = (I, U, E, ONE)

TERMINALS: Dict[str, Terminal] = {t.name: t for t in (YHAT, Y, ONE, I, U, E)}
"""The built-in terminals by name, for `--branch-inputs yhat,y,one`."""


def terminals_by_name(names: Iterable[str]) -> Tuple[Terminal, ...]:
    """Built-in terminals for a list of names; an InputError names an unknown one."""
    out = []
    for name in names:
        if name not in TERMINALS:
            raise InputError(
                f"unknown input {name!r}" + did_you_mean(name, TERMINALS)
                + f"; known inputs: {', '.join(TERMINALS)}"
            )
        out.append(TERMINALS[name])
    if len({t.name for t in out}) != len(out):
        raise InputError(f"inputs {list(names)!r} name an input twice")
    if not out:
        raise InputError("a branch needs at least one input")
    return tuple(out)
