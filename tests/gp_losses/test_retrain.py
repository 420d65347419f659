"""`gp-losses retrain`: held-out scores over seeds, the report, rediscovery, proxy fidelity,
resuming after kills, failures that are never results, and a task without a test split."""

import csv
import json
import os
import signal
import subprocess
import sys

import pytest

from gp_losses.cli import main
from gp_losses.evaluate import proxy_evaluate
from gp_losses.journal import retrain_seed
from gp_losses.report import best_rows, rank_correlation
from gp_losses.retrain import retrain
from gp_losses.driver import run_search
from gp_losses.space import SearchSpace
from search_helpers import FAST, IN_PROCESS, ROOT, cli, wait_for
from tasks.cls import DigitsTask

LONG = ["retrain.options.iterations=60"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("retrain") / "run"
    run_search("cls", out=str(out), seed=0, overrides=FAST + [IN_PROCESS])
    return out


def _report_rows(run):
    with open(run / "retrain" / "report.csv") as fh:
        return list(csv.DictReader(fh))


def _copy_run(src, dst):
    dst.mkdir()
    for name in ("config.yaml", "hall_of_fame.json", "baselines.json", "status.json"):
        if (src / name).exists():
            (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_retrain_scores_the_test_split_over_seeds(finished_run):
    summary = retrain(str(finished_run), top=2, seeds=2, overrides=LONG + [IN_PROCESS])
    rows = _report_rows(finished_run)
    hall = json.loads((finished_run / "hall_of_fame.json").read_text())
    assert [r["loss"] for r in rows] == ["#1", "#2", "ce", "mse"]
    assert json.loads(rows[0]["expr"]) == hall[0]["expr"] and float(rows[0]["proxy"]) == hall[0]["score"]
    assert all(r["ok"] == "2" and r["split"] == "test" and r["target"] == "accuracy" for r in rows)
    # independently: ce trained on the same seeds, scored on the test split, by the task itself
    task = DigitsTask(DigitsTask.Options(hidden=32, iterations=60, batch_size=64, lr=0.1), split="test")
    space = SearchSpace(task.branches)
    ce = space.compile(space.parse(DigitsTask.baselines["ce"]))
    scores = [proxy_evaluate(task, ce, retrain_seed(k), 60).score for k in range(2)]
    ce_row = next(r for r in summary["rows"] if r["name"] == "ce")
    assert ce_row["mean"]["accuracy"] == pytest.approx(sum(scores) / 2, abs=1e-12)
    val = DigitsTask(DigitsTask.Options(hidden=32, iterations=60, batch_size=64, lr=0.1))
    assert proxy_evaluate(val, ce, retrain_seed(0), 60).score != scores[0]  # another split
    text = (finished_run / "retrain" / "report.md").read_text()
    assert "| loss | accuracy ★ | proxy | ok / seeds | s / training |" in text
    assert "**test** split (never seen by the search)" in text
    assert "Spearman ρ =" in text and "Kendall τ =" in text  # 2 found + 2 baselines with scores


def test_rediscovery_names_the_baseline_a_found_loss_is_equivalent_to(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "run")
    hall = json.loads((run / "hall_of_fame.json").read_text())
    hall[0]["expr"] = {"cls": "Mul(Neg(y), Log(yhat))"}  # ce written another way
    hall[1]["expr"] = {"cls": "Square(Add(Neg(y), yhat))"}  # mse written another way
    (run / "hall_of_fame.json").write_text(json.dumps(hall))
    summary = retrain(str(run), top=3, seeds=1, schedule="proxy",
                      overrides=[IN_PROCESS, "task.options.iterations=20"])
    found = {r["name"]: r["equivalent"] for r in summary["rows"] if r["rank"]}
    assert found["#1"] == ["ce"] and found["#2"] == ["mse"]
    assert "(equivalent to ce)" in (run / "retrain" / "report.md").read_text()


def test_a_killed_retrain_reruns_only_what_is_missing(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "run")
    log = run / "retrain" / "trainings.jsonl"
    args = ["retrain", str(run), "--top", "1", "--seeds", "2", "--set", "retrain.options.iterations=500",
            "--set", IN_PROCESS]  # the journal is under test, not the sandbox: no child to start
    for kill_after in (1, 3):  # two kill points: early, and halfway (3 of 6)
        proc = cli(*args)
        assert wait_for(lambda: log.is_file() and len(log.read_text().splitlines()) >= kill_after, 240)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    before = len(log.read_text().splitlines())
    assert 1 <= before < 6
    proc = cli(*args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"{6 - before} trainings to run, {before} done before" in err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 6 and len({r["key"] for r in records}) == 6  # none trained twice
    assert all(r["ok"] == "2" for r in _report_rows(run))
    assert json.loads(out)["split"] == "test"


def test_a_failed_training_is_not_a_result_and_is_trained_again(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "faults").mkdir()
    faults = ["task.name=toy_tasks:FaultyDigits", "task.options.fault=raise", "task.options.fault_eval=-2",
              f"task.options.fault_dir={run / 'faults'}"]
    first = retrain(str(run), top=1, seeds=2, schedule="proxy", overrides=faults + [IN_PROCESS])
    assert [(r["name"], r["ok"]) for r in first["rows"]] == [("#1", 1), ("ce", 2), ("mse", 2)]
    assert "injected failure" in first["rows"][0]["failed"][0]
    assert first["rows"][0]["mean"]["accuracy"] is not None  # the mean of the seed that trained
    text = (run / "retrain" / "report.md").read_text()
    assert "## Failed trainings" in text and "injected failure" in text
    second = retrain(str(run), top=1, seeds=2, schedule="proxy", overrides=faults + [IN_PROCESS])
    assert [r["ok"] for r in second["rows"]] == [2, 2, 2] and not second["rows"][0]["failed"]


def test_a_task_without_a_test_split_is_scored_on_val_and_says_so(tmp_path, finished_run, caplog):
    run = _copy_run(finished_run, tmp_path / "run")
    summary = retrain(str(run), top=1, seeds=1, schedule="proxy",
                      overrides=["task.name=toy_tasks:ValOnlyDigits", IN_PROCESS])
    assert summary["split"] == "val"
    assert "scores are optimistic" in (run / "retrain" / "report.md").read_text()
    assert "no test split" in caplog.text


def test_retrain_on_val_chooses_without_touching_the_test_report(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "run")
    test = retrain(str(run), top=1, seeds=1, overrides=LONG + [IN_PROCESS])
    val = retrain(str(run), top=1, seeds=1, overrides=LONG + [IN_PROCESS], split="val")
    assert (test["split"], val["split"]) == ("test", "val")
    assert test["report"].endswith("report.md") and val["report"].endswith("report-val.md")
    assert "**test** split" in (run / "retrain" / "report.md").read_text()
    assert "**val** split" in (run / "retrain" / "report-val.md").read_text()
    assert (run / "retrain" / "report-val.csv").read_text().count(",val,") == 3  # #1, ce, mse
    # independently: ce trained by the task itself on val with the retrain's first seed
    task = DigitsTask(DigitsTask.Options(hidden=32, iterations=60, batch_size=64, lr=0.1))
    space = SearchSpace(task.branches)
    ce = space.compile(space.parse(DigitsTask.baselines["ce"]))
    ce_row = next(r for r in val["rows"] if r["name"] == "ce")
    assert ce_row["mean"]["accuracy"] == proxy_evaluate(task, ce, retrain_seed(0), 60).score
    proc = cli("retrain", str(run), "--split", "train")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--split 'train'" in err and "val" in err
    # then only the one chosen on val, on test
    chosen = retrain(str(run), seeds=1, overrides=LONG + [IN_PROCESS, "retrain.baselines=[ce]"], ranks=[2])
    hall = json.loads((run / "hall_of_fame.json").read_text())
    assert [(r["name"], r["expr"]) for r in chosen["rows"]] == [("#2", hall[1]["expr"]), ("ce", ce_row["expr"])]
    for bad, message in (("99", "not 99"), ("0", "must be >= 1"), ("x", "expected ranks")):
        proc = cli("retrain", str(run), "--ranks", bad)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and message in err, err


def test_retrain_takes_only_the_baselines_named(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "run")
    retrain(str(run), top=1, seeds=1, overrides=LONG + [IN_PROCESS, "retrain.baselines=[mse]"])
    assert [r["loss"] for r in _report_rows(run)] == ["#1", "mse"]
    alone = _copy_run(finished_run, tmp_path / "alone")
    retrain(str(alone), top=2, seeds=1, overrides=LONG + [IN_PROCESS, "retrain.baselines=[none]"])
    assert [r["loss"] for r in _report_rows(alone)] == ["#1", "#2"]
    proc = cli("retrain", str(run), "--baselines", "ce,hinge")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no baseline 'hinge'" in err


def test_a_given_loss_is_retrained_beside_with_the_same_seeds_and_checked_first(tmp_path, finished_run, capsys):
    run = _copy_run(finished_run, tmp_path / "run")
    (branch, ce), = DigitsTask.baselines["ce"].items()
    given = "Neg(Mul(y, Log(Add(yhat, Mul(yhat, yhat)))))"  # not a baseline: trained on its own
    summary = retrain(str(run), top=1, seeds=2, overrides=LONG + [IN_PROCESS, "retrain.baselines=[none]",
                                                                    f"retrain.losses.paper={given}"])
    assert [r["loss"] for r in _report_rows(run)] == ["#1", "paper"]
    row = summary["rows"][1]
    assert row["given"] and row["expr"] == {branch: given} and row["ok"] == 2
    assert f"paper `{given}` (given)" in (run / "retrain" / "report.md").read_text()
    task = DigitsTask(DigitsTask.Options(hidden=32, iterations=60, batch_size=64, lr=0.1), split="test")
    space = SearchSpace(task.branches)
    loss = space.compile(space.parse({branch: given}))
    scores = [proxy_evaluate(task, loss, retrain_seed(k), 60).score for k in range(2)]
    assert row["mean"]["accuracy"] == pytest.approx(sum(scores) / 2, abs=1e-12)
    for bad, message in [("retrain.losses.paper=Log(Foo(yhat))", "retrain.losses.paper: 'Log(Foo(yhat))'"),
                         (f"retrain.losses.ce={ce}", "retrain.losses.ce: the name 'ce' is taken"),
                         (f"retrain.losses.#1={ce}", "names starting with '#' are the hall of fame's ranks"),
                         ("retrain.losses.paper=", "retrain.losses.paper: expected a loss expression")]:
        assert main(["retrain", str(run), "--set", bad]) == 2
        assert message in capsys.readouterr().err


def test_retrain_refuses_bad_input(tmp_path, finished_run, capsys):
    def refused(*argv):
        assert main(["retrain", *argv]) == 2
        return capsys.readouterr().err

    assert "not a run directory" in refused(str(tmp_path))
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "config.yaml").write_text((run / "config.yaml").read_text().split("retrain:")[0])
    assert "no retrain.options" in refused(str(run))
    assert "retrain.options.hidden" in refused(str(run), "--set", "retrain.options.hidden=-1")
    (run / "status.json").write_text(json.dumps({"state": "running", "host": os.uname().nodename,
                                                 "pid": os.getpid()}))
    assert "still running" in refused(str(run), "--schedule", "proxy")


def test_rank_correlation_and_bold_rows_by_hand():
    assert rank_correlation([0.1, 0.2, 0.3], [0.5, 0.6, 0.7]) == {"n": 3, "spearman": 1.0, "kendall": 1.0}
    # ranks (1,2,3) vs (1,3,2): rho = 1 - 6*2/(3*8) = 0.5; tau = (2 - 1)/3
    result = rank_correlation([0.1, 0.2, 0.3], [0.5, 0.7, 0.6])
    assert result["spearman"] == pytest.approx(0.5) and result["kendall"] == pytest.approx(1 / 3)
    assert rank_correlation([0.1, 0.2], [0.3, 0.4])["spearman"] is None
    row = lambda name, mean, std: {"name": name, "mean": {"m": mean}, "std": {"m": std}}  # noqa: E731
    assert best_rows([row("a", 0.9, 0.01), row("b", 0.8, 0.01)], "m") == ["a"]
    assert best_rows([row("a", 0.9, 0.05), row("b", 0.86, 0.01)], "m") == []  # within the spread
    assert best_rows([row("a", None, None), row("b", 0.5, 0.0)], "m") == ["b"]


def test_retrain_under_scoop_spreads_the_trainings_over_both_workers(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "run")
    done = subprocess.run([sys.executable, "-m", "scoop", "-n", "2", "gp_losses/main.py", "retrain", str(run),
                           "--top", "1", "--seeds", "2", "--schedule", "proxy"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (run / "retrain" / "trainings.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["result"]["status"] == "ok" for r in records)
    assert len({r["result"]["worker"] for r in records}) == 2
    assert [r["ok"] for r in _report_rows(run)] == ["2", "2", "2"]


def test_a_line_torn_by_a_kill_is_cut_off_and_the_next_training_is_kept(tmp_path):
    from gp_losses.journal import Trainings
    from gp_losses.outcomes import Training

    path = tmp_path / "trainings.jsonl"
    ok = {"status": "ok", "score": 0.9, "metrics": {}, "error": None}
    path.write_text(json.dumps({"key": "a", "loss": "ce", "seed": 1, "result": ok}) + '\n{"key": "b", "lo')
    first = Trainings(path)
    assert first.done("a") and not first.done("b")
    first.append("b", "ce", 2, Training("ok", 0.9))
    first.append("c", "mse", 1, Training("timeout", error="time limit"))
    again = Trainings(path)
    assert again.done("a") and again.done("b") and not again.done("c")
    assert again.latest["c"].error == "time limit" and again.latest["b"].score == 0.9


# --- the search's finalists (`final`) ---------------------------------------------------------
FINAL = ["final.top=3", "final.options.iterations=60"]


def _digits_val_score(expr, iterations=60):
    """The loss trained by the task itself on val with the finalists' seed: the reference."""
    task = DigitsTask(DigitsTask.Options(hidden=32, iterations=iterations, batch_size=64, lr=0.1))
    space = SearchSpace(task.branches)
    return proxy_evaluate(task, space.compile(space.parse(expr)), retrain_seed(0), iterations).score


def test_a_search_with_finalists_picks_the_best_on_val_and_export_writes_it(tmp_path):
    from gp_losses.export import run_source

    out = tmp_path / "run"
    summary = run_search("cls", out=str(out), seed=0, overrides=FAST + FINAL + [IN_PROCESS])
    final = json.loads((out / "final.json").read_text())
    hall = json.loads((out / "hall_of_fame.json").read_text())
    assert [f["rank"] for f in final["finalists"]] == [1, 2, 3] and final["split"] == "val"
    for row in final["finalists"]:  # each score is the task's own training of that loss on val
        assert row["mean"] == _digits_val_score(hall[row["rank"] - 1]["expr"])
    best = max(final["finalists"], key=lambda r: (r["mean"], -r["rank"]))
    assert final["pick"] == best["rank"] == summary["best"]["rank"]
    assert summary["best"]["expr"] == hall[final["pick"] - 1]["expr"]
    assert json.loads((out / "status.json").read_text())["pick"] == final["pick"]
    assert "The search's finalists" in (out / "final.md").read_text()
    assert run_source(out) == run_source(out, final["pick"])
    assert f"Loss of rank {final['pick']} (the search's pick among its finalists" in run_source(out)


def test_the_pick_can_be_below_the_first_and_is_retrained_beside_the_top(tmp_path, finished_run):
    from gp_losses.context import build_context
    from gp_losses import config as cfg
    from gp_losses.export import run_source
    from gp_losses.final import choose_final

    run = _copy_run(finished_run, tmp_path / "run")
    hall = json.loads((run / "hall_of_fame.json").read_text())
    hall[0]["expr"] = {"cls": "Mul(y, yhat)"}  # rewards wrong answers: first by a lucky proxy run
    hall[1]["expr"] = dict(DigitsTask.baselines["ce"])
    (run / "hall_of_fame.json").write_text(json.dumps(hall))
    context = build_context(cfg.load(run / "config.yaml", FINAL[1:] + ["final.top=2", IN_PROCESS]))
    final = choose_final(run, context)
    means = [f["mean"] for f in final["finalists"]]
    assert means[1] > means[0] and final["pick"] == 2
    assert "Loss of rank 2 (the search's pick" in run_source(run)
    assert "Loss of rank 1 of the search" in run_source(run, 1)
    summary = retrain(str(run), top=1, seeds=1, schedule="proxy",
                      overrides=[IN_PROCESS, "retrain.baselines=[ce]"])
    assert [r["name"] for r in summary["rows"]] == ["#1", "#2", "ce"]


def test_a_finalist_whose_training_failed_is_not_eligible(tmp_path, finished_run):
    from gp_losses.context import build_context
    from gp_losses import config as cfg
    from gp_losses.final import choose_final
    from gp_losses.rundir import search_pick

    run = _copy_run(finished_run, tmp_path / "run")
    (run / "faults").mkdir()
    faults = ["task.name=toy_tasks:FaultyDigits", "task.options.fault=raise", "task.options.fault_eval=-2",
              IN_PROCESS, "final.top=2", "final.options.iterations=60"]
    once = build_context(cfg.load(run / "config.yaml", faults + [f"task.options.fault_dir={run / 'faults'}"]))
    first = choose_final(run, once)  # the first training (#1's) fails, once
    assert first["pick"] == 2 and first["finalists"][0]["ok"] == 0
    assert "injected failure" in first["finalists"][0]["failed"][0]
    again = choose_final(run, once)  # the failure is trained again, never reused
    assert again["finalists"][0]["ok"] == 1 and again["finalists"][0]["mean"] is not None
    always = build_context(cfg.load(run / "config.yaml", faults))  # other options: other trainings
    none = choose_final(run, always)
    assert none["pick"] is None and "no finalist" in none["note"]
    assert search_pick(run) == 1


def test_final_options_are_checked_before_a_search_starts(tmp_path):
    proc = cli("search", "--task", "cls", "--out", str(tmp_path / "run"), "--set", "final.options.hidden=-1")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "final.options.hidden" in err
    assert not (tmp_path / "run").exists()


def test_a_search_killed_among_its_finalists_resumes_with_only_the_missing_ones(tmp_path):
    out = tmp_path / "run"
    run_search("cls", out=str(out), seed=0, overrides=FAST + FINAL + [IN_PROCESS])
    first = json.loads((out / "final.json").read_text())
    log = out / "retrain" / "trainings.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    log.write_text(lines[0] + "\n")  # as if killed after the first finalist's training
    (out / "final.json").unlink()
    run_search(None, resume=str(out))
    again = log.read_text().splitlines()
    assert len(again) == 3 and again[0] == lines[0]  # the first is not trained again
    assert json.loads((out / "final.json").read_text()) == first
