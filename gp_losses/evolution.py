"""Aging evolution of loss functions, as the paper's Fig. 1 (sections 3.2, 4.5, Appendix A).

    initialize: K random losses, each regenerated until it passes the loss-rejection protocol
    loop until N proxy evaluations:
        select   a parent per slot: the best of T% of the population (tournament, at least 2)
        vary     offspring: copy 10% / re-initialize 50% / two mutations
        reject   static checks, then the protocol (Eq. 5-6); regenerate until one passes
        dedupe   gradient-equivalence check: a known fingerprint reuses its score
        evaluate proxy training of the rest (a failure is recorded, never scored)
        age      append to the population; drop the oldest beyond P
        record   HallOfFame, Statistics, Logbook, evaluations.jsonl, checkpoint

Not in the paper, and off by default: a warm start (`search.seed_losses`: given losses take
the first initial slots; gp_losses/warmstart.py), multi-fidelity rungs (`fidelity.rungs`:
before each batch the best share of each rung's losses is promoted to a longer training, whose
jobs take the batch's first places; gp_losses/fidelity.py), and several objectives
(`search.objectives`: NSGA-II's front and crowding distance decide each tournament, the hall
of fame is the Pareto front; gp_losses/pareto.py).

`run()` is that loop, a batch of `search.batch` offspring at a time (default: one per worker).
The boxes that decide what is searched are the methods below. Within a batch the scheduler
(gp_losses/scheduler.py) spreads vary, reject and evaluate over the workers with no barrier
between them, calling select, accept and dedupe back in slot order; the recorder
(gp_losses/recorder.py) writes what the run did. Each slot's candidates come from generators
seeded by the slot's number (gp_losses/streams.py), so a seed and a batch size fix the
result with or without SCOOP, with any number of workers, and across a resume (the batch
size is part of the checkpoint).

Only facts about a loss are remembered: the workers' protocol caches and the fingerprint ->
score table take deterministic outcomes; a timeout, an error or a process that died is
recorded and an equivalent loss met later is evaluated afresh. When most recent jobs fail
(`search.max_failed_share`), the run stops with the most frequent error.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from deap import tools

from gp_losses import pareto
from gp_losses.config import to_dict
from gp_losses.context import Context
from gp_losses.fidelity import Promotion, RungFitness, best_of, book, choose, hall_order, promotion_seed
from gp_losses.messages import RunSpec, TrainJob
from gp_losses.outcomes import FailureWatch, Training
from gp_losses.population import FAILED, Individual, Known, SearchState, Slot, same_loss
from gp_losses.recorder import Recorder, Rejected
from gp_losses.rundir import RunDir
from gp_losses.scheduler import Batch, Planned, Scheduler
from gp_losses.streams import Answer
from gp_losses.trees import parse_tree
from gp_losses.warmstart import WarmStart

log = logging.getLogger("gp_losses")


def evaluation_seed(run_seed: int, index: int) -> int:
    """The seed of proxy evaluation `index`, derived from the run seed alone."""
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def noise_seed(run_seed: int, index: int) -> int:
    """The seed of the noise accounting's training `index` (search.noise_seeds): from the run
    seed alone, apart from every evaluation's."""
    return int(np.random.SeedSequence([run_seed, index, 1]).generate_state(1)[0] & 0x7FFFFFFF)


