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
batch's rejection and proxy work is spread over SCOOP workers, each a lane that gets its next
job as soon as it is free (gp_losses/parallel.py `Lanes`). Selection is made in this
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
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from gp_losses.config import to_dict
from gp_losses.context import Context
from gp_losses.core.errors import RunFailed, describe
from gp_losses.outcomes import REASONS, STATIC, TRANSIENT, FailureWatch, cacheable, reusable
from gp_losses.parallel import Lanes, candidates_job, train_job
from gp_losses.plot import write_progress
from gp_losses.population import FAILED, Individual, SearchState, Slot, make_statistics, scored
from gp_losses.rundir import RunDir
from gp_losses.sandbox import hard_limit
from gp_losses.streams import RANDOM, Stream, plan
from gp_losses.trees import parse_tree

log = logging.getLogger("gp_losses")
SECONDS = ("wall", "waiting", "rejection_lanes", "rejection_worker", "speculative", "ahead",
           "training_lanes", "training_worker", "idle")
"""What logbook.csv's seconds_* columns count (docs/engine.md), cumulative over the run."""
FILL_ROUNDS = 8
"""Most rounds of selection in one batch while offspring keep reusing known scores."""


def evaluation_seed(run_seed: int, index: int) -> int:
    """The seed of proxy evaluation `index`, derived from the run seed alone."""
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


