"""Configuration: malformed input is reported with its dotted key, exit 2, before any work."""

import pytest

from gp_losses import config as cfg
from gp_losses.cli import main
from gp_losses.context import build_context, load_run_config
from gp_losses.parallel import device_for

MALFORMED = [
    (["--set", "search.evaluatons=3"], "search.evaluatons", "did you mean 'search.evaluations'"),
    (["--set", "search.population_init=abc"], "search.population_init", "an integer"),
    (["--set", "search.tournament=0"], "search.tournament", "> 0"),
    (["--set", "protocol.momentum=1.5"], "protocol.momentum", "<= 1"),
    (["--set", "proxy.device=gpu"], "proxy.device", "one of auto, cpu, cuda"),
    (["--set", "task.options.hiden=3"], "task.options.hiden", "did you mean 'task.options.hidden'"),
    (["--set", "task.metric=auc"], "task.metric", "accuracy"),
    (["--set", "protocol=5"], "protocol", "a mapping"),
    (["--set", "search.operators=[nope_mod:Op]"], "search.operators", "cannot import module"),
    (["--set", "search.depth=9", "--set", "search.height_limit=5"], "search.depth", "height_limit"),
    (["--set", "search.rejection=maybe"], "search.rejection", "true or false"),
    (["--set", "seed=1.5"], "seed", "an integer"),
]


@pytest.mark.parametrize("argv, key, expected", MALFORMED)
def test_malformed_config_exits_2_naming_the_key_and_leaves_no_run_dir(tmp_path, capsys, argv, key, expected):
    out = tmp_path / "run"
    code = main(["search", "--task", "cls", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert key in err and expected in err
    assert not out.exists()


@pytest.mark.parametrize("text, expected", [
    ("search:\n  evaluations: 3\nsearch:\n  batch: 2\n", "duplicate key 'search'"),
    ("search: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("protocol:\n  eta: 0.5\n  eta: 0.6\n", "duplicate key 'eta'"),
])
def test_malformed_yaml_file(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "run"
    assert main(["search", "--task", "cls", "--config", str(path), "--out", str(out)]) == 2
    assert expected in capsys.readouterr().err and not out.exists()


def test_unknown_task_and_missing_config_file(tmp_path, capsys):
    assert main(["search", "--task", "clss", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'cls'" in capsys.readouterr().err
    assert main(["search", "--task", "cls", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_run_config_defaults_and_overrides():
    config = load_run_config("cls", None, ["search.evaluations=7", "search.rejection=false"])
    assert config.search.evaluations == 7 and config.search.rejection is False
    assert config.search.population_init == 20 and config.protocol.eta == 0.6
    assert (config.protocol.steps, config.protocol.lr) == (100, 0.005)  # runs/cls.yaml
    paper = cfg.RunConfig().protocol  # the code's defaults are the paper's (Appendix A)
    assert (paper.steps, paper.lr, paper.momentum, paper.early_exit) == (500, 1e-3, 0.9, False)
    context = build_context(config)
    assert context.metric == "accuracy" and context.options.hidden == 32
    again = cfg.load(None, [], cfg.to_dict(config))
    assert again == config  # the written config.yaml reproduces the run's config


def test_an_existing_run_dir_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["search", "--task", "cls", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err and (out / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("kind, index, gpus, expected", [
    ("auto", 0, 0, "cpu"), ("auto", 3, 0, "cpu"), ("cpu", 1, 4, "cpu"),
    ("auto", 0, 1, "cuda:0"), ("auto", 5, 1, "cuda:0"),
    ("auto", 0, 4, "cuda:0"), ("auto", 1, 4, "cuda:1"), ("auto", 6, 4, "cuda:2"),
    ("cuda", 3, 2, "cuda:1"),
])
def test_workers_spread_over_gpus(kind, index, gpus, expected):
    assert device_for(kind, index, gpus) == expected


def test_cuda_without_a_gpu_is_an_error():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        device_for("cuda", 0, 0)


def test_local_index_claims_distinct_slots_per_run():
    import uuid

    from gp_losses.parallel import local_index

    run_id = f"test-{uuid.uuid4().hex}"
    assert [local_index(run_id) for _ in range(3)] == [0, 1, 2]
