"""progress.png and `gp-losses plot`: the pictures show the logbook's numbers; a time budget."""

import csv

import pytest

from gp_losses.cli import main
from gp_losses.plot import figure, read_logbook
from gp_losses.driver import run_search
from search_helpers import FAST, IN_PROCESS


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("plot")
    for seed in (0, 1):
        run_search("cls", out=str(base / f"seed{seed}"), seed=seed,
                   overrides=FAST + [IN_PROCESS, "search.compare_baselines=false", "search.plot=true"])
    return base / "seed0", base / "seed1"


def test_a_search_draws_progress_png_from_its_logbook(two_runs):
    run = two_runs[0]
    assert (run / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(run / "logbook.csv") as fh:
        rows = list(csv.DictReader(fh))
    fig = figure([("run", read_logbook(run))])
    score, counts = fig.axes
    top5 = score.lines[0]
    assert list(top5.get_xdata()) == [float(r["evaluations"]) for r in rows]
    assert list(top5.get_ydata()) == pytest.approx([float(r["top5"]) for r in rows], nan_ok=True)
    labels = [line.get_label() for line in counts.lines]
    assert "explored" in labels and "reused" in labels and "invalid" in labels
    explored = counts.lines[labels.index("explored")]
    assert list(explored.get_ydata()) == [float(r["explored"]) for r in rows]
    rejected = [label for label in labels if label.startswith("rejected: ")]
    assert rejected and all(any(float(r[f"rejected_{lab[10:]}"]) for r in rows) for lab in rejected)


def test_plot_overlays_runs_and_refuses_bad_input(tmp_path, two_runs, capsys):
    assert main(["plot", *map(str, two_runs), "-o", str(tmp_path / "both.png"), "--x", "seconds"]) == 0
    assert (tmp_path / "both.png").read_bytes()[:4] == b"\x89PNG"
    fig = figure([(p.name, read_logbook(p)) for p in two_runs], x="seconds")
    assert [line.get_label() for line in fig.axes[0].lines] == ["seed0", "seed1"]
    capsys.readouterr()
    assert main(["plot", str(two_runs[0]), "-o", str(tmp_path / "both.txt")]) == 2
    assert ".png, .pdf or .svg" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.png")]) == 2
    assert "no logbook.csv" in capsys.readouterr().err


def test_a_time_budget_ends_the_search_after_the_batch_that_spends_it(tmp_path):
    summary = run_search("cls", out=str(tmp_path / "run"), seed=0,
                         overrides=FAST + [IN_PROCESS, "search.max_seconds=0.001",
                                           "search.compare_baselines=false", "search.plot=false"])
    assert summary["status"] == "finished" and summary["evaluations"] == 2  # one batch of 2
    assert not (tmp_path / "run" / "progress.png").exists()


def test_a_picture_that_cannot_be_drawn_never_stops_a_search(tmp_path, monkeypatch, caplog):
    import gp_losses.recorder as recorder

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder, "write_progress", broken)
    summary = run_search("cls", out=str(tmp_path / "run"), seed=0,
                         overrides=FAST + [IN_PROCESS, "search.compare_baselines=false", "search.plot=true"])
    assert summary["status"] == "finished" and summary["evaluations"] == 10
    assert len(calls) == 1 and caplog.text.count("progress.png not drawn") == 1