class Evolution:
    """One search: `run()` drives the loop; each step below is one of Fig. 1's boxes."""

    def __init__(self, context: Context, rundir: Optional[RunDir], workers: int = 1,
                 state: Optional[SearchState] = None, run_id: str = "local") -> None:
        self.ctx = context
        self.cfg = context.config
        self.space = context.space
        self.spec = RunSpec(to_dict(self.cfg), run_id)
        self.rng = random.Random(self.cfg.seed)
        self.state = state or SearchState()
        if state is not None:
            self._restore_random_state()
        self.batch_size = self.state.batch_size = self.state.batch_size or self.cfg.search.batch or workers
        self.failures = FailureWatch(self.cfg.search.failure_window, self.cfg.search.max_failed_share)
        """Recent job outcomes in this process (a resumed run starts afresh)."""
        self.to_train = self.cfg.search.evaluations - self.state.evaluations
        """Proxy evaluations this process has to run: a shorter run is judged on all of them."""
        self.scheduler = Scheduler(self, self.state, self.spec.key, self.failures)
        self.recorder = Recorder(rundir, self.space, self.cfg)
        self._unbooked = 0.0
        """Seconds of the last batch's bookkeeping (record()), counted with the next batch."""
        self.warm = WarmStart(self)
        """The seed losses (search.seed_losses; gp_losses/warmstart.py)."""
        self.rungs = len(self.cfg.fidelity.rungs)
        """Fidelity rungs above the proxy (gp_losses/fidelity.py); 0: single fidelity, as the paper."""
        if self.rungs and not self.state.ladder:
            self.state.ladder = [[] for _ in range(self.rungs + 1)]
        self.objectives = context.pareto
        """Two or more objectives: NSGA-II selection and a Pareto-front hall (gp_losses/pareto.py)."""
        if self.objectives and not isinstance(self.state.hof, tools.ParetoFront):
            self.state.hof = tools.ParetoFront(similar=same_loss)
        self._places: Optional[Dict[int, Tuple[int, float]]] = None
        """The population's Pareto standing for this batch's tournaments (None: not yet ranked)."""
        self._promoting: List[Tuple[Individual, Promotion]] = []
        """The promotions the batch being made trains."""

    # --- the loop -----------------------------------------------------------------------
    def run(self) -> SearchState:
        """Fig. 1, a batch at a time: select, vary, reject, dedupe and evaluate (the
        scheduler), then age and record, until N proxy evaluations or the time budget."""
        total = self.cfg.search.evaluations
        with self.recorder.progress(self.state) as advance:
            try:
                while self.state.evaluations < total and not self.out_of_time():
                    started = time.perf_counter()
                    n = min(self.batch_size, total - self.state.evaluations)
                    if self.warm.pending:
                        batch = self.warm.batch(n)
                    else:
                        promoted = self.promote(n)
                        batch = self.scheduler.batch(max(0, n - len(promoted)), promoted)
                    records = batch.records + self.evaluate(batch)
                    self.age(batch.children)
                    self.record(records, started)
                    advance()
            except BaseException:
                self.scheduler.close()  # a failed run: the jobs still out are not waited for
                raise
        self.scheduler.finish()
        if self.state.evaluations < total:
            log.info("time budget search.max_seconds = %g s spent after %d evaluations",
                     self.cfg.search.max_seconds, self.state.evaluations)
        return self.state

    def out_of_time(self) -> bool:
        """Whether the run's wall time (over resumes) reached `search.max_seconds` (0: never)."""
        budget = self.cfg.search.max_seconds
        return budget > 0 and self.state.seconds["wall"] >= budget

    # --- select (tournament, section 3.2) -------------------------------------------------
    def select(self, n: int) -> List[Slot]:
        """n slots; while fewer than K losses exist they are random (init) slots, else each
        has a parent: the best of a random T% sample of the population (at least 2)."""
        slots, m = [], len(self.space.branches)
        for _ in range(n):
            parent = None
            if self.state.created >= self.cfg.search.population_init and self.state.population:
                parent = self.tournament()
            slots.append(Slot(parent, [None] * m, [()] * m, [None] * m, self.state.created))
            self.state.created += 1
        return slots

    def tournament(self) -> Individual:
        pop = self.state.population
        size = min(len(pop), max(2, round(self.cfg.search.tournament * len(pop))))
        sample = self.rng.sample(range(len(pop)), size)
        if self.objectives:  # the best Pareto front of the population, then the least crowded
            if self._places is None:  # once per batch: the population changes only in age()
                self._places = pareto.standing(pop)
            return pareto.winner(pop, sample, self._places)
        if self.rungs:  # compared at the highest rung both reached; the first of a tie wins
            return best_of(pop, sample)
        return pop[max(sample, key=lambda k: (pop[k].fitness.values[0], -sample.index(k)))]

    # --- promote (fidelity.rungs; gp_losses/fidelity.py) ------------------------------------
    def promote(self, capacity: int) -> List[Planned]:
        """The trainings of the losses promoted to a higher rung before this batch (at most
        `capacity`); none without rungs."""
        self._promoting = []
        if not self.rungs:
            return []
        fid, jobs = self.cfg.fidelity, []
        for ind, rung in choose(self.state.ladder, self.rungs, fid.promote, fid.seeds, capacity):
            seeds = tuple(promotion_seed(self.cfg.seed, ind.index, rung, k) for k in range(fid.seeds))
            self._promoting.append((ind, Promotion(rung, seeds)))
            jobs += [Planned(TrainJob(self.spec.key, ind.expr, seed, rung), ind) for seed in seeds]
        return jobs

    # --- vary + reject (section 3.2, Fig. 3; Eq. 5-6) -------------------------------------
    # Candidates are made and checked on the workers (gp_losses/sandboxed.py); here a slot
    # takes each branch's first candidate that passed, and books those rejected before it.
    def accept(self, slot: Slot, answers: List[Answer]) -> List[Rejected]:
        """Fill `slot` with each branch's accepted tree; the records of the rejected ones."""
        records = []
        for k, answer in enumerate(answers):
            branch = self.space.branches[k].name
            for checked in answer.rejected:
                self.state.counts[f"rejected_{checked.result.reason}"] += 1
                records.append(Rejected(checked.record or checked.with_record(branch).record))
            self.state.explored += len(answer.rejected) + 1
            accepted = answer.accepted
            slot.trees[k] = parse_tree(accepted.expr, self.space.psets[k])
            slot.fingerprints[k] = tuple(accepted.result.fingerprint)
            slot.made[k] = accepted.made
        return self._number(records)

    # --- dedupe (gradient equivalence, section 3.2) ---------------------------------------
    def dedupe(self, slot: Slot, batch: Batch) -> None:
        """The slot's child joins the batch. With a known (or pending) fingerprint it will
        reuse that score; else it is numbered and its training joins the batch's jobs."""
        exprs = {b.name: str(t) for b, t in zip(self.space.branches, slot.trees)}
        child = Individual(slot.trees, exprs, slot.fingerprints, slot.made,
                           slot.parent.index if slot.parent else None, slot.seeded)
        batch.children.append(child)
        fp = child.fingerprint if all(child.fingerprint) else None
        if self.cfg.search.equivalence and fp is not None and (fp in self.state.known or fp in batch.pending):
            return  # resolved in evaluate(), once the batch is scored
        child.eval = self.state.evaluations
        seed = evaluation_seed(self.cfg.seed, self.state.evaluations)
        self.state.evaluations += 1
        if fp is not None:
            batch.pending.add(fp)
        batch.jobs.append(Planned(TrainJob(self.spec.key, exprs, seed), child))

    # --- evaluate (proxy task, section 3.2) -----------------------------------------------
    def evaluate(self, batch: Batch) -> List[Dict[str, Any]]:
        """Book the batch's training results, resolve reuse, give every child its fitness.
        Only a training's deterministic outcome (ok, invalid) becomes known for reuse; a
        child whose equivalent in this batch failed is left `unscored`."""
        promoted: List[Training] = []  # the promotions' trainings, in the order of _promoting
        for j, planned in enumerate(batch.jobs):
            child, result = planned.child, batch.results[j]
            self.failures.add("training", None if result.reusable else result.error or result.status)
            if planned.job.rung:
                promoted.append(result)
                continue
            self.state.counts[result.status] += 1
            child.training = result
            child.status, child.score, child.metrics = result.status, result.score, result.metrics
            if all(child.fingerprint) and result.reusable:
                self.state.known.setdefault(child.fingerprint, Known(result.score, result.status,
                                                                     result.metrics, child.eval))
        records = []
        for child in batch.children:
            if child.eval is None:
                self._reuse(child)
            if not self.objectives:
                child.fitness.values = (FAILED if child.score is None else child.score,)
            else:
                child.fitness = pareto.fitness(self.objectives, None if child.score is None else child.metrics)
                if child.eval is not None and child.status == "ok":
                    self.state.scored_points.append((child.eval, tuple(child.fitness.values)))
            child.index = self.state.lines
            self.state.lines += 1
            records.append(child.record())
            if self.rungs:
                child.fitness = RungFitness((0, child.fitness.values[0]))
                if child.eval is not None and child.status == "ok":
                    self.state.ladder[0].append(child)
        booked = book(self._promoting, promoted, self.state, self.state.lines)
        self.state.lines += len(booked)
        self._promoting = []
        return records + booked

    def _reuse(self, child: Individual) -> None:
        """Give `child` the known result of its gradient-equivalent loss."""
        known = self.state.known.get(child.fingerprint)
        if known is None:  # its equivalent in this batch failed: nothing to reuse
            child.status, child.score, child.metrics = "unscored", None, {}
            child.error = "its gradient-equivalent loss in this batch failed; a failure is not reused"
        else:
            child.status, child.score, child.metrics, child.reused = "reused", known.score, known.metrics, known
        self.state.counts[child.status] += 1

    # --- age (section 3.2) ------------------------------------------------------------------
    def age(self, children: List[Individual]) -> None:
        """Append the new losses; only the most recent P are kept (aging). A child left
        unscored joins nothing."""
        pop = self.state.population
        pop.extend(c for c in children if c.status != "unscored")
        del pop[:max(0, len(pop) - self.cfg.search.population_max)]
        self._places = None
        if not self.rungs:
            self.state.hof.update([c for c in children if c.status == "ok"])
            return
        self.state.hof.clear()  # rungs: a promotion changes a loss's standing, so the hall is made again
        self.state.hof.update(hall_order(self.state.ladder[0]))

    # --- record -----------------------------------------------------------------------------
    def record(self, records: List[Dict[str, Any]], started: float) -> None:
        """Book the batch's seconds (with the bookkeeping of the batch before: this call's own
        is counted with the next), then write it all; stop a run whose trainings mostly fail."""
        booking = time.perf_counter()
        self.scheduler.book_batch(booking - started + self._unbooked)
        self._save_random_state()
        self.recorder.record(self.state, records)
        self._unbooked = time.perf_counter() - booking
        self.failures.check("training", min(self.cfg.search.failure_window, self.to_train))

    def _number(self, records: List[Rejected]) -> List[Rejected]:
        """Give each record its line number in evaluations.jsonl."""
        for record in records:
            record.index = self.state.lines
            self.state.lines += 1
        return records

    def _save_random_state(self) -> None:
        self.state.rng_state = self.rng.getstate()
        self.state.numpy_state = np.random.get_state()
        self.state.torch_state = torch.get_rng_state()

    def _restore_random_state(self) -> None:
        self.rng.setstate(self.state.rng_state)
        np.random.set_state(self.state.numpy_state)
        torch.set_rng_state(self.state.torch_state)
