"""search.tensorboard: the logbook, the hall of fame and a retrain's report, read back from the
event files with TensorBoard's own reader."""

import json

import pytest

from gp_losses.config import RunConfig
from gp_losses.driver import run_search
from gp_losses.retrain import retrain
from search_helpers import FAST, IN_PROCESS

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

QUICK = [o for o in FAST if not o.startswith("search.evaluations")] + [IN_PROCESS, "search.tensorboard=true"]


def events(run_dir):
    board = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    board.Reload()
    return board


def test_off_by_default():
    assert RunConfig().search.tensorboard is False


def test_a_search_and_its_retrain_write_what_they_did(tmp_path):
    out = tmp_path / "run"
    run_search("cls", out=str(out), seed=0, overrides=QUICK + ["search.evaluations=4"])
    batches = len((out / "logbook.csv").read_text().splitlines()) - 1
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out / "tensorboard")) as killed:  # what a run killed after its last
        killed.add_scalar("search/best", -1.0, batches + 1)   # checkpoint would have left
    run_search(None, resume=str(out), evaluations=6)  # the resume drops it, continues the curves
    logbook = (out / "logbook.csv").read_text().splitlines()
    header, rows = logbook[0].split(","), [line.split(",") for line in logbook[1:]]
    board = events(out)
    tags = board.Tags()
    best = board.Scalars("search/best")
    assert [e.step for e in best] == [int(r[header.index("batch")]) for r in rows]  # one value a batch
    assert [e.value for e in best] == pytest.approx([float(r[header.index("best")]) for r in rows])
    assert len(rows) > batches and -1.0 not in [e.value for e in best]
    assert [e.value for e in board.Scalars("search/evaluations")][-1] == 6
    assert {"search/explored", "search/rejected", "search/seconds_wall"} <= set(tags["scalars"])

    hall = json.loads((out / "hall_of_fame.json").read_text())
    (text,) = [t for t in tags["tensors"] if t.startswith("hall_of_fame")]
    written = board.Tensors(text)[-1].tensor_proto.string_val[0].decode()
    assert hall[0]["expr"]["cls"] in written and f"{hall[0]['score']:.4f}" in written

    summary = retrain(str(out), top=1, seeds=2, schedule="proxy")
    board = events(out)
    for row in summary["rows"]:
        (mean,) = board.Scalars(f"retrain-proxy/test/accuracy/{row['name']}")
        (std,) = board.Scalars(f"retrain-proxy/test/accuracy_std/{row['name']}")
        assert mean.value == pytest.approx(row["mean"]["accuracy"]) and std.value == pytest.approx(row["std"]["accuracy"])
        assert mean.step == 2  # the number of seeds
    assert {row["name"] for row in summary["rows"]} == {"#1", "ce", "mse"}


def test_without_it_nothing_is_written(tmp_path):
    out = tmp_path / "run"
    run_search("cls", out=str(out), seed=0, overrides=FAST + [IN_PROCESS, "search.evaluations=2",
                                                              "search.population_init=2"])
    assert not (out / "tensorboard").exists()


def test_without_the_package_a_run_stops_before_it_starts_with_exit_2(tmp_path, monkeypatch, capsys):
    import sys

    from gp_losses.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    code = main(["search", "--task", "cls", "--set", "search.tensorboard=true", "--out", str(tmp_path / "run")])
    assert code == 2 and "pip install 'gp-losses[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
