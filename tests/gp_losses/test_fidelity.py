"""Multi-fidelity evaluation (fidelity.rungs): ASHA's promotion rule between batches, selection
at the highest rung two losses share, the hall of fame ranked by rung then score, each rung's
training as a plain training with that rung's options, and a resume that ends as an
uninterrupted run."""

import json
import math

import pytest
from search_helpers import FAST, IN_PROCESS, lines, stable, stop_after_batch

from gp_losses.cli import main
from gp_losses.driver import run_search
from gp_losses.fidelity import Promotion, beats, choose, promotion_seed, promotions, standing
from gp_losses.outcomes import Training, branch_counts
from gp_losses.population import Individual
from gp_losses.report import Entry

RUNGS = ["fidelity.rungs=[{iterations: 60}, {iterations: 120}]", "fidelity.promote=0.34"]
OVERRIDES = FAST + ["search.evaluations=16", IN_PROCESS] + RUNGS


def _loss(index, score, **rungs):
    ind = Individual(expr={"cls": f"loss{index}"})
    ind.index, ind.score = index, score
    for rung, result in rungs.items():
        status, value = result if isinstance(result, tuple) else ("ok", result)
        promotions(ind)[int(rung[1:])] = Promotion(int(rung[1:]), (0,), [Training(status, value)])
    return ind


def test_asha_promotes_the_best_share_of_each_rung_not_yet_promoted_top_rung_first():
    a, b, c, d, e, f = (_loss(i, s) for i, s in enumerate([0.5, 0.9, 0.7, 0.1, 0.8, 0.3]))
    promotions(b)[1] = Promotion(1, (0,), [Training("ok", 0.95)])
    # rung 0: floor(0.34 * 6) = 2 -> b, e (b already at rung 1, so e); rung 1: floor(0.34 * 1) = 0
    assert choose([[a, b, c, d, e, f], [b], []], 2, 0.34, 1, 8) == [(e, 1)]
    # with three at rung 1, its best goes first (top rung first), then rung 0's
    g = _loss(6, 0.6, r1=0.2)
    h = _loss(7, 0.65, r1=0.4)
    assert choose([[a, b, c, d, e, f, g, h], [b, g, h], []], 2, 0.34, 1, 8) == [(b, 2), (e, 1)]
    # capacity counts trainings: two seeds each leave room for one promotion in 3
    assert choose([[a, b, c, d, e, f, g, h], [b, g, h], []], 2, 0.34, 2, 3) == [(b, 2)]
    # a batch smaller than the seeds of one promotion still runs one (else rungs never fill)
    assert choose([[a, b, c, d, e, f], [b], []], 2, 0.34, 3, 1) == [(e, 1)]
    assert choose([[a, b, c, d, e, f], [b], []], 2, 0.0001, 1, 8) == []  # floor(share * 6) = 0


def test_two_losses_are_compared_at_the_highest_rung_both_reached():
    low_proxy_good_long = _loss(0, 0.2, r1=0.9)
    high_proxy_bad_long = _loss(1, 0.8, r1=0.3)
    proxy_only = _loss(2, 0.5)
    assert beats(low_proxy_good_long, high_proxy_bad_long)  # rung 1: 0.9 > 0.3
    assert beats(proxy_only, low_proxy_good_long)           # rung 0: 0.5 > 0.2
    assert not beats(proxy_only, high_proxy_bad_long)
    invalid_long = _loss(3, 0.9, r1=("invalid", None))
    assert beats(high_proxy_bad_long, invalid_long) and beats(invalid_long, proxy_only)
    timed_out = _loss(4, 0.9, r1=("timeout", None))       # no result at rung 1: compared at 0
    assert beats(timed_out, high_proxy_bad_long)
    assert standing(low_proxy_good_long) == (1, 0.9) and standing(proxy_only) == (0, 0.5)
    assert standing(invalid_long) is None and standing(timed_out) == (0, 0.9)
    assert standing(_loss(5, None)) is None


