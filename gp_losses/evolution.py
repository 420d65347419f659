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

Offspring are produced in batches of `search.batch` slots (default: one per worker). Each
batch's rejection and proxy work is spread over SCOOP workers. Selection is made in this
process, in a fixed order; each slot's candidates come from generators seeded by the slot's
number (gp_losses/streams.py), so workers can make and check them in any order. A seed and a
batch size fix the result with or without SCOOP and with any number of workers, and a resumed
run continues exactly where the checkpoint left it (the batch size is part of the checkpoint).

Only facts about a loss are remembered: the workers' protocol caches and the fingerprint ->
score table take deterministic outcomes; a timeout, an error or a process that died is recorded and an
equivalent loss met later is evaluated afresh. When most recent jobs fail
(`search.max_failed_share`), the run stops with the most frequent error.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from gp_losses.config import to_dict
from gp_losses.context import Context
from gp_losses.errors import RunFailed, describe
from gp_losses.outcomes import REASONS, STATIC, TRANSIENT, FailureWatch, reusable
from gp_losses.parallel import candidates_job, parallel_map, train_job, worker_count
from gp_losses.plot import write_progress
from gp_losses.population import FAILED, Individual, SearchState, Slot, make_statistics, scored
from gp_losses.rundir import RunDir
from gp_losses.sandbox import hard_limit
from gp_losses.streams import RANDOM, Stream, plan
from gp_losses.trees import parse_tree

log = logging.getLogger("gp_losses")
FILL_ROUNDS = 8
"""Most select-reject-dedupe rounds in one batch while offspring keep reusing known scores."""


def evaluation_seed(run_seed: int, index: int) -> int:
    """The seed of proxy evaluation `index`, derived from the run seed alone."""
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


