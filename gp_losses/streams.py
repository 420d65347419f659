"""Candidate streams: the rejection phase shared among workers without changing what it finds.

Each branch of each offspring slot has a stream of candidates 0, 1, 2, ...: candidate i is
made from a generator seeded by (run seed, slot number, branch, i) (variation.candidate_rng),
so any process can make any of them. The stream's answer is its first candidate that passes
the static checks and the protocol, and the candidates before it are its rejections — the
same whoever checked them, in whatever order, on however many workers. That is what lets the
rejection phase scale: workers take ranges of streams and need not wait for one another.
The random slots (while initializing) share one stream per branch for the whole run: the
run's j-th random slot takes its j-th pass. A random loss passes about once in a thousand
tries, so this is the long stream; shared, what a worker checks past the passes one batch
needs is used by the next one instead of wasted.

Whenever workers come free, `plan` gives each one job: ranges of the open streams,
its own streams first. A worker checks its ranges in order, each until its first pass, for
about `search.round_s` seconds, and returns how far it got; what it did not reach is handed
out again. Two workers may share a stream (more workers than open streams, or a worker done
with its own): the later range is speculative work, wasted when the earlier one holds a
pass — counted in logbook.csv (`seconds_speculative`), never in the records.

Plain data only (no torch): the origin keeps this bookkeeping.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

from gp_losses.messages import Checked, RangeDone

RANDOM = -1
"""The slot number that seeds the run's stream of random candidates (slots count from 0)."""


class Answer(NamedTuple):
    """What a stream gives one slot: the candidates it rejected, in order, and the one it took."""

    rejected: List[Checked]
    accepted: Checked


