"""How a batch's work is spread over the workers, with no barrier between its steps.

A batch (gp_losses/evolution.py) needs offspring, each branch's candidates checked until one
passes (gp_losses/streams.py), the offspring deduped and the rest trained. Here that work is
given to the workers (gp_losses/workers.py) as they come free, in this order: rejection work
of the open slots first (the batch ends soonest when its last slot is known soonest, and all
its trainings then run side by side), then a waiting training, then candidates of the run's
random stream for the random slots of later batches. What is found does not depend on it:
slots are filled, deduped and numbered in their order, each once it and the slots before it
are answered; the algorithm's own steps (select, accept, dedupe) are called back in that order.

Each worker's sandbox keeps a protocol cache; the results other workers found since its last
job go with its next one (`Fact`s), so that no two workers run the same candidate. Only
deterministic outcomes are passed on. The seconds the jobs took are booked in the run's
`seconds` (logbook.csv's seconds_* columns, docs/engine.md).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, NamedTuple, Optional, Sequence, Tuple

from gp_losses.core.errors import RunFailed
from gp_losses.jobs import check_job, train_job
from gp_losses.messages import CheckJob, Fact, Range, TrainJob
from gp_losses.outcomes import REASONS, STATIC, FailureWatch, Training
from gp_losses.population import Individual, SearchState, Slot
from gp_losses.sandbox import hard_limit
from gp_losses.streams import RANDOM, Answer, Stream, plan
from gp_losses.workers import Done, Workers

log = logging.getLogger("gp_losses")
SECONDS = ("wall", "waiting", "rejection_jobs", "rejection_sandbox", "speculative", "ahead",
           "training_jobs", "training_sandbox", "idle")
"""What logbook.csv's seconds_* columns count (docs/engine.md), cumulative over the run."""
FILL_ROUNDS = 8
"""Most rounds of selection in one batch while offspring keep reusing known scores."""


@dataclass(frozen=True)
class CheckTag:
    """The tag of a rejection job: its ranges, as (stream, lo, hi), and whether it checks the
    random stream ahead, for later batches."""

    parts: Tuple[Tuple[Stream, int, int], ...]
    ahead: bool


@dataclass(frozen=True)
class TrainTag:
    """The tag of a training job: its place in the batch's jobs."""

    job: int


class Planned(NamedTuple):
    """A training the batch runs: its job, and the offspring whose fitness it gives (or, for
    a promotion, the loss it trains at a higher rung)."""

    job: TrainJob
    child: Individual


@dataclass
class Batch:
    """One batch being made: the open round's slots and streams, and what the batch has so far
    — records, children, training jobs and their results."""

    n: int
    """Trainings the batch runs: promotions to a higher fidelity rung, then offspring that need
    one (fewer when they reuse known scores in every round)."""
    rounds: int = 0
    slots: List[Slot] = field(default_factory=list)
    """The open round's slots, in order."""
    cursor: int = 0
    """The open round's slots before this one are filled and deduped."""
    fresh: List[int] = field(default_factory=list)
    """The open round's random slots (positions in `slots`): the j-th takes the run's random
    stream's j-th pass from where the round started."""
    own: Dict[Tuple[int, int], Stream] = field(default_factory=dict)
    """(position, branch) -> the stream of an offspring slot's branch."""
    filled: bool = False
    """No more rounds: every training the batch runs is in `jobs`."""
    records: List[Dict[str, Any]] = field(default_factory=list)
    children: List[Individual] = field(default_factory=list)
    jobs: List[Planned] = field(default_factory=list)
    queued: Deque[int] = field(default_factory=collections.deque)
    """Jobs not yet given to a worker."""
    pending: set = field(default_factory=set)
    """Fingerprints of the batch's losses in training."""
    results: Dict[int, Training] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.filled and len(self.results) == len(self.jobs)


