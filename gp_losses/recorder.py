"""What a search writes as it goes (gp_losses/rundir.py holds the files): after every batch its
records, a logbook row, the hall of fame, the checkpoint and status.json, and progress.png;
at the end the hall of fame with its formulas.

The formulas (sympy's simplification, about 0.3 s a loss) are made once, at the end, for the
losses then in the hall of fame: made after every batch for every loss that entered it, they
were most of the origin's own serial work. During a search hall_of_fame.json has them null;
`formulas()` fills them in for a reader (`gp-losses show`, `retrain`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from deap import tools
from tqdm import tqdm

from gp_losses import cluster
from gp_losses.config import RunConfig
from gp_losses.core.errors import describe
from gp_losses.fidelity import RungFitness, promotions
from gp_losses.outcomes import REASONS
from gp_losses.pareto import front_hypervolume, is_pareto
from gp_losses.plot import Front, write_progress
from gp_losses.population import SearchState, make_statistics, scored
from gp_losses.rundir import RunDir
from gp_losses.space import SearchSpace
from gp_losses.tracking import Board, hall_of_fame_text

log = logging.getLogger("gp_losses")


class Rejected:
    """A rejected candidate's line in evaluations.jsonl: its JSON members as the worker made
    them (gp_losses/messages.py `Checked.record`), and the index the origin gives it."""

    __slots__ = ("index", "members")

    def __init__(self, members: str) -> None:
        self.index: Optional[int] = None
        self.members = members

    def line(self, batch: int) -> str:
        return f'{{"index": {self.index}, {self.members}, "batch": {batch}}}'


class Recorder:
    """The run directory's writer for one search."""

    def __init__(self, rundir: Optional[RunDir], space: SearchSpace, config: RunConfig) -> None:
        self.rundir = rundir
        self.space = space
        self.cfg = config
        self._drawing: Optional[float] = 0.0
        """Seconds spent drawing progress.png in this process (None after a failed drawing)."""
        self.board: Optional[Board] = None
        """The TensorBoard writer (search.tensorboard), opened at this process's first batch."""

    @contextlib.contextmanager
    def progress(self, state: SearchState) -> Iterator[Callable[[], None]]:
        """A progress bar on stderr; the function it yields moves it to where `state` is."""
        total = self.cfg.search.evaluations
        with tqdm(total=total, initial=min(state.evaluations, total), desc="evaluations",
                  unit="eval", dynamic_ncols=True) as bar:
            shown = [bar.n]

            def advance() -> None:
                bar.update(min(state.evaluations, total) - shown[0])
                shown[0] = min(state.evaluations, total)
                bar.set_postfix(best=f"{best(state):.4f}", explored=state.explored,
                                rejected=rejected(state), reused=state.counts["reused"])

            yield advance

    def record(self, state: SearchState, records: List[Any]) -> None:
        """The batch's Statistics + Logbook row, evaluations.jsonl (its losses' records, and
        the Rejected lines of its candidates), logbook.csv, hall_of_fame.json, checkpoint,
        status.json and progress.png."""
        state.batches += 1
        batch = state.batches
        row = self.row(state)
        state.logbook.record(**row)
        lines = [r.line(batch) if isinstance(r, Rejected) else json.dumps({**r, "batch": batch}) for r in records]
        state.jsonl_size = self.rundir.append_lines(lines)
        self.rundir.write_logbook(state.logbook)
        self.rundir.write_json("hall_of_fame.json", hall_of_fame(state))
        self.rundir.save_checkpoint(state)
        self.rundir.write_status("running", evaluations=state.evaluations, best=best(state),
                                 explored=state.explored, **cluster.status())
        self.draw(state)
        if self.cfg.search.tensorboard:
            if self.board is None:  # a resume drops what a killed run wrote after its checkpoint
                self.board = Board(self.rundir.path, purge_step=batch)
            self.board.scalars("search", {k: v for k, v in row.items() if k != "batch"}, batch)
        log.debug("batch %d: %s", state.batches, row)

    def row(self, state: SearchState) -> Dict[str, Any]:
        """The logbook row after a batch: counts, best, population statistics, seconds."""
        counts, seconds = state.counts, state.seconds
        return {"batch": state.batches, "evaluations": state.evaluations, "explored": state.explored,
                "reused": counts["reused"], "rejected": rejected(state),
                **{f"rejected_{r}": counts[f"rejected_{r}"] for r in REASONS},
                **{s: counts[s] for s in ("invalid", "error", "timeout", "unscored")},
                **({"promoted": counts["promoted"]} if getattr(state, "ladder", None) else {}),
                "best": best(state), **make_statistics().compile(scored(state.population)),
                **(front_row(state) if isinstance(state.hof, tools.ParetoFront) else {}),
                **{f"seconds_{k}": round(v, 3) for k, v in sorted(seconds.items())},
                "seconds_origin": round(origin_seconds(state), 3)}

    def finish(self, state: SearchState) -> List[Dict[str, Any]]:
        """The end of the search: the hall of fame with its formulas, and progress.png drawn
        once more; the hall of fame as written."""
        for ind in state.hof:
            if ind.formula is None:
                ind.formula = {name: str(expr) for name, expr in self.space.formulas(ind).items()}
        hall = hall_of_fame(state)
        self.rundir.write_json("hall_of_fame.json", hall)
        if state.logbook:
            self.draw(state, final=True)
        if self.board is not None:
            self.board.text("hall_of_fame", hall_of_fame_text(hall), state.batches)
        self.close()
        return hall

    def close(self) -> None:
        """Close the TensorBoard writer, if open (also when a search fails)."""
        if self.board is not None:
            self.board.close()
            self.board = None

    def _front(self, state: SearchState) -> Optional[Front]:
        """A Pareto search's trained losses for the front panel, else None."""
        if not isinstance(state.hof, tools.ParetoFront) or not len(state.hof):
            return None
        fit = state.hof[0].fitness
        return Front(fit.names, fit.weights, list(getattr(state, "scored_points", [])))

    def draw(self, state: SearchState, final: bool = False) -> None:
        """Redraw progress.png: after every batch while drawing takes under 5% of the
        search's wall time so far, otherwise less often, and always at the end (`final`)."""
        if not self.cfg.search.plot or self._drawing is None:
            return
        if not final and self._drawing > 0.05 * state.seconds["wall"]:
            return
        start = time.perf_counter()
        try:
            write_progress(self.rundir.path, list(state.logbook), self.cfg.name, self._front(state))
        except Exception as exc:  # a picture that cannot be drawn never stops a search
            log.warning("progress.png not drawn, and no more in this run: %s", describe(exc))
            self._drawing = None
            return
        self._drawing += time.perf_counter() - start


