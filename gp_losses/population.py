"""The population and what a checkpoint holds: individuals, their fitness, search state.

A loss in the population is an `Individual` (its trees, a DEAP fitness, and what was recorded
about it). A loss without a score — a failed or invalid training — takes the fitness FAILED,
below every score, and is left out of the statistics; it never enters the hall of fame.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np
from deap import base, tools

from gp_losses.messages import Made
from gp_losses.outcomes import Training
from gp_losses.trees import Loss, LossTree

Fingerprint = Tuple[Tuple[float, ...], ...]
"""A loss's gradient fingerprint: one per branch (section 3.2)."""

FAILED = -1.0
"""The fitness of a loss without a score (a failed or invalid training): below every score,
so that a tournament never prefers it; it is never shown as a score."""


class Fitness(base.Fitness):
    weights = (1.0,)


class Known(NamedTuple):
    """A training's deterministic outcome, kept for gradient-equivalent losses to reuse."""

    score: Optional[float]
    status: str
    metrics: Mapping[str, float]
    eval: int


class Individual(Loss):
    """A loss in the population: its trees, a DEAP fitness, and what was recorded about it.

    Its outcome is its own training (`training`, evaluation number `eval`), or the known
    result of a gradient-equivalent loss (`reused`), or none (`unscored`: its equivalent in
    the same batch failed); `status`, `score`, `metrics` and `error` say which."""

    seeded: Optional[str] = None  # class defaults: checkpoints written before these existed
    protocol: Optional[str] = None

    def __init__(self, trees=(), expr: Optional[Mapping[str, str]] = None, fingerprint: Fingerprint = (),
                 made: Tuple[Made, ...] = (), parent: Optional[int] = None,
                 seeded: Optional[str] = None) -> None:
        super().__init__(trees)
        self.fitness = Fitness()
        self.expr: Dict[str, str] = dict(expr or {})
        self.fingerprint: Fingerprint = tuple(fingerprint)
        self.made: Tuple[Made, ...] = tuple(made)
        """How each branch's tree was made."""
        self.parent = parent
        """The parent's line in evaluations.jsonl (None: a random or seeded loss)."""
        self.seeded = seeded
        """The `search.seed_losses` entry it came from (a warm start), else None."""
        self.protocol: Optional[str] = None
        """A seeded loss placed although the protocol rejected it: the reason."""
        self.index: Optional[int] = None
        """Its line in evaluations.jsonl."""
        self.eval: Optional[int] = None
        self.training: Optional[Training] = None
        self.reused: Optional[Known] = None
        self.status = "pending"
        self.score: Optional[float] = None
        self.metrics: Mapping[str, float] = {}
        self.error: Optional[str] = None
        self.formula: Optional[Dict[str, str]] = None
        """Per branch, the simplified formula (hall of fame entries only: sympy is slow)."""

    def record(self) -> Dict[str, Any]:
        """Its line in evaluations.jsonl."""
        out: Dict[str, Any] = {"index": self.index}
        if self.training is not None:
            t = self.training
            out.update(eval=self.eval, expr=self.expr, status=self.status, score=self.score,
                       metrics=self.metrics, fingerprint=[list(f) for f in self.fingerprint],
                       iterations=t.iterations, seconds=round(t.seconds, 4))
            out.update({k: v for k, v in (("worker", t.worker), ("device", t.device)) if v is not None})
            out["error"] = t.error
        else:
            out.update(expr=self.expr, status=self.status, score=self.score, metrics=self.metrics,
                       fingerprint=[list(f) for f in self.fingerprint], seconds=0.0)
            if self.reused is None:
                out["error"] = self.error
        out.update(origin=[m.to_dict() for m in self.made], parent=self.parent)
        if self.seeded is not None:
            out.update(seeded=self.seeded, protocol=self.protocol or "passed")
        if self.reused is not None:
            out.update(reused_eval=self.reused.eval, reused_status=self.reused.status)
        return out


def same_loss(a: Individual, b: Individual) -> bool:
    """Hall-of-fame duplicates: the same expressions, or the same gradient fingerprint."""
    return a.expr == b.expr or (all(a.fingerprint) and a.fingerprint == b.fingerprint)


def _or_nan(fn: Callable[[List[float]], float]) -> Callable[[List[float]], float]:
    """fn over the scores; NaN while no loss of the population has a score."""
    return lambda values: float(fn(values)) if len(values) else float("nan")


def make_statistics() -> tools.Statistics:
    """Statistics of the population's scores (losses without a score are left out)."""
    stats = tools.Statistics(key=lambda ind: ind.score)
    stats.register("pop_max", _or_nan(np.max))
    stats.register("pop_mean", _or_nan(np.mean))
    stats.register("top5", _or_nan(lambda values: np.mean(sorted(values, reverse=True)[:5])))
    return stats


def scored(population: List[Individual]) -> List[Individual]:
    return [ind for ind in population if ind.score is not None]


@dataclass
class SearchState:
    """Everything a checkpoint holds; pickled after every batch."""

    population: List[Individual] = field(default_factory=list)
    known: Dict[Fingerprint, Known] = field(default_factory=dict)
    """Fingerprint -> the deterministic outcome of a training of a loss with it."""
    counts: "collections.Counter" = field(default_factory=collections.Counter)
    seconds: Dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    created: int = 0
    evaluations: int = 0
    explored: int = 0
    lines: int = 0
    batches: int = 0
    hof: tools.HallOfFame = field(default_factory=lambda: tools.HallOfFame(10, similar=same_loss))
    logbook: tools.Logbook = field(default_factory=tools.Logbook)
    jsonl_size: int = 0
    batch_size: int = 0
    seeded: int = 0
    """How many of the warm start's losses (`search.seed_losses`) have been placed."""
    ladder: List[List[Individual]] = field(default_factory=list)
    """Per fidelity rung, the losses scored `ok` there, in the order they were (with
    fidelity.rungs; gp_losses/fidelity.py)."""
    scored_points: List[Tuple[int, Tuple[float, ...]]] = field(default_factory=list)
    """A Pareto search's trained losses: (evaluation number, value per objective), for
    progress.png's front panel (search.objectives; gp_losses/pareto.py)."""
    random_next: Dict[int, int] = field(default_factory=dict)
    """Per branch, the first index of the run's random stream not yet used by a slot."""
    rng_state: Any = None
    numpy_state: Any = None
    torch_state: Any = None


@dataclass
class Slot:
    """One offspring being made: its parent (None while initializing) and, per branch, the
    accepted tree, its fingerprint and how it was made."""

    parent: Optional[Individual]
    trees: List[Optional[LossTree]]
    fingerprints: List[Tuple[float, ...]]
    made: List[Optional[Made]]
    number: int = 0
    """Its place among all slots of the run: with the seed, it fixes its candidates."""
    seeded: Optional[str] = None
    """The `search.seed_losses` entry it holds (a warm start), else None."""