class Evolution:
    """One search: `run()` drives the loop; each step below is one of Fig. 1's boxes."""

    def __init__(self, context: Context, rundir: RunDir, workers: int = 1,
                 state: Optional[SearchState] = None, run_id: str = "local") -> None:
        self.ctx = context
        self.cfg = context.config
        self.space = context.space
        self.rundir = rundir
        self.spec = {"config": to_dict(self.cfg), "run_id": run_id}
        self.rng = random.Random(self.cfg.seed)
        self.state = state or SearchState()
        if state is not None:
            self._restore_random_state()
        self.batch_size = self.state.batch_size = self.state.batch_size or self.cfg.search.batch or workers
        self.failures = FailureWatch(self.cfg.search.failure_window, self.cfg.search.max_failed_share)
        """Recent job outcomes in this process (a resumed run starts afresh)."""
        self._unbooked = 0.0
        """Seconds of the last batch's bookkeeping (record()), counted with the next batch."""
        self._drawing: Optional[float] = 0.0
        """Seconds spent drawing progress.png in this process (None after a failed drawing)."""
        self.to_train = self.cfg.search.evaluations - self.state.evaluations
        """Proxy evaluations this process has to run: a shorter run is judged on all of them."""
        self._random: Dict[int, Stream] = {}
        """Per branch, the run's random stream, with what workers checked ahead of its use."""

    # --- the loop -----------------------------------------------------------------------
    def run(self) -> SearchState:
        total = self.cfg.search.evaluations
        with tqdm(total=total, initial=min(self.state.evaluations, total), desc="evaluations",
                  unit="eval", dynamic_ncols=True) as bar:
            while self.state.evaluations < total and not self.out_of_time():
                start = time.perf_counter()
                before = self.state.evaluations
                n = min(self.batch_size, total - self.state.evaluations)
                records, children, jobs = self.fill(n)
                eval_records = self.evaluate(children, jobs)
                self.age(children)
                booking = time.perf_counter()
                self.record(records + eval_records, booking - start + self._unbooked)
                self._unbooked = time.perf_counter() - booking
                self.failures.check("training", min(self.cfg.search.failure_window, self.to_train))
                bar.update(self.state.evaluations - before)
                bar.set_postfix(best=f"{self._best():.4f}", explored=self.state.explored,
                                rejected=self._rejected(), reused=self.state.counts["reused"])
        if self.state.evaluations < total:
            log.info("time budget search.max_seconds = %g s spent after %d evaluations",
                     self.cfg.search.max_seconds, self.state.evaluations)
        return self.state

    def origin_seconds(self) -> float:
        """The wall time that no worker shares: selection, variation, static checks, the
        protocol cache, dedupe, aging and the bookkeeping of each batch (records, logbook, hall
        of fame formulas, checkpoint, progress.png) — everything but waiting on the maps of
        rejection and training jobs. What caps the speed-up from more workers."""
        seconds = self.state.seconds
        return seconds["wall"] - seconds["rejection_map"] - seconds["training_wall"]

    def out_of_time(self) -> bool:
        """Whether the run's wall time (over resumes) reached `search.max_seconds` (0: never)."""
        budget = self.cfg.search.max_seconds
        return budget > 0 and self.state.seconds["wall"] >= budget

    # --- select (tournament, section 3.2) -------------------------------------------------
    def select(self, n: int) -> List[Slot]:
        """n slots; while fewer than K losses exist they are random (init) slots, else each
        has a parent: the best of a random T% sample of the population (at least 2)."""
        slots = []
        for _ in range(n):
            parent = None
            if self.state.created >= self.cfg.search.population_init and self.state.population:
                parent = self.tournament()
            m = len(self.space.branches)
            slots.append(Slot(parent, [None] * m, [()] * m, [{} for _ in range(m)], self.state.created))
            self.state.created += 1
        return slots

    def tournament(self) -> Individual:
        pop = self.state.population
        size = min(len(pop), max(2, round(self.cfg.search.tournament * len(pop))))
        sample = self.rng.sample(range(len(pop)), size)
        return pop[max(sample, key=lambda k: (pop[k].fitness.values[0], -sample.index(k)))]

    # --- vary + reject (loss-rejection protocol, Eq. 5-6) ---------------------------------
    def reject(self, slots: List[Slot]) -> List[Dict[str, Any]]:
        """Fill every slot's branches with its stream's first candidate that passes (with
        rejection off, candidate 0); the random slots share a stream per branch and take its
        passes in order. Workers make and check the candidates (gp_losses/streams.py); the
        answer does not depend on how many. Returns the explored-candidate records."""
        search = self.cfg.search
        branches = range(len(self.space.branches))
        fresh = [slot for slot in slots if slot.parent is None]
        pools = {}
        for k in branches if fresh else ():
            pool = self._random.setdefault(k, Stream(RANDOM, k, None, 0))
            start = self.state.random_next.get(k, 0)
            pool.limit = start + search.max_attempts * len(fresh)
            pool.restart(start, len(fresh))
            pools[k] = pool
        own = {(id(slot), k): Stream(slot.number, k, str(slot.parent[k]), search.max_attempts)
               for slot in slots if slot.parent is not None for k in branches}
        streams = list(pools.values()) + list(own.values())
        start = time.perf_counter()
        limit = hard_limit(search.round_s + self.cfg.protocol.timeout_s)
        while True:
            jobs = plan(streams, worker_count(), search.chunk, search.round_s)
            if not jobs:
                break
            mapped = time.perf_counter()
            answers = parallel_map(candidates_job, [
                (self.spec, [(s.slot, s.branch, s.parent, lo, hi, s.first_only) for s, lo, hi in job],
                 search.round_s) for job in jobs], item_limit_s=limit)
            waited = time.perf_counter() - mapped
            self.state.seconds["rejection_map"] += waited
            if log.isEnabledFor(logging.DEBUG):  # per-round detail, only when asked for (-v)
                log.debug("rejection round: %.3f s; per job candidates %s, protocol seconds %s", waited,
                          [sum(len(p["results"]) for p in a) for a in answers],
                          [round(sum(r[3]["seconds"] for p in a for r in p["results"]), 3) for a in answers])
            for job, answer in zip(jobs, answers):
                for (stream, lo, hi), part in zip(job, answer):
                    stream.absorb(lo, hi, part["end"], part["results"], part["seconds"])
                    for _, _, _, result in part["results"]:
                        self.state.seconds["rejection_worker"] += result["seconds"]
                        if result.get("cached") or result["reason"] in STATIC:
                            continue  # no protocol run
                        failed = not result["passed"] and result["reason"] in TRANSIENT
                        self.failures.add("protocol", result["error"] or result["reason"] if failed else None)
            self.failures.check("protocol", search.failure_window)
            for stream in streams:
                if stream.exhausted:
                    raise RunFailed(
                        f"no candidate passed the loss-rejection protocol in {stream.prefix - stream.start} "
                        f"attempts for {stream.wanted} offspring (rejected: {self._reasons(stream)}); "
                        "check the task's probe metric, or lower protocol.eta")
        self.state.seconds["rejection_wall"] += time.perf_counter() - start
        shares = {k: iter(pool.answers()) for k, pool in pools.items()}
        for k, pool in pools.items():
            self.state.random_next[k] = pool.last + 1
        records: List[Dict[str, Any]] = []
        for slot in slots:
            for k in branches:
                if slot.parent is None:
                    rejected, (_, expr, origin, result) = next(shares[k])
                else:
                    ((rejected, (_, expr, origin, result)),) = own[(id(slot), k)].answers()
                for _, expr_r, origin_r, result_r in rejected:
                    self.state.counts[f"rejected_{result_r['reason']}"] += 1
                    records.append(self._candidate_record(k, expr_r, origin_r, result_r))
                self.state.explored += len(rejected) + 1
                slot.trees[k] = parse_tree(expr, self.space.psets[k])
                slot.fingerprints[k] = tuple(result["fingerprint"])
                slot.origin[k] = origin
        self.state.seconds["speculative"] += sum(r[3]["seconds"] for s in own.values() for r in s.speculative())
        return records

    @staticmethod
    def _reasons(stream: Stream) -> str:
        counts = collections.Counter(r[3]["reason"] for r in stream.done.values())
        return ", ".join(f"{reason} {counts[reason]}" for reason in REASONS if counts[reason])

    def _candidate_record(self, k: int, expr: str, origin: Dict[str, Any],
                          result: Dict[str, Any]) -> Dict[str, Any]:
        record = {"index": None, "branch": self.space.branches[k].name, "expr": expr,
                  "status": "rejected", "reason": result["reason"], "gain": result["gain"],
                  "protocol_steps": result["steps"], "seconds": round(result["seconds"], 6),
                  "op": origin["op"], "mutations": origin["steps"]}
        if result.get("error"):
            record["error"] = result["error"]
        return record

    # --- one batch: select, reject, dedupe until `n` losses need training --------------------
    def fill(self, n: int) -> Tuple[List[Dict[str, Any]], List[Individual], List[Any]]:
        """Offspring until n of them need a proxy evaluation (or FILL_ROUNDS rounds): an
        offspring that reuses a known score costs no training, so another one takes its
        worker. Returns the explored-candidate records, the children, the training jobs."""
        records: List[Dict[str, Any]] = []
        children: List[Individual] = []
        jobs: List[Any] = []
        pending: set = set()
        for _ in range(FILL_ROUNDS):
            slots = self.select(n - len(jobs))
            records += self._number(self.reject(slots))
            children += self.dedupe(slots, jobs, pending)
            if len(jobs) >= n:
                break
        return records, children, jobs

    # --- dedupe (gradient equivalence) + evaluate (proxy task) -----------------------------
    def dedupe(self, slots: List[Slot], jobs: List[Any], pending: set) -> List[Individual]:
        """Children of the slots; those with a known (or pending) fingerprint will reuse its
        score, the others are numbered and appended to `jobs` for training."""
        children = []
        for slot in slots:
            exprs = {b.name: str(t) for b, t in zip(self.space.branches, slot.trees)}
            fp = tuple(slot.fingerprints) if all(slot.fingerprints) else None
            child = Individual(slot.trees, {
                "expr": exprs, "fingerprint": [list(f) for f in slot.fingerprints], "origin": slot.origin,
                "parent": slot.parent.info["index"] if slot.parent else None})
            children.append(child)
            if self.cfg.search.equivalence and fp is not None and (fp in self.state.known or fp in pending):
                child.info["reuse_of"] = fp  # resolved in evaluate(), once the batch is scored
                continue
            child.info["eval"] = self.state.evaluations
            seed = evaluation_seed(self.cfg.seed, self.state.evaluations)
            self.state.evaluations += 1
            if fp is not None:
                pending.add(fp)
            jobs.append(((self.spec, exprs, seed), child))
        return children

    def evaluate(self, children: List[Individual], jobs: List[Any]) -> List[Dict[str, Any]]:
        """Train the jobs' losses, spread over workers; resolve reuse; give every child its
        fitness. Only a training's deterministic outcome (ok, invalid) becomes known for
        reuse; a child whose equivalent in this batch failed is left `unscored`."""
        start = time.perf_counter()
        results = parallel_map(train_job, [job for job, _ in jobs],
                               item_limit_s=hard_limit(self.cfg.proxy.timeout_s))
        self.state.seconds["training_wall"] += time.perf_counter() - start
        for (_, child), result in zip(jobs, results):
            self.state.seconds["training_worker"] += result["seconds"]
            self.state.counts[result["status"]] += 1
            self.failures.add("training", None if reusable(result) else result["error"] or result["status"])
            child.info.update(result)
            fp = tuple(tuple(f) for f in child.info["fingerprint"])
            if all(fp) and reusable(result):
                self.state.known.setdefault(fp, {"score": result["score"], "status": result["status"],
                                                 "metrics": result["metrics"], "eval": child.info["eval"]})
        records = []
        for child in children:
            if "reuse_of" in child.info:
                self._reuse(child, child.info.pop("reuse_of"))
            score = child.info["score"]
            child.fitness.values = (FAILED if score is None else score,)
            child.info["index"] = self.state.lines
            self.state.lines += 1
            records.append(self._loss_record(child))
        return records

    def _reuse(self, child: Individual, fp: Any) -> None:
        """Give `child` the known result of its gradient-equivalent loss (section 3.2)."""
        known = self.state.known.get(fp)
        if known is None:  # its equivalent in this batch failed: nothing to reuse
            child.info.update(status="unscored", score=None, metrics={}, seconds=0.0,
                              error="its gradient-equivalent loss in this batch failed; a failure "
                                    "is not reused")
            self.state.counts["unscored"] += 1
            return
        child.info.update(status="reused", score=known["score"], metrics=known["metrics"],
                          reused_eval=known["eval"], reused_status=known["status"], seconds=0.0)
        self.state.counts["reused"] += 1

    def _loss_record(self, child: Individual) -> Dict[str, Any]:
        keys = ("index", "eval", "expr", "status", "score", "metrics", "fingerprint", "iterations",
                "seconds", "worker", "device", "error", "origin", "parent", "reused_eval", "reused_status")
        record = {k: child.info.get(k) for k in keys if k in child.info}
        if "seconds" in record:
            record["seconds"] = round(record["seconds"], 4)
        return record

    # --- age + record ---------------------------------------------------------------------
    def age(self, children: List[Individual]) -> None:
        """Append the new losses; only the most recent P are kept (aging, section 3.2). A
        child left unscored joins nothing."""
        pop = self.state.population
        pop.extend(c for c in children if c.info["status"] != "unscored")
        del pop[:max(0, len(pop) - self.cfg.search.population_max)]
        self.state.hof.update([c for c in children if c.info["status"] == "ok"])

    def record(self, records: List[Dict[str, Any]], seconds: float) -> None:
        """Statistics + Logbook row, evaluations.jsonl, hall_of_fame.json, checkpoint. `seconds`:
        the batch's wall time, with the bookkeeping of the batch before (this call's own time is
        counted with the next batch)."""
        state = self.state
        state.batches += 1
        state.seconds["wall"] += seconds
        for record in records:
            record["batch"] = state.batches
        row = {"batch": state.batches, "evaluations": state.evaluations, "explored": state.explored,
               "reused": state.counts["reused"], "rejected": self._rejected(),
               **{f"rejected_{r}": state.counts[f"rejected_{r}"] for r in REASONS},
               **{s: state.counts[s] for s in ("invalid", "error", "timeout", "unscored")},
               "best": self._best(), **make_statistics().compile(scored(state.population)),
               **{f"seconds_{k}": round(v, 3) for k, v in sorted(state.seconds.items())},
               "seconds_origin": round(self.origin_seconds(), 3)}
        state.logbook.record(**row)
        state.jsonl_size = self.rundir.append_evaluations(records)
        self.rundir.write_logbook(state.logbook)
        self.rundir.write_json("hall_of_fame.json", self.hall_of_fame())
        self._save_random_state()
        self.rundir.save_checkpoint(state)
        self.rundir.write_status("running", evaluations=state.evaluations, best=self._best(),
                                 explored=state.explored)
        self.draw()
        log.debug("batch %d: %s", state.batches, row)

    def draw(self, final: bool = False) -> None:
        """Redraw progress.png: after every batch while drawing takes under 5% of the
        search's wall time so far, otherwise less often, and always at the end (`final`)."""
        if not self.cfg.search.plot or self._drawing is None:
            return
        wall = self.state.seconds["wall"]
        if not final and self._drawing > 0.05 * wall:
            return
        start = time.perf_counter()
        try:
            write_progress(self.rundir.path, list(self.state.logbook), self.ctx.config.name)
        except Exception as exc:  # a picture that cannot be drawn never stops a search
            log.warning("progress.png not drawn, and no more in this run: %s", describe(exc))
            self._drawing = None
            return
        self._drawing += time.perf_counter() - start

    def hall_of_fame(self) -> List[Dict[str, Any]]:
        out = []
        for rank, ind in enumerate(self.state.hof, 1):
            if "formula" not in ind.info:  # simplified once per hall-of-fame entry: sympy is slow
                ind.info["formula"] = {name: str(expr) for name, expr in self.space.formulas(ind).items()}
            out.append({"rank": rank, "score": ind.fitness.values[0], "expr": ind.info["expr"],
                        "formula": ind.info["formula"], "metrics": ind.info.get("metrics", {}),
                        "index": ind.info["index"], "eval": ind.info.get("eval", ind.info.get("reused_eval"))})
        return out

    # --- helpers ----------------------------------------------------------------------------
    def _number(self, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Give each record its line number in evaluations.jsonl."""
        for record in records:
            record["index"] = self.state.lines
            self.state.lines += 1
        return records

    def _best(self) -> float:
        return self.state.hof[0].fitness.values[0] if len(self.state.hof) else float("nan")

    def _rejected(self) -> int:
        return sum(self.state.counts[f"rejected_{r}"] for r in REASONS)

    def _save_random_state(self) -> None:
        self.state.rng_state = self.rng.getstate()
        self.state.numpy_state = np.random.get_state()
        self.state.torch_state = torch.get_rng_state()

    def _restore_random_state(self) -> None:
        self.rng.setstate(self.state.rng_state)
        np.random.set_state(self.state.numpy_state)
        torch.set_rng_state(self.state.torch_state)