@dataclass
class Stream:
    """The candidates of one branch of one offspring slot — or, for the run's random slots
    (no parent, while initializing), one stream for all of them: the j-th random slot takes
    its j-th passing candidate, so every pass a worker finds is used."""

    slot: int
    """The slot's number (RANDOM for the run's random stream)."""
    branch: int
    parent: Optional[str]
    """The parent's tree for this branch (None: random candidates, while initializing)."""
    limit: int
    """Most candidates checked before the stream counts as exhausted (search.max_attempts
    per slot)."""
    wanted: int = 1
    """Passing candidates needed: the number of slots the stream fills."""
    start: int = 0
    """The first index in use (the run's random stream goes on from batch to batch)."""
    next: int = 0
    """The first index never handed out."""
    handed: int = 0
    gaps: List[Tuple[int, int]] = field(default_factory=list)
    """Ranges handed out and returned unchecked, to hand out again."""
    done: Dict[int, Checked] = field(default_factory=dict)
    passes: List[int] = field(default_factory=list)
    """Indices known to pass, in order."""
    prefix: int = 0
    """Every index below this one is checked."""
    closed: bool = False
    """Its slot is filled and its batch's round over: what workers still check is waste."""
    rate: Optional[float] = None
    """Candidates a worker checks per second here (recent ranges): a range is sized to about
    one time box of it, so that workers sharing the stream stay close to its front."""

    @property
    def last(self) -> Optional[int]:
        """The index of the `wanted`-th known pass: nothing after it is needed."""
        return self.passes[self.wanted - 1] if len(self.passes) >= self.wanted else None

    @property
    def decided(self) -> bool:
        """Whether the first `wanted` passing candidates are known (all before them checked)."""
        return self.last is not None and self.prefix > self.last

    @property
    def exhausted(self) -> bool:
        return self.last is None and self.prefix >= self.limit

    @property
    def first_only(self) -> bool:
        """Whether a worker may stop a range at its first pass."""
        return self.wanted == 1

    def take(self, cap: int, sharers: int = 1, round_s: float = 0.0) -> List[Tuple[int, int]]:
        """The next ranges to check: returned gaps first, then new indices; about `cap`
        candidates for random ones, and for an offspring's 1, 2, 4, ... up to `cap` (a copy or
        a good mutant passes at once), but no more than a worker checks in about 1.25
        `round_s` seconds at the stream's `rate`. Once the passes needed are known, only the
        gaps before them are left, split among the `sharers` workers that have yet to take
        from the stream now."""
        last = self.last
        bound = self.limit if last is None else last
        below = [(lo, min(hi, bound)) for lo, hi in self.gaps if lo < bound]
        self.gaps = [(max(lo, bound), hi) for lo, hi in self.gaps if hi > bound]  # kept for later
        want = cap if self.parent is None else min(cap, 2 ** min(self.handed, 30))
        if self.rate is not None and round_s > 0:
            want = min(want, max(1, math.ceil(1.25 * self.rate * round_s)))
        if last is not None:
            want = max(1, -(-sum(hi - lo for lo, hi in below) // sharers))
        self.handed += 1
        ranges = []
        while below and want > 0:
            lo, hi = below.pop(0)
            if hi - lo > want:
                below.insert(0, (lo + want, hi))
                hi = lo + want
            ranges.append((lo, hi))
            want -= hi - lo
        self.gaps = sorted(below + self.gaps)
        if want > 0 and last is None and self.next < self.limit:
            size = min(want, self.limit - self.next)
            ranges.append((self.next, self.next + size))
            self.next += size
        return ranges

    def absorb(self, lo: int, hi: int, done: RangeDone) -> None:
        """A worker's answer for the range [lo, hi): indices lo .. done.end-1 checked."""
        end = done.end
        if end > lo and done.seconds > 0:
            rate = (end - lo) / done.seconds
            self.rate = rate if self.rate is None else 0.5 * (self.rate + rate)
        for checked in done.checked:
            if checked.index < self.start:  # already used by a slot
                continue
            self.done[checked.index] = checked
            if checked.result.passed:
                bisect.insort(self.passes, checked.index)
        if end < hi:
            self.gaps.append((end, hi))
            self.gaps.sort()
        while self.prefix in self.done:
            self.prefix += 1

    def restart(self, start: int, wanted: int) -> None:
        """Go on from index `start` (the candidates before it are used up) for `wanted` more
        passes, keeping what was checked from there on."""
        self.start, self.wanted = start, wanted
        self.done = {i: r for i, r in self.done.items() if i >= start}
        self.passes = [i for i in self.passes if i >= start]
        self.gaps = [(max(lo, start), hi) for lo, hi in self.gaps if hi > start]
        self.next = max(self.next, start)
        self.prefix = max(self.prefix, start)
        while self.prefix in self.done:
            self.prefix += 1

    def answer(self, j: int) -> Optional[Answer]:
        """The j-th slot's answer once known — every candidate before its pass checked — else
        None: slot j gets the candidates after the (j-1)-th pass, up to the j-th."""
        if j >= min(self.wanted, len(self.passes)) or self.prefix <= self.passes[j]:
            return None
        index = self.passes[j]
        first = self.passes[j - 1] + 1 if j else self.start
        return Answer([self.done[i] for i in range(first, index)], self.done[index])

    def answers(self) -> List[Optional[Answer]]:
        """answer(j) for every slot the stream fills (of a decided stream)."""
        return [self.answer(j) for j in range(self.wanted)]

    def speculative(self) -> List[Checked]:
        """Candidates checked past the last one needed: work the answers did not use."""
        last = self.last
        return [r for i, r in self.done.items() if last is not None and i > last]


def plan(streams: List[Stream], workers: int, cap: int,
         round_s: float = 0.0) -> List[List[Tuple[Stream, int, int]]]:
    """Jobs for `workers` free workers: per worker, ranges of the open streams (ranges still out
    with other workers are not handed out again).

    The open streams are dealt out in order, ceil(n / workers) to a worker (each stream to
    one worker; with fewer streams than workers, streams are shared), and each worker also
    gets a range of the stream after its own, to go on with when its own are decided. Ranges
    are taken for all workers' own streams first, so an own range is a stream's earliest.
    Empty jobs are left out; no job at all means every stream is decided or exhausted.
    """
    open_ = [s for s in streams if not s.decided and not s.exhausted]
    if not open_:
        return []
    n = len(open_)
    own = math.ceil(n / workers)
    orders = []
    for w in range(workers):
        start = (w * own) % n if n >= workers else w % n
        orders.append([open_[(start + t) % n] for t in range(min(n, own + 1))])
    sharers = collections.Counter(id(s) for order in orders for s in order)
    jobs: List[List[Tuple[Stream, int, int]]] = [[] for _ in orders]
    for t in range(own + 1):
        for w, order in enumerate(orders):
            if t < len(order):
                stream = order[t]
                jobs[w] += [(stream, lo, hi) for lo, hi in stream.take(cap, sharers[id(stream)], round_s)]
                sharers[id(stream)] -= 1
    return [job for job in jobs if job]
