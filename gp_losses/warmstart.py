"""Warm start (`search.seed_losses`; not in the paper): given losses take the first initial
slots of a search, in their order, before any random one.

Each seed loss is deduped and trained as an offspring is. Its protocol runs only for the
fingerprint (gradient equivalence) and the record: the user chose it, so a rejected one is
still trained, and its record says why the protocol rejected it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, List, Optional

from gp_losses.jobs import protocol_job
from gp_losses.messages import Made, ProtocolJob
from gp_losses.outcomes import ProtocolResult
from gp_losses.population import Slot
from gp_losses.rejection import static_reason
from gp_losses.sandbox import hard_limit
from gp_losses.scheduler import Batch
from gp_losses.trees import parse_tree
from gp_losses.workers import parallel_map

log = logging.getLogger("gp_losses")


class WarmStart:
    """The seed losses of one search process (a resumed run places those not yet placed)."""

    def __init__(self, evolution: Any) -> None:
        self.evo = evolution
        self._results: Optional[List[List[ProtocolResult]]] = None
        """The protocol's results of the seed losses this process places, from `_base` on."""
        self._base = 0

    @property
    def pending(self) -> bool:
        """Whether seed losses are left to place."""
        return self.evo.state.seeded < len(self.evo.ctx.seeds)

    def batch(self, n: int) -> Batch:
        """A batch of the next n seed losses, each in an initial slot."""
        evo, state = self.evo, self.evo.state
        start = state.seeded
        seeds = evo.ctx.seeds[start:start + n]
        if self._results is None:  # once per process, before the scheduler's first job
            self._results = self.protocol(evo.ctx.seeds[start:])
            self._base = start
        batch = Batch(len(seeds))
        for i, seed in enumerate(seeds):
            results = self._results[start - self._base + i]
            slot = Slot(None, [parse_tree(seed.exprs[b.name], pset) for b, pset
                               in zip(evo.space.branches, evo.space.psets)],
                        [tuple(r.fingerprint) for r in results], [Made("seed")] * len(results),
                        state.created, seed.entry)
            state.created += 1
            state.explored += 1
            evo.dedupe(slot, batch)
            failed = "; ".join(f"{b.name}: {r.reason}" for b, r in zip(evo.space.branches, results)
                               if not r.passed)
            if failed:
                batch.children[-1].protocol = failed
                log.warning("seed loss %r does not pass the protocol (%s); it is trained all the same",
                            seed.entry, failed)
        state.seeded += len(seeds)
        return evo.scheduler.trainings(batch.children, batch.jobs)

    def protocol(self, seeds) -> List[List[ProtocolResult]]:
        """Each seed loss's result per branch, as the run decides on a candidate: the static
        checks and the protocol with `search.rejection`, only the fingerprint without it (a
        pass), nothing at all without `search.equivalence` either. Run on the workers."""
        evo = self.evo
        search, space, m = evo.cfg.search, evo.space, len(evo.space.branches)
        if not (search.rejection or search.equivalence):
            return [[ProtocolResult(True)] * m for _ in seeds]
        jobs = [ProtocolJob(evo.spec.key, k, seed.exprs[b.name], search.rejection)
                for seed in seeds for k, b in enumerate(space.branches)]
        results = parallel_map(protocol_job, jobs, item_limit_s=hard_limit(evo.cfg.protocol.timeout_s))
        out = []
        for i, seed in enumerate(seeds):
            own = []
            for k, (branch, result) in enumerate(zip(space.branches, results[i * m:(i + 1) * m])):
                if not search.rejection:
                    result = dataclasses.replace(result, passed=True, reason=None)
                else:
                    static = static_reason(parse_tree(seed.exprs[branch.name], space.psets[k]), branch)
                    if static:  # the fingerprint kept for dedupe; the verdict is the static check's
                        result = dataclasses.replace(result, passed=False, reason=static)
                own.append(result)
            out.append(own)
        return out
