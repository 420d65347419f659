"""Multi-fidelity evaluation inside aging evolution (`fidelity.rungs`; not in the paper).

Rung 0 is the proxy: every offspring is trained there once, as in the paper. Rung r > 0 trains
a loss again with the task options of `fidelity.rungs[r-1]` (a longer schedule), with
`fidelity.seeds` seeds of its own; the mean is its score there. Promotion follows asynchronous
successive halving (ASHA, Li et al., MLSys 2020), decided between batches: before each batch,
from the top rung down, a loss that is among the best floor(promote * n) of the n losses scored
at rung r, and was not yet trained at rung r + 1, is promoted, and its trainings take the
batch's first places; offspring take the rest. The decision reads only what earlier batches
recorded, so a seed and a batch size fix it, with or without SCOOP and across a resume.

Selection compares two losses at the highest rung both reached (`beats`); the hall of fame
ranks a loss by the highest rung where it trained `ok` and its score there, so a loss
confirmed by a longer schedule ranks above every loss scored only lower. A loss whose longer
training turned `invalid` (a fact about the loss at that schedule) leaves the hall of fame and
loses every comparison at that rung; an `error` or `timeout` there is no result: the loss
keeps its lower rung and is not promoted again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from deap import base

from gp_losses.outcomes import Training
from gp_losses.population import FAILED, Individual, SearchState


class RungFitness(base.Fitness):
    """The hall of fame's order with rungs: (highest rung trained `ok`, its score there)."""

    weights = (1.0, 1.0)


@dataclass
class Promotion:
    """A loss's trainings at one rung above the proxy: `ok` (every seed ok, `score` their
    mean), `invalid` (a seed made the network non-finite), else `error` or `timeout`."""

    rung: int
    seeds: Tuple[int, ...]
    runs: List[Training] = field(default_factory=list)

    @property
    def status(self) -> str:
        statuses = [run.status for run in self.runs]
        if all(s == "ok" for s in statuses):
            return "ok"
        if "invalid" in statuses:
            return "invalid"
        return next(s for s in statuses if s != "ok")

    @property
    def score(self) -> Optional[float]:
        return float(np.mean([run.score for run in self.runs])) if self.status == "ok" else None

    @property
    def metrics(self) -> Dict[str, float]:
        """Each metric's mean over the seeds ({} unless `ok`)."""
        if self.status != "ok":
            return {}
        return {k: float(np.mean([run.metrics[k] for run in self.runs])) for k in self.runs[0].metrics}

    def record(self, ind: Individual) -> Dict:
        """Its line in evaluations.jsonl: the loss, its line, the rung and each seed's run."""
        return {"promoted": ind.index, "rung": self.rung, "expr": ind.expr, "status": self.status,
                "score": self.score,
                "runs": [{"seed": seed, "status": run.status, "score": run.score, "metrics": dict(run.metrics),
                          "iterations": run.iterations, "error": run.error, "seconds": round(run.seconds, 4),
                          **({"worker": run.worker} if run.worker else {})}
                         for seed, run in zip(self.seeds, self.runs)],
                "seconds": round(sum(run.seconds for run in self.runs), 4)}


def promotion_seed(run_seed: int, index: int, rung: int, k: int) -> int:
    """The seed of training k of the loss on line `index` at `rung`: from the run seed alone,
    apart from every proxy evaluation's."""
    return int(np.random.SeedSequence([run_seed, index, rung, k, 2]).generate_state(1)[0] & 0x7FFFFFFF)


def promotions(ind: Individual) -> Dict[int, Promotion]:
    """The loss's trainings above the proxy, by rung (a checkpoint without rungs has none)."""
    if "promotions" not in ind.__dict__:
        ind.promotions = {}
    return ind.promotions


def score_at(ind: Individual, rung: int) -> Optional[float]:
    """The loss's score at `rung` for selection: FAILED for a training without a score that
    is a fact (rung 0's failures, `invalid` above it); None where it has no result there."""
    if rung == 0:
        return FAILED if ind.score is None else ind.score
    done = promotions(ind).get(rung)
    if done is None or done.status in ("error", "timeout"):
        return None
    return done.score if done.status == "ok" else FAILED


def level(ind: Individual) -> int:
    """The highest rung where the loss has a result."""
    return max([0] + [r for r in promotions(ind) if score_at(ind, r) is not None])


def beats(a: Individual, b: Individual) -> bool:
    """Whether `a` is better than `b` at the highest rung both reached."""
    rung = min(level(a), level(b))
    return score_at(a, rung) > score_at(b, rung)


def standing(ind: Individual) -> Optional[Tuple[int, float]]:
    """(highest rung trained ok, the score there) — the hall of fame's order; None for a loss
    whose longer training turned `invalid`, or that has no score."""
    if ind.score is None or any(p.status == "invalid" for p in promotions(ind).values()):
        return None
    ok = [r for r, p in promotions(ind).items() if p.status == "ok"]
    top = max(ok, default=0)
    return top, (ind.score if top == 0 else promotions(ind)[top].score)


def choose(ladder: List[List[Individual]], rungs: int, share: float, seeds: int,
           capacity: int) -> List[Tuple[Individual, int]]:
    """The (loss, rung) promotions for the next batch, at most `capacity` trainings of
    `seeds` each (but one promotion always fits, so that `seeds` above the batch size still
    promotes): from the top rung down, the best floor(share * n) of the n losses scored at a
    rung that were not trained at the next one yet, best first."""
    capacity = max(capacity, seeds)
    chosen: List[Tuple[Individual, int]] = []
    for rung in reversed(range(rungs)):
        members = ladder[rung] if rung < len(ladder) else []
        top = math.floor(share * len(members) + 1e-9)
        ranked = sorted(members, key=lambda ind: (-score_at(ind, rung), ind.index))[:top]
        for ind in ranked:
            if len(chosen) * seeds + seeds > capacity:
                return chosen
            if rung + 1 not in promotions(ind):
                chosen.append((ind, rung + 1))
    return chosen


def best_of(pop: List[Individual], sample: List[int]) -> Individual:
    """A tournament's winner: compared at the highest rung both reached; the first of a tie."""
    winner = sample[0]
    for k in sample[1:]:
        if beats(pop[k], pop[winner]):
            winner = k
    return pop[winner]


def book(promoting: List[Tuple[Individual, Promotion]], results: List[Training], state: SearchState,
         first_line: int) -> List[Dict]:
    """Give each promoted loss its trainings (`results`, in the order of `promoting`), enter
    those that trained ok at their rung, and return the promotions' records, numbered from
    `first_line`."""
    records = []
    for ind, promotion in promoting:
        promotion.runs, results = results[:len(promotion.seeds)], results[len(promotion.seeds):]
        promotions(ind)[promotion.rung] = promotion
        state.counts["promoted"] += 1
        if promotion.status == "ok":
            state.ladder[promotion.rung].append(ind)
        records.append({"index": first_line + len(records), **promotion.record(ind)})
    return records


def hall_order(proxy_scored: List[Individual]) -> List[Individual]:
    """The losses scored at the proxy that keep a standing, each given it as its fitness, best
    first (a promotion changes a loss's standing, so the hall of fame is made again from
    this): of two copies of one loss, the hall keeps the better."""
    ranked = []
    for ind in proxy_scored:
        place = standing(ind)
        if place is not None:
            ind.fitness.values = place
            ranked.append(ind)
    return sorted(ranked, key=lambda ind: (-ind.fitness.values[0], -ind.fitness.values[1], ind.index))