def hall_of_fame(state: SearchState) -> List[Dict[str, Any]]:
    """The hall of fame as hall_of_fame.json holds it (formulas once made, else null). A
    Pareto search's is its front, by the first objective, each entry with `objectives`."""
    return [{"rank": rank, "score": _score(ind), "expr": ind.expr, "formula": ind.formula,
             "metrics": _metrics(ind), "index": ind.index, "eval": ind.eval,
             **({"seeded": ind.seeded} if ind.seeded is not None else {}), **_rungs(ind),
             **({"objectives": ind.fitness.named()} if is_pareto(ind.fitness) else {})}
            for rank, ind in enumerate(state.hof, 1)]


def front_row(state: SearchState) -> Dict[str, Any]:
    """A Pareto search's logbook columns: the front's size and its hypervolume."""
    return {"front": len(state.hof), "hypervolume": front_hypervolume(state.hof)}


def _score(ind: Any) -> float:
    """The entry's score: the proxy's (a Pareto search's: its first objective), or with
    fidelity rungs the one at its highest rung."""
    return ind.score if is_pareto(ind.fitness) else ind.fitness.values[-1]


def _rung(ind: Any) -> int:
    return int(ind.fitness.values[0]) if isinstance(ind.fitness, RungFitness) else 0


def _metrics(ind: Any) -> Dict[str, float]:
    """The metrics of the entry's score: the proxy's, or with fidelity rungs those of its rung."""
    rung = _rung(ind)
    return dict(promotions(ind)[rung].metrics if rung else ind.metrics)


def _rungs(ind: Any) -> Dict[str, Any]:
    """With fidelity rungs: the rung of the entry's score and its score at every rung."""
    if not isinstance(ind.fitness, RungFitness):
        return {}
    scores = {"0": ind.score, **{str(r): p.score for r, p in sorted(promotions(ind).items())}}
    return {"rung": int(ind.fitness.values[0]), "rung_scores": scores}


def formulas(hall: List[Dict[str, Any]], space: SearchSpace) -> List[Dict[str, Any]]:
    """hall_of_fame.json's entries, each with its formula (made here where the search has
    not made it yet: a running or killed search)."""
    out = []
    for entry in hall:
        if "formula" in entry and entry["formula"] is None:
            loss = space.parse(entry["expr"])
            entry = {**entry, "formula": {b: str(f) for b, f in space.formulas(loss).items()}}
        out.append(entry)
    return out


def best(state: SearchState) -> float:
    return _score(state.hof[0]) if len(state.hof) else float("nan")


def rejected(state: SearchState) -> int:
    return sum(state.counts[f"rejected_{r}"] for r in REASONS)


def origin_seconds(state: SearchState) -> float:
    """The wall time in which the origin was not waiting for a worker: selection, taking the
    workers' answers, dedupe, aging and the bookkeeping of each batch (records, logbook,
    hall of fame, checkpoint, progress.png). What caps the speed-up from more workers
    (workers may run jobs meanwhile)."""
    return state.seconds["wall"] - state.seconds["waiting"]