class Batch:
    """One batch being made (Evolution.make_batch): the open round's slots and streams, and
    what the batch has so far — records, children, training jobs and their results."""

    def __init__(self, n: int) -> None:
        self.n = n
        """Offspring that need a training (fewer when they reuse known scores in every round)."""
        self.rounds = 0
        self.slots: List[Slot] = []
        """The open round's slots, in order."""
        self.cursor = 0
        """The open round's slots before this one are filled and deduped."""
        self.fresh: List[int] = []
        """The open round's random slots (positions in `slots`): the j-th takes the run's
        random stream's j-th pass from where the round started."""
        self.own: Dict[Tuple[int, int], Stream] = {}
        """(position, branch) -> the stream of an offspring slot's branch."""
        self.filled = False
        """No more rounds: every training the batch runs is in `jobs`."""
        self.records: List[Dict[str, Any]] = []
        self.children: List[Individual] = []
        self.jobs: List[Any] = []
        self.queued: Deque[int] = collections.deque()
        """Jobs not yet given to a lane."""
        self.pending: set = set()
        self.results: Dict[int, Dict[str, Any]] = {}

    @property
    def complete(self) -> bool:
        return self.filled and len(self.results) == len(self.jobs)


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
        self.branches = range(len(self.space.branches))
        self._random: Dict[int, Stream] = {}
        """Per branch, the run's random stream, with what workers checked ahead of its use."""
        self._ahead: set = set()
        """Branches whose random stream is being checked for later batches' random slots."""
        self._lanes: Optional[Lanes] = None
        self._learned: List[Tuple[int, str, Dict[str, Any], int]] = []
        """Protocol results not yet passed on to every lane: (branch, expr, result, lane)."""
        self._learned_base = 0
        """How many results were dropped from the front of _learned (every lane had them)."""
        self._sent: Dict[int, int] = {}
        """Per lane, how many results (counted from the run's first) it has been given."""
        self._busy = 0.0
        """Lane-seconds of the jobs answered since the last record()."""
        for key in SECONDS:  # every logbook row has every column
            self.state.seconds[key] += 0.0

    # --- the loop -----------------------------------------------------------------------
    def run(self) -> SearchState:
        total = self.cfg.search.evaluations
        try:
            with tqdm(total=total, initial=min(self.state.evaluations, total), desc="evaluations",
                      unit="eval", dynamic_ncols=True) as bar:
                while self.state.evaluations < total and not self.out_of_time():
                    start = time.perf_counter()
                    before = self.state.evaluations
                    batch = self.make_batch(min(self.batch_size, total - self.state.evaluations))
                    records = batch.records + self.evaluate(batch.children, batch.jobs, batch.results)
                    self.age(batch.children)
                    booking = time.perf_counter()
                    self.record(records, booking - start + self._unbooked)
                    self._unbooked = time.perf_counter() - booking
                    self.failures.check("training", min(self.cfg.search.failure_window, self.to_train))
                    bar.update(self.state.evaluations - before)
                    bar.set_postfix(best=f"{self._best():.4f}", explored=self.state.explored,
                                    rejected=self._rejected(), reused=self.state.counts["reused"])
        except BaseException:
            if self._lanes is not None:  # a failed run: the jobs still out are not waited for
                self._lanes.close()
                self._lanes = None
            raise
        self._finish_lanes()
        if self.state.evaluations < total:
            log.info("time budget search.max_seconds = %g s spent after %d evaluations",
                     self.cfg.search.max_seconds, self.state.evaluations)
        return self.state

    @property
    def lanes(self) -> Lanes:
        """The workers' lanes (gp_losses/parallel.py), opened on first use."""
        if self._lanes is None:
            self._lanes = Lanes()
        return self._lanes

    def _finish_lanes(self) -> None:
        """Wait for the jobs still out (work that later batches would have used) and close."""
        if self._lanes is None:
            return
        for lane, tag, result, seconds in self._lanes.drain():
            if tag[0] == "reject":
                self.state.seconds["speculative"] += sum(r[3]["seconds"] for part in result for r in part["results"])
        self._lanes.close()
        self._lanes = None

    def origin_seconds(self) -> float:
        """The wall time in which the origin was not waiting for a lane: selection, taking the
        workers' answers, dedupe, aging and the bookkeeping of each batch (records, logbook,
        hall of fame formulas, checkpoint, progress.png). What caps the speed-up from more
        workers (lanes may run jobs meanwhile)."""
        seconds = self.state.seconds
        return seconds["wall"] - seconds["waiting"]

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

    # --- one batch: select, vary + reject, dedupe, evaluate, with no barrier between them ---
    def make_batch(self, n: int) -> Batch:
        """Offspring until n of them need a proxy evaluation (or FILL_ROUNDS rounds of
        selection: an offspring that reuses a known score costs no training, so another one
        takes its place), and their trainings.

        No lane waits for the others: a free lane takes rejection work of the open slots,
        else a waiting training, else candidates of the run's random stream for later
        batches' random slots (`_dispatch`). What is found does not depend on it: slots are
        filled, deduped and numbered in their order, each once it and the slots before it
        are answered."""
        batch = Batch(n)
        self._open_round(batch)
        while True:
            self._take_answers(batch)
            if batch.complete:
                return batch
            self._dispatch(batch)
            for lane, tag, result, seconds in self.lanes.wait():
                self._handle(batch, lane, tag, result, seconds)

    def _open_round(self, batch: Batch) -> None:
        """Select the slots of the batch's next round; open their candidate streams."""
        search = self.cfg.search
        batch.rounds += 1
        batch.slots = self.select(batch.n - len(batch.jobs))
        batch.cursor = 0
        batch.fresh = [j for j, slot in enumerate(batch.slots) if slot.parent is None]
        batch.own = {(j, k): Stream(slot.number, k, str(slot.parent[k]), search.max_attempts)
                     for j, slot in enumerate(batch.slots) if slot.parent is not None
                     for k in self.branches}
        for k in self.branches if batch.fresh else ():
            pool = self._random.setdefault(k, Stream(RANDOM, k, None, 0))
            start = self.state.random_next.get(k, 0)
            pool.limit = start + search.max_attempts * len(batch.fresh)
            pool.restart(start, len(batch.fresh))
            self._ahead.discard(k)

    def _take_answers(self, batch: Batch) -> None:
        """Fill, in order, every slot whose branches are all answered (and all slots before
        it): its rejected candidates are recorded, its offspring deduped and, when it needs
        a training, queued. Then open the next round if the batch wants more."""
        while True:
            while batch.cursor < len(batch.slots):
                j = batch.cursor
                slot = batch.slots[j]
                nth = batch.fresh.index(j) if slot.parent is None else 0
                answers = [self._random[k].answer(nth) if slot.parent is None else batch.own[(j, k)].answer(0)
                           for k in self.branches]
                if any(a is None for a in answers):
                    return
                records = []
                for k, (rejected, (_, expr, origin, result)) in zip(self.branches, answers):
                    for _, expr_r, origin_r, result_r in rejected:
                        self.state.counts[f"rejected_{result_r['reason']}"] += 1
                        records.append(self._candidate_record(k, expr_r, origin_r, result_r))
                    self.state.explored += len(rejected) + 1
                    slot.trees[k] = parse_tree(expr, self.space.psets[k])
                    slot.fingerprints[k] = tuple(result["fingerprint"])
                    slot.origin[k] = origin
                    if slot.parent is None and nth == len(batch.fresh) - 1:  # the round's last random slot
                        self.state.random_next[k] = self._random[k].passes[nth] + 1
                batch.records += self._number(records)
                batch.cursor += 1
                before = len(batch.jobs)
                batch.children += self.dedupe([slot], batch.jobs, batch.pending)
                batch.queued.extend(range(before, len(batch.jobs)))
            for stream in batch.own.values():  # the round is over: what its lanes still check is waste
                self._close(stream)
            if len(batch.jobs) >= batch.n or batch.rounds >= FILL_ROUNDS:
                batch.filled = True
                return
            self._open_round(batch)

    def _close(self, stream: Stream) -> None:
        if not stream.closed:
            stream.closed = True
            self.state.seconds["speculative"] += sum(r[3]["seconds"] for r in stream.speculative())

    def _dispatch(self, batch: Batch) -> None:
        """Give every free lane a job: rejection work of the round's open slots first (the
        batch ends soonest when its last slot is known soonest, and all its trainings then
        run side by side), then a waiting training, then candidates of the run's random
        stream for the random slots of later batches."""
        search = self.cfg.search
        lanes = self.lanes
        if not lanes.free:
            return
        streams = [s for s in batch.own.values() if not s.closed]
        streams += [self._random[k] for k in self.branches if batch.fresh and k not in self._ahead]
        for lane, job in zip(list(lanes.free), plan(streams, len(lanes.free), search.chunk, search.round_s)):
            self._start_candidates(lane, job, False)
        for lane in list(lanes.free):
            if not batch.queued:
                break
            j = batch.queued.popleft()
            lanes.start(lane, train_job, batch.jobs[j][0], ("train", j),
                        hard_limit(self.cfg.proxy.timeout_s))
        if lanes.free:
            ahead = self._ahead_streams(batch)
            for lane, job in zip(list(lanes.free), plan(ahead, len(lanes.free), search.chunk, search.round_s)):
                self._start_candidates(lane, job, True)

    def _start_candidates(self, lane: int, job: List[Tuple[Stream, int, int]], ahead: bool) -> None:
        search = self.cfg.search
        items = [(s.slot, s.branch, s.parent, lo, hi, s.first_only) for s, lo, hi in job]
        self.lanes.start(lane, candidates_job, (self.spec, items, search.round_s, self._known_for(lane)),
                         ("reject", job, ahead), hard_limit(search.round_s + self.cfg.protocol.timeout_s))

    def _ahead_streams(self, batch: Batch) -> List[Stream]:
        """The random stream of each branch that the open round no longer needs, restarted for
        the random slots still to come in the run (none when no more are coming)."""
        search = self.cfg.search
        coming = min(search.population_init - self.state.created,
                     search.evaluations - self.state.evaluations - (batch.n - len(batch.jobs)))
        if coming <= 0:
            return []
        out = []
        for k in self.branches:
            if batch.fresh and batch.cursor <= batch.fresh[-1]:
                continue  # the round still takes passes from it
            pool = self._random.setdefault(k, Stream(RANDOM, k, None, 0))
            if k not in self._ahead or pool.wanted != coming:
                start = self.state.random_next.get(k, 0)
                pool.limit = start + search.max_attempts * coming
                pool.restart(start, coming)
                self._ahead.add(k)
            out.append(pool)
        return out

    def _known_for(self, lane: int) -> List[Tuple[int, str, Dict[str, Any]]]:
        """Protocol results other lanes found since this lane's last job, for its cache: each
        worker keeps its own, and without them two workers would run the same candidate."""
        sent = self._sent.get(lane, self._learned_base)
        known = [(k, expr, result) for k, expr, result, where in self._learned[sent - self._learned_base:]
                 if where != lane]
        self._sent[lane] = self._learned_base + len(self._learned)
        done = min(self._sent.get(w, self._learned_base) for w in range(self.lanes.width))
        del self._learned[:done - self._learned_base]  # every lane has had these
        self._learned_base = done
        return known

    def _handle(self, batch: Batch, lane: int, tag: Tuple[Any, ...], answer: Any, seconds: float) -> None:
        """Take a finished job's answer: a training's result, or candidates checked."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("lane %d: %s job answered after %.3f s%s", lane, tag[0], seconds,
                      " (ahead)" if tag[0] == "reject" and tag[2] else "")
        if tag[0] == "train":
            batch.results[tag[1]] = answer
            self.state.seconds["training_lanes"] += seconds
            self._busy += seconds
            return
        _, job, ahead = tag
        self.state.seconds["rejection_lanes"] += seconds
        self._busy += seconds
        for (stream, lo, hi), part in zip(job, answer):
            stream.absorb(lo, hi, part["end"], part["results"], part["seconds"])
            for _, expr, _, result in part["results"]:
                self.state.seconds["rejection_worker"] += result["seconds"]
                if ahead:
                    self.state.seconds["ahead"] += result["seconds"]
                if stream.closed:
                    self.state.seconds["speculative"] += result["seconds"]
                if result.get("cached") or result["reason"] in STATIC:
                    continue  # no protocol run
                if cacheable(result):
                    self._learned.append((stream.branch, expr, result, lane))
                failed = not result["passed"] and result["reason"] in TRANSIENT
                self.failures.add("protocol", result["error"] or result["reason"] if failed else None)
        self.failures.check("protocol", self.cfg.search.failure_window)
        for stream in list(batch.own.values()) + [self._random[k] for k in self.branches if batch.fresh]:
            if stream.exhausted and not stream.closed and (stream.slot != RANDOM or stream.branch not in self._ahead):
                raise RunFailed(
                    f"no candidate passed the loss-rejection protocol in {stream.prefix - stream.start} "
                    f"attempts for {stream.wanted} offspring (rejected: {self._reasons(stream)}); "
                    "check the task's probe metric, or lower protocol.eta")

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

    def evaluate(self, children: List[Individual], jobs: List[Any],
                 results: Optional[Dict[int, Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
        """Book the jobs' training results (trained here when not given), resolve reuse, give
        every child its fitness. Only a training's deterministic outcome (ok, invalid) becomes
        known for reuse; a child whose equivalent in this batch failed is left `unscored`."""
        if results is None:
            batch = Batch(len(jobs))
            batch.jobs, batch.queued, batch.filled = jobs, collections.deque(range(len(jobs))), True
            while not batch.complete:
                self._dispatch(batch)
                for lane, tag, result, seconds in self.lanes.wait():
                    self._handle(batch, lane, tag, result, seconds)
            results = batch.results
        for j, (_, child) in enumerate(jobs):
            result = results[j]
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
        state.seconds["idle"] += self.lanes.width * seconds - self._busy
        state.seconds["waiting"] += self.lanes.blocked
        self._busy = self.lanes.blocked = 0.0
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