class Scheduler:
    """Makes the batches of one search on its workers. `algorithm` provides the steps of
    Fig. 1 that decide what is searched: select(n), accept(slot, answers), dedupe(slot,
    batch)."""

    def __init__(self, algorithm: Any, state: SearchState, run: str, failures: FailureWatch) -> None:
        self.algorithm = algorithm
        self.cfg = algorithm.cfg
        self.state = state
        self.run = run
        """The key of the run's spec, which every job names."""
        self.failures = failures
        self.branches = range(len(algorithm.space.branches))
        self._workers: Optional[Workers] = None
        self._random: Dict[int, Stream] = {}
        """Per branch, the run's random stream, with what workers checked ahead of its use."""
        self._ahead: set = set()
        """Branches whose random stream is being checked for later batches' random slots."""
        self._learned: List[Tuple[Fact, int]] = []
        """Protocol results not yet passed on to every worker: (fact, the worker that found it)."""
        self._learned_base = 0
        """How many results were dropped from the front of _learned (every worker had them)."""
        self._sent: Dict[int, int] = {}
        """Per worker, how many results (counted from the run's first) it has been given."""
        self.busy = 0.0
        """Worker-seconds of the jobs answered since the last book_batch()."""
        for key in SECONDS:  # every logbook row has every column
            self.state.seconds[key] += 0.0

    @property
    def workers(self) -> Workers:
        """The search's workers, opened on first use."""
        if self._workers is None:
            self._workers = Workers()
        return self._workers

    # --- a batch ---------------------------------------------------------------------------
    def batch(self, n: int, first: Sequence[Planned] = ()) -> Batch:
        """Offspring until n of them need a proxy evaluation (or FILL_ROUNDS rounds of
        selection: an offspring that reuses a known score costs no training, so another one
        takes its place), and their trainings' results; the trainings `first` (promotions to
        a higher fidelity rung) are the batch's first jobs."""
        batch = Batch(n + len(first), jobs=list(first), queued=collections.deque(range(len(first))))
        self._open_round(batch)
        return self._drive(batch)

    def trainings(self, children: List[Individual], jobs: List[Planned]) -> Batch:
        """A batch of given children and training jobs, run to its end."""
        batch = Batch(len(jobs), children=children, jobs=jobs, filled=True,
                      queued=collections.deque(range(len(jobs))))
        return self._drive(batch)

    def _drive(self, batch: Batch) -> Batch:
        while True:
            self._take_answers(batch)
            if batch.complete:
                return batch
            self._dispatch(batch)
            for done in self.workers.wait():
                self._handle(batch, done)

    def _open_round(self, batch: Batch) -> None:
        """Select the slots of the batch's next round; open their candidate streams."""
        search = self.cfg.search
        batch.rounds += 1
        batch.slots = self.algorithm.select(batch.n - len(batch.jobs))
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
        it): the algorithm accepts and dedupes it. Then open the next round if the batch
        wants more."""
        while True:
            while batch.cursor < len(batch.slots):
                answers = self._answers(batch, batch.cursor)
                if answers is None:
                    return
                slot = batch.slots[batch.cursor]
                batch.records += self.algorithm.accept(slot, answers)
                batch.cursor += 1
                before = len(batch.jobs)
                self.algorithm.dedupe(slot, batch)
                batch.queued.extend(range(before, len(batch.jobs)))
            for stream in batch.own.values():  # the round is over: what its workers still check is waste
                self._close(stream)
            if len(batch.jobs) >= batch.n or batch.rounds >= FILL_ROUNDS:
                batch.filled = True
                return
            self._open_round(batch)

    def _answers(self, batch: Batch, j: int) -> Optional[List[Answer]]:
        """Slot j's answer on every branch, once all are known; the run's random stream moves
        on past the round's last random slot."""
        slot = batch.slots[j]
        if slot.parent is not None:
            answers = [batch.own[(j, k)].answer(0) for k in self.branches]
            return None if None in answers else answers
        nth = batch.fresh.index(j)
        answers = [self._random[k].answer(nth) for k in self.branches]
        if None in answers:
            return None
        if nth == len(batch.fresh) - 1:
            for k in self.branches:
                self.state.random_next[k] = self._random[k].passes[nth] + 1
        return answers

    def _close(self, stream: Stream) -> None:
        if not stream.closed:
            stream.closed = True
            self.state.seconds["speculative"] += sum(c.result.seconds for c in stream.speculative())

    # --- giving workers jobs ----------------------------------------------------------------
    def _dispatch(self, batch: Batch) -> None:
        """Give every free worker a job: rejection work of the round's open slots first, then
        a waiting training, then candidates of the run's random stream for later batches."""
        search = self.cfg.search
        workers = self.workers
        if not workers.free:
            return
        streams = [s for s in batch.own.values() if not s.closed]
        streams += [self._random[k] for k in self.branches if batch.fresh and k not in self._ahead]
        for worker, parts in zip(list(workers.free), plan(streams, len(workers.free), search.chunk, search.round_s)):
            self._start_check(worker, parts, False)
        for worker in list(workers.free):
            if not batch.queued:
                break
            j = batch.queued.popleft()
            job = batch.jobs[j].job
            workers.start(worker, train_job, job, TrainTag(j),
                          hard_limit(self.cfg.fidelity.timeout_s if job.rung else self.cfg.proxy.timeout_s))
        if workers.free:
            ahead = self._ahead_streams(batch)
            for worker, parts in zip(list(workers.free), plan(ahead, len(workers.free), search.chunk, search.round_s)):
                self._start_check(worker, parts, True)

    def _start_check(self, worker: int, parts: List[Tuple[Stream, int, int]], ahead: bool) -> None:
        search = self.cfg.search
        ranges = tuple(Range(s.slot, s.branch, s.parent, lo, hi, s.first_only) for s, lo, hi in parts)
        job = CheckJob(self.run, ranges, search.round_s, self._known_for(worker))
        self.workers.start(worker, check_job, job, CheckTag(tuple(parts), ahead),
                           hard_limit(search.round_s + self.cfg.protocol.timeout_s))

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

    def _known_for(self, worker: int) -> Tuple[Fact, ...]:
        """Protocol results other workers found since this worker's last job, for its cache:
        each keeps its own, and without them two workers would run the same candidate."""
        sent = self._sent.get(worker, self._learned_base)
        known = tuple(fact for fact, where in self._learned[sent - self._learned_base:] if where != worker)
        self._sent[worker] = self._learned_base + len(self._learned)
        done = min(self._sent.get(w, self._learned_base) for w in self.workers.live)  # a lost one gets none
        del self._learned[:done - self._learned_base]  # every worker has had these
        self._learned_base = done
        return known

    # --- taking answers ---------------------------------------------------------------------
    def _handle(self, batch: Batch, done: Done) -> None:
        """Take a finished job's answer: a training's result, or candidates checked."""
        seconds = self.state.seconds
        self.busy += done.seconds
        if isinstance(done.tag, TrainTag):
            log.debug("worker %d: training answered after %.3f s", done.worker, done.seconds)
            batch.results[done.tag.job] = done.value
            seconds["training_jobs"] += done.seconds
            seconds["training_sandbox"] += done.value.seconds
            return
        log.debug("worker %d: rejection job answered after %.3f s%s", done.worker, done.seconds,
                  " (ahead)" if done.tag.ahead else "")
        seconds["rejection_jobs"] += done.seconds
        for (stream, lo, hi), part in zip(done.tag.parts, done.value):
            stream.absorb(lo, hi, part)
            for checked in part.checked:
                result = checked.result
                seconds["rejection_sandbox"] += result.seconds
                if done.tag.ahead:
                    seconds["ahead"] += result.seconds
                if stream.closed:
                    seconds["speculative"] += result.seconds
                if result.cached or result.reason in STATIC:
                    continue  # no protocol run
                if result.cacheable:
                    self._learned.append((Fact(stream.branch, checked.expr, result), done.worker))
                self.failures.add("protocol", result.error or result.reason if result.transient_failure else None)
        self.failures.check("protocol", self.cfg.search.failure_window)
        for stream in list(batch.own.values()) + [self._random[k] for k in self.branches if batch.fresh]:
            if stream.exhausted and not stream.closed and (stream.slot != RANDOM or stream.branch not in self._ahead):
                raise RunFailed(
                    f"no candidate passed the loss-rejection protocol in {stream.prefix - stream.start} "
                    f"attempts for {stream.wanted} offspring (rejected: {_reasons(stream)}); "
                    "check the task's probe metric, or lower protocol.eta")

    # --- the end of a batch, of the run -----------------------------------------------------
    def book_batch(self, wall: float) -> None:
        """Book a batch's wall time, the workers' idle time in it and the origin's waiting."""
        seconds = self.state.seconds
        seconds["wall"] += wall
        seconds["idle"] += len(self.workers.live) * wall - self.busy
        seconds["waiting"] += self.workers.blocked
        self.busy = self.workers.blocked = 0.0

    def finish(self) -> None:
        """Wait for the jobs still out (work that later batches would have used) and close."""
        if self._workers is None:
            return
        for done in self._workers.drain():
            if isinstance(done.tag, CheckTag):
                self.state.seconds["speculative"] += sum(c.result.seconds for part in done.value
                                                         for c in part.checked)
        self.close()

    def close(self) -> None:
        """Close the workers without waiting for their jobs (a failed run)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None


def _reasons(stream: Stream) -> str:
    counts = collections.Counter(c.result.reason for c in stream.done.values())
    return ", ".join(f"{reason} {counts[reason]}" for reason in REASONS if counts[reason])