def _asha_replay(records, share, rungs):
    """Promotions as ASHA's rule makes them from the records alone: before each batch, the
    best floor(share * n) of the n losses scored ok at a rung in earlier batches, not yet
    promoted, top rung first."""
    by_batch = {}
    for r in records:
        by_batch.setdefault(r["batch"], []).append(r)
    scored = [[] for _ in range(rungs + 1)]  # (score, index) per rung
    done = set()
    expected = []
    for batch in sorted(by_batch):
        made = [(r["promoted"], r["rung"]) for r in by_batch[batch] if "promoted" in r]
        want = []
        for rung in reversed(range(rungs)):
            top = sorted(scored[rung], key=lambda x: (-x[0], x[1]))[:math.floor(share * len(scored[rung]) + 1e-9)]
            want += [(index, rung + 1) for _, index in top if (index, rung + 1) not in done]
        expected.append(want[:len(made)])
        assert made == want[:len(made)], (batch, made, want)
        for r in by_batch[batch]:
            if "promoted" in r:
                done.add((r["promoted"], r["rung"]))
                if r["status"] == "ok":
                    scored[r["rung"]].append((r["score"], r["promoted"]))
            elif r.get("eval") is not None and r["status"] == "ok":
                scored[0].append((r["score"], r["index"]))
    return expected


@pytest.fixture(scope="module")
def asha_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity") / "run"
    return out, run_search("cls", out=str(out), seed=0, overrides=OVERRIDES)


def test_a_search_with_rungs_promotes_as_asha_and_ranks_by_rung(asha_run, capsys):
    out, summary = asha_run
    assert summary["evaluations"] == 16
    records = [r for r in lines(out) if "branch" not in r]
    promoted = [r for r in records if "promoted" in r]
    assert {r["rung"] for r in promoted} == {1, 2}
    assert sum(1 for r in records if r.get("eval") is not None) == 16  # promotions are not evaluations
    _asha_replay(records, 0.34, 2)
    # each rung's training is a plain training with that rung's options and its own seed
    capsys.readouterr()
    for r in [next(p for p in promoted if p["rung"] == k) for k in (1, 2)]:
        (run,) = r["runs"]
        assert run["seed"] == promotion_seed(0, r["promoted"], r["rung"], 0)
        assert run["iterations"] == {1: 60, 2: 120}[r["rung"]]
        options = [o for o in FAST if not o.startswith("task.options.iterations")]
        args = ["train", "--task", "cls", "--loss", r["expr"]["cls"], "--seed", str(run["seed"]),
                "--set", f"task.options.iterations={run['iterations']}"]
        assert main(args + [a for item in options for a in ("--set", item)]) == 0
        assert r["score"] == json.loads(capsys.readouterr().out)["score"]
    # the hall: by the highest rung trained ok, then the score there, each entry saying which
    hall = json.loads((out / "hall_of_fame.json").read_text())
    keys = [(h["rung"], h["score"]) for h in hall]
    assert keys == sorted(keys, reverse=True) and hall[0]["rung"] == 2
    assert hall[0]["metrics"] == {"accuracy": hall[0]["score"]}  # the rung's metrics, not the proxy's
    assert Entry.found(hall[0]).proxy == hall[0]["rung_scores"]["0"]  # a retrain's proxy column
    # `gp-losses show`'s per-branch counts take promotions for no candidates
    made = [r for r in records if "promoted" not in r and r["origin"][0]["op"] != "copy"]
    assert branch_counts(lines(out))["cls"]["passed"] == len(made)
    best = next(p for p in promoted if p["promoted"] == hall[0]["index"] and p["rung"] == 2)
    assert hall[0]["score"] == best["score"] == hall[0]["rung_scores"]["2"]
    with open(out / "logbook.csv") as fh:
        header = fh.readline().strip().split(",")
    assert "promoted" in header


def test_a_resumed_search_with_rungs_ends_as_an_uninterrupted_run(tmp_path, monkeypatch, asha_run):
    stop_after_batch(monkeypatch, 7)
    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        run_search("cls", out=str(stopped), seed=0, overrides=OVERRIDES)
    assert any("promoted" in r for r in lines(stopped))  # stopped with promotions done
    monkeypatch.undo()
    run_search(None, resume=str(stopped))
    reference, _ = asha_run  # the same run, never stopped
    assert stable(lines(stopped)) == stable(lines(reference))
    assert (json.loads((stopped / "hall_of_fame.json").read_text())
            == json.loads((reference / "hall_of_fame.json").read_text()))


def test_a_rung_with_an_unknown_option_stops_the_run_with_exit_2(tmp_path, capsys):
    code = main(["search", "--task", "cls", "--out", str(tmp_path / "run"),
                 "--set", "fidelity.rungs=[{itrations: 90}]"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown config key 'fidelity.rungs[0].itrations' (did you mean" in err
    assert not (tmp_path / "run").exists()
