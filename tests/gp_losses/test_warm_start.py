"""Warm start (`search.seed_losses`): the given losses take the first initial slots, in order,
are trained as any offspring and are marked in the records and the hall of fame; the random
losses that follow are those of the same run from scratch; a resume between the seeds' batches
ends as an uninterrupted run; a seed that cannot join the population stops the run at once.
Noise accounting (`search.noise_seeds`): the best loss over further proxy seeds."""

import json
import logging
import statistics

import pytest
from search_helpers import FAST, IN_PROCESS, lines, stable, stop_after_batch

from gp_losses.cli import main
from gp_losses.driver import run_search, within_noise
from gp_losses.evolution import evaluation_seed, noise_seed

CE = "Neg(Mul(y, Log(yhat)))"
REJECTED = "Mul(y, yhat)"
"""Rises with the target class's probability: training on it lowers accuracy, so the protocol
rejects it."""
SEEDS = f'search.seed_losses=[ce, "{REJECTED}", "{CE}"]'
OVERRIDES = FAST + ["search.evaluations=8", IN_PROCESS]


def _population(out):
    return [r for r in lines(out) if "branch" not in r]  # not the rejected candidates


def test_seed_losses_are_trained_first_and_marked(tmp_path, capsys):
    seeded = run_search("cls", out=str(tmp_path / "seeded"), seed=4, overrides=OVERRIDES + [SEEDS])
    losses = _population(tmp_path / "seeded")
    first = losses[:3]
    assert [r["seeded"] for r in first] == ["ce", REJECTED, CE]
    assert [r["expr"]["cls"] for r in first] == [CE, REJECTED, CE]
    assert all(r["origin"] == [{"op": "seed", "steps": []}] and r["parent"] is None for r in first)
    assert "seeded" not in losses[3] and losses[3]["origin"][0]["op"] == "init"
    # ce is evaluation 0, scored as a plain training of ce with that evaluation's seed scores it
    assert first[0]["eval"] == 0 and first[0]["protocol"] == "passed" and first[0]["status"] == "ok"
    capsys.readouterr()
    assert main(["train", "--task", "cls", "--loss", "ce", "--seed", str(evaluation_seed(4, 0)),
                 *[arg for item in FAST for arg in ("--set", item)]]) == 0
    assert first[0]["score"] == json.loads(capsys.readouterr().out)["score"]
    # a seed the protocol rejects is trained all the same, the reason on its record
    assert first[1]["eval"] == 1 and first[1]["protocol"].startswith("cls: ")
    assert first[1]["protocol"] == "cls: low_gain" and first[1]["status"] in ("ok", "invalid")
    # ce given twice: the second is gradient-equivalent to the first and reuses its score
    assert first[2]["status"] == "reused" and first[2]["reused_eval"] == 0
    hall = json.loads((tmp_path / "seeded" / "hall_of_fame.json").read_text())
    assert [h.get("seeded") for h in hall if h["expr"]["cls"] == CE] == ["ce"]
    assert seeded["evaluations"] == 8
    # the random initial losses are those a run from scratch starts with
    scratch = run_search("cls", out=str(tmp_path / "scratch"), seed=4, overrides=OVERRIDES + ["search.evaluations=1"])
    assert scratch["evaluations"] == 1
    random_seeded = [r["expr"] for r in losses if r["origin"][0]["op"] == "init"]
    random_scratch = [r["expr"] for r in _population(tmp_path / "scratch") if r["origin"][0]["op"] == "init"]
    assert len(random_seeded) == 4 - 3 and random_seeded == random_scratch[:1]


def test_a_resume_between_the_seed_batches_ends_as_an_uninterrupted_run(tmp_path, monkeypatch):
    overrides = OVERRIDES + [SEEDS, "search.batch=1", "search.evaluations=4", "search.compare_baselines=false"]
    stop_after_batch(monkeypatch, 1)
    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        run_search("cls", out=str(stopped), seed=5, overrides=overrides)
    assert [r.get("seeded") for r in _population(stopped)] == ["ce"]
    monkeypatch.undo()
    run_search(None, resume=str(stopped))
    reference = tmp_path / "reference"
    run_search("cls", out=str(reference), seed=5, overrides=overrides)
    assert stable(lines(stopped)) == stable(lines(reference))
    assert (json.loads((stopped / "hall_of_fame.json").read_text())
            == json.loads((reference / "hall_of_fame.json").read_text()))


