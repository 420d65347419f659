"""The population and what a checkpoint holds: individuals, their fitness, search state.

A loss in the population is an `Individual` (its trees, a DEAP fitness, and what was recorded
about it). A loss without a score — a failed or invalid training — takes the fitness FAILED,
below every score, and is left out of the statistics; it never enters the hall of fame.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from deap import base, tools

from gp_losses.trees import Loss, LossTree

FAILED = -1.0
"""The fitness of a loss without a score (a failed or invalid training): below every score,
so that a tournament never prefers it; it is never shown as a score."""


class Fitness(base.Fitness):
    weights = (1.0,)


class Individual(Loss):
    """A loss in the population: its trees, a DEAP fitness, and what was recorded about it."""

    def __init__(self, trees=(), info: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(trees)
        self.fitness = Fitness()
        self.info: Dict[str, Any] = dict(info or {})


def same_loss(a: Individual, b: Individual) -> bool:
    """Hall-of-fame duplicates: the same expressions, or the same gradient fingerprint."""
    return a.info["expr"] == b.info["expr"] or (
        all(a.info["fingerprint"]) and a.info["fingerprint"] == b.info["fingerprint"])


def _or_nan(fn: Callable[[List[float]], float]) -> Callable[[List[float]], float]:
    """fn over the scores; NaN while no loss of the population has a score."""
    return lambda values: float(fn(values)) if len(values) else float("nan")


def make_statistics() -> tools.Statistics:
    """Statistics of the population's scores (losses without a score are left out)."""
    stats = tools.Statistics(key=lambda ind: ind.info["score"])
    stats.register("pop_max", _or_nan(np.max))
    stats.register("pop_mean", _or_nan(np.mean))
    stats.register("top5", _or_nan(lambda values: np.mean(sorted(values, reverse=True)[:5])))
    return stats


def scored(population: List[Individual]) -> List[Individual]:
    return [ind for ind in population if ind.info.get("score") is not None]


@dataclass
class SearchState:
    """Everything a checkpoint holds; pickled after every batch."""

    population: List[Individual] = field(default_factory=list)
    known: Dict[Any, Dict[str, Any]] = field(default_factory=dict)
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
    random_next: Dict[int, int] = field(default_factory=dict)
    """Per branch, the first index of the run's random stream not yet used by a slot."""
    rng_state: Any = None
    numpy_state: Any = None
    torch_state: Any = None


@dataclass
class Slot:
    """One offspring being made: its parent (None while initializing) and accepted trees."""

    parent: Optional[Individual]
    trees: List[Optional[LossTree]]
    fingerprints: List[Tuple[float, ...]]
    origin: List[Dict[str, Any]]
    number: int = 0
    """Its place among all slots of the run: with the seed, it fixes its candidates."""
