"""Several metrics in one search (`search.objectives`; not in the paper, which searches one).

Each loss of the population has one value per objective, a metric of the task and its
direction (`miou` or `miou:max`: higher is better; `name:min`: lower is). Selection in the
aging population is NSGA-II's (Deb et al., 2002) inside the tournament: of the sampled losses
the one on the best Pareto front of the population wins (DEAP's `tools.sortNondominated`),
and between losses of one front the one with the larger crowding distance
(`tools.emo.assignCrowdingDist`), then the first sampled. The hall of fame is a DEAP
`tools.ParetoFront`: every loss no other scored loss dominates, ordered by the first
objective. The logbook gets the front's size and its hypervolume: the area (volume) the front
dominates above the worst point of the metrics' range (0 for a metric to maximize, 1 for one
to minimize), computed as DEAP's hypervolume indicator computes it (moocore).

Metrics are taken to lie in [0, 1], as the task contract's scores do. A loss without a score
(or with a non-finite value) takes a value beyond the range's worse end on every objective
(FAILED below it for a metric to maximize, 1 - FAILED above it for one to minimize), so every
scored loss dominates it and it never joins the front.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from deap import base, tools

from gp_losses.core.errors import did_you_mean
from gp_losses.population import FAILED

DIRECTIONS = {"max": 1.0, "min": -1.0}


class Objective(NamedTuple):
    """A metric of the task and its direction: weight +1 (maximize) or -1 (minimize)."""

    metric: str
    weight: float

    @property
    def worst(self) -> float:
        """The value of a loss without a score: below (above, to minimize) every metric in
        [0, 1]."""
        return FAILED if self.weight > 0 else 1.0 - FAILED

    @property
    def reference(self) -> float:
        """The hypervolume's reference, in minimized form (-weight x value): the range's worst end."""
        return 0.0 if self.weight > 0 else 1.0


def parse_objectives(entries: Sequence[str], metrics: Sequence[str], where: str = "search.objectives") -> Tuple[Objective, ...]:
    """`name` or `name:max` / `name:min` per entry, each a metric of the task, none twice.
    ValueError names the entry."""
    out: List[Objective] = []
    for i, entry in enumerate(entries):
        name, _, direction = str(entry).partition(":")
        name, direction = name.strip(), (direction.strip() or "max")
        if name not in metrics:
            raise ValueError(f"{where}[{i}]: {entry!r}: the task has no metric {name!r}"
                             + did_you_mean(name, list(metrics)) + f"; its metrics: {', '.join(metrics)}")
        if direction not in DIRECTIONS:
            raise ValueError(f"{where}[{i}]: {entry!r}: the direction is max or min (name:max, name:min), "
                             f"not {direction!r}")
        if any(o.metric == name for o in out):
            raise ValueError(f"{where}[{i}]: {entry!r}: metric {name!r} is named twice")
        out.append(Objective(name, DIRECTIONS[direction]))
    return tuple(out)


class ParetoFitness(base.Fitness):
    """A DEAP fitness with one value per objective; its weights (+1, -1) and the objectives'
    metric names are the instance's."""

    weights = (1.0,)

    def __init__(self, weights: Sequence[float] = (1.0,), values: Sequence[float] = (),
                 names: Sequence[str] = ()) -> None:
        self.weights = tuple(weights)
        self.names = tuple(names) or tuple(str(k) for k in range(len(self.weights)))
        super().__init__(tuple(values))

    def __deepcopy__(self, memo: Any) -> "ParetoFitness":  # the hall of fame copies its members
        copy = ParetoFitness(self.weights, names=self.names)
        copy.wvalues = self.wvalues
        return copy

    def named(self) -> Dict[str, float]:
        """{metric: value}."""
        return dict(zip(self.names, self.values))


def fitness(objectives: Sequence[Objective], metrics: Optional[Mapping[str, float]]) -> ParetoFitness:
    """The fitness of a loss with these metrics (None, or an objective missing: no score)."""
    weights, names = [o.weight for o in objectives], [o.metric for o in objectives]
    if metrics is None or any(not math.isfinite(float(metrics.get(o.metric, math.nan))) for o in objectives):
        return ParetoFitness(weights, [o.worst for o in objectives], names)  # NaN would dominate anything
    return ParetoFitness(weights, [float(metrics[o.metric]) for o in objectives], names)


def standing(population: Sequence[Any]) -> Dict[int, Tuple[int, float]]:
    """id(individual) -> (its front's number, 0 the best; its crowding distance in that front)."""
    out: Dict[int, Tuple[int, float]] = {}
    if not population:
        return out
    for number, front in enumerate(tools.sortNondominated(list(population), len(population))):
        tools.emo.assignCrowdingDist(front)
        for ind in front:
            out[id(ind)] = (number, ind.fitness.crowding_dist)
    return out


def winner(population: Sequence[Any], sample: Sequence[int],
           places: Optional[Dict[int, Tuple[int, float]]] = None) -> Any:
    """The tournament's winner among `population[k]` for k in `sample`: the best front, then
    the largest crowding distance, then the first sampled. `places`: the population's
    `standing`, when already known."""
    places = standing(population) if places is None else places

    def key(k: int) -> Tuple[float, float, int]:
        number, crowding = places[id(population[k])]
        return (number, -crowding, sample.index(k))

    return population[min(sample, key=key)]


def non_dominated(points: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Which rows of `points` (one per loss, one column per objective) no other row dominates:
    at least as good on every objective and better on one (directions by `weights`)."""
    w = np.asarray(points, dtype=float) * np.asarray(weights, dtype=float)
    keep = np.ones(len(w), dtype=bool)
    for i in range(len(w)):
        better_or_equal = (w >= w[i]).all(axis=1)
        strictly = (w > w[i]).any(axis=1)
        keep[i] = not (better_or_equal & strictly).any()
    return keep


def hypervolume(points: Sequence[Sequence[float]], objectives: Sequence[Objective]) -> float:
    """The hypervolume the points dominate above the objectives' worst ends (0 when none is
    better than them everywhere)."""
    import moocore

    minimized = -np.asarray(points, dtype=float).reshape(-1, len(objectives)) * [o.weight for o in objectives]
    reference = np.array([o.reference for o in objectives])
    inside = (minimized < reference).all(axis=1)
    if not inside.any():
        return 0.0
    return float(moocore.hypervolume(minimized[inside], ref=reference))


def front_hypervolume(front: Sequence[Any]) -> float:
    """The hypervolume of a front of losses (their fitness's values and weights)."""
    if not len(front):
        return 0.0
    weights = front[0].fitness.weights
    objectives = [Objective(str(k), w) for k, w in enumerate(weights)]
    return hypervolume([ind.fitness.values for ind in front], objectives)


def is_pareto(fit: Any) -> bool:
    return isinstance(fit, ParetoFitness)


__all__ = ["Objective", "ParetoFitness", "parse_objectives", "fitness", "standing", "winner",
           "non_dominated", "hypervolume", "front_hypervolume", "is_pareto"]