@pytest.mark.parametrize("overrides, protocol", [
    ([], "cls: no_prediction"),                            # the static checks, as for a candidate
    (["search.rejection=false"], "passed"),                # the fingerprint only, as for a candidate
])
def test_a_seed_is_judged_as_the_run_judges_a_candidate_and_trained_all_the_same(tmp_path, overrides, protocol):
    run_search("cls", out=str(tmp_path / "run"), seed=0, overrides=OVERRIDES + overrides + [
        "search.evaluations=2", "search.compare_baselines=false", 'search.seed_losses=["Neg(y)", ce]'])
    first, second = _population(tmp_path / "run")[:2]
    assert (first["seeded"], first["protocol"], second["protocol"]) == ("Neg(y)", protocol, "passed")
    assert first["eval"] == 0 and first["status"] in ("ok", "invalid")
    assert bool(second["fingerprint"][0]) == ("search.equivalence=false" not in overrides)


@pytest.mark.parametrize("task, entry, message", [
    ("cls", "cee", "search.seed_losses[0]: 'cee': in loss 'cee' at column 1: unknown name 'cee'"),
    ("cls", "cee", "or a baseline of task 'cls': ce, mse (did you mean 'ce'?)"),
    ("cls", "box=ce", "search.seed_losses[0] 'box=ce': unknown branch 'box'; branches: cls"),
    ("det", "ce_l1", "branch 'reg_rpn' is the Python loss 'smooth_l1', which has no tree to vary"),
])
def test_a_seed_that_cannot_join_the_population_stops_the_run_with_exit_2(tmp_path, capsys, task, entry, message):
    out = tmp_path / "run"
    code = main(["search", "--task", task, "--out", str(out), "--set", f"search.seed_losses=[{entry}]"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_the_proxy_noise_is_the_best_loss_over_further_seeds(tmp_path, capsys, caplog):
    """search.noise_seeds: the hall's first trained again with seeds of its own; each score is
    that of a plain training with that seed, the spread is the sample standard deviation of
    the ok ones, and a training that fails is listed, not scored (here the second, injected)."""
    caplog.set_level(logging.INFO, logger="gp_losses")
    faulty = "toy_tasks:FaultyDigits"
    overrides = OVERRIDES + ["search.noise_seeds=3", "task.options.fault=raise",
                             f"task.options.fault_seed={noise_seed(6, 1)}"]
    code = main(["search", "--task", faulty, "--seed", "6", "--out", str(tmp_path / "run"),
                 *[arg for item in overrides for arg in ("--set", item)]])
    err = capsys.readouterr().err
    assert code == 0, err
    noise = json.loads((tmp_path / "run" / "noise.json").read_text())
    hall = json.loads((tmp_path / "run" / "hall_of_fame.json").read_text())
    runs = noise["runs"]
    assert noise["expr"] == hall[0]["expr"] and noise["split"] == "val"
    assert runs[0] == {"seed": evaluation_seed(6, hall[0]["eval"]), "status": "ok", "score": hall[0]["score"]}
    assert [r["seed"] for r in runs[1:]] == [noise_seed(6, i) for i in range(3)]
    assert runs[2]["status"] == "error" and runs[2]["score"] is None and "injected" in runs[2]["error"]
    for run in (runs[1], runs[3]):
        assert main(["train", "--task", faulty, "--seed", str(run["seed"]),
                     "--loss", hall[0]["expr"]["cls"], *[arg for item in FAST for arg in ("--set", item)]]) == 0
        assert run["status"] == "ok" and run["score"] == json.loads(capsys.readouterr().out)["score"]
    scores = [runs[0]["score"], runs[1]["score"], runs[3]["score"]]
    assert noise["ok"] == 3 and noise["std"] == pytest.approx(statistics.stdev(scores), rel=1e-12)
    assert (f"proxy noise: #1 over 4 seeds, 3 ok: mean {statistics.mean(scores):.4f}, std {noise['std']:.4f}"
            in caplog.text)


def test_a_gap_under_two_noise_deviations_is_marked_as_a_tie():
    hall = [{"rank": 1, "score": 0.80}, {"rank": 2, "score": 0.78}, {"rank": 3, "score": 0.70}]
    assert within_noise(hall, {"std": 0.011}) == [True, True, False]
    assert within_noise(hall, {"std": 0.009}) == [True, False, False]
    assert within_noise(hall, {"std": None}) == [False] * 3 and within_noise(hall, {}) == [False] * 3
