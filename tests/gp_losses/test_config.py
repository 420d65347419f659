"""Configuration: malformed input is reported with its dotted key, exit 2, before any work."""

import json
from pathlib import Path

import pytest
import yaml

from gp_losses import config as cfg
from gp_losses.cli import main
from gp_losses.context import build_context, load_run_config
from gp_losses.sandboxed import device_for

ROOT_DIR = Path(__file__).resolve().parents[2]

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
    (["--set", "protocol.eta=.nan"], "protocol.eta", "a finite number"),
    (["--set", "task.options.hidden=-5"], "task.options.hidden", "expected a value >= 1"),
    (["--set", "task.options.lr=0"], "task.options.lr", "expected a value > 0"),
    (["--set", "task.options.eval_size=1797"], "task.options.eval_size", "<= 1697"),
    (["--set", "search.max_failed_share=2"], "search.max_failed_share", "<= 1"),
    (["--set", "task.options.test_size=1250"], "eval_size + test_size", "fewer than 100 of the 1797"),
    (["--set", "retrain.options.iterations=0"], "retrain.options.iterations", ">= 1"),
    (["--set", "retrain.seeds=0"], "retrain.seeds", ">= 1"),
    (["--set", "search.max_seconds=-1"], "search.max_seconds", ">= 0"),
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


def test_cuda_without_a_gpu_is_bad_input():
    from gp_losses.core.errors import InputError

    with pytest.raises(InputError, match="no CUDA device"):
        device_for("cuda", 0, 0)


def test_gpu_slots_are_claimed_once_per_run_and_distinct_between_processes():
    import uuid

    from gp_losses.jobs import WorkerProcess
    from gp_losses.messages import RunSpec

    run_id = f"test-{uuid.uuid4().hex}"
    spec = RunSpec({"proxy": {"device": "auto"}}, run_id)
    one, two, three = WorkerProcess(), WorkerProcess(), WorkerProcess()
    try:
        assert [p.slot(spec) for p in (one, two, three)] == [0, 1, 2]
        assert one.slot(spec) == 0  # claimed once: asked again, the same slot
        assert WorkerProcess().slot(RunSpec({"proxy": {"device": "cpu"}}, run_id)) == 0
    finally:
        for p in (one, two, three):
            p.exit()


def test_numbers_in_scientific_notation_are_numbers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("protocol:\n  lr: 5e-3\nsearch:\n  evaluations: 1E4\nproxy:\n  timeout_s: 1.5e+2\n")
    config = load_run_config("cls", str(path), ["protocol.eta=1e-1", "search.population_init=2E1"])
    assert config.protocol.lr == 0.005 and config.search.evaluations == 10000
    assert config.proxy.timeout_s == 150.0 and config.protocol.eta == 0.1
    assert config.search.population_init == 20 and isinstance(config.search.population_init, int)
    assert cfg.parse_yaml("a: 1.2.3\nb: e5\nc: 1e")["a"] == "1.2.3"  # not numbers stay strings


def test_a_config_file_leaving_keys_out_gets_the_tasks_defaults(tmp_path):
    """Layers: dataclass defaults < runs/<task>.yaml < --config file < --set."""
    path = tmp_path / "short.yaml"
    path.write_text("task:\n  name: pose\n  options:\n    iterations: 50\nsearch:\n  evaluations: 3\n")
    config = load_run_config(None, str(path), ["search.depth=2"])
    options = config.task.options
    assert options["schedule"] == "constant" and options["batch_size"] == 8  # runs/pose.yaml
    assert options["iterations"] == 50 and config.search.evaluations == 3  # the file
    assert config.search.depth == 2 and config.protocol.reject_step == 10  # --set; runs/pose.yaml
    assert config.search.height_limit == 17  # the dataclass default, set by no layer
    again = load_run_config("pose", str(path), [])
    assert again.task.options["schedule"] == "constant"


@pytest.mark.parametrize("override, key, expected", [
    ("task.options.input_height=60", "task.options.input_height", "multiple of 8"),
    ("task.options.stride=3", "task.options.stride", "one of 2, 4, 8"),
    ("task.options.synthetic_train=0", "task.options.synthetic_train", ">= 1"),
    ("task.options.epochs=-1", "task.options.epochs", ">= 0"),
])
def test_pose_options_are_checked_with_their_ranges(override, key, expected):
    with pytest.raises(cfg.ConfigError, match=key) as info:
        load_run_config("pose", None, [override])
    assert expected in str(info.value)


def test_a_config_file_that_names_its_task_needs_no_task_flag(tmp_path, capsys):
    """`gp_losses/main.py --config runs/seg_bf1.yaml`: the file's task.name is the task, laid
    over that task's defaults; a file that names none is bad input, named."""
    path = tmp_path / "digits.yaml"
    path.write_text("task:\n  name: cls\nsearch:\n  evaluations: 2\n  population_init: 2\n")
    out = tmp_path / "run"
    overrides = ["--set", "task.options.iterations=5", "--set", "search.plot=false",
                 "--set", "search.compare_baselines=false", "--set", "proxy.isolate=false"]
    assert main(["search", "--config", str(path), "--out", str(out), *overrides]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["evaluations"] == 2 and yaml.safe_load((out / "config.yaml").read_text())["task"]["name"] == "cls"
    (tmp_path / "none.yaml").write_text("search:\n  evaluations: 2\n")
    assert main(["search", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "r2")]) == 2
    assert "no task given" in capsys.readouterr().err
    assert main(["search"]) == 2 and "--config FILE" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT_DIR).as_posix() for p in (ROOT_DIR / "runs").rglob("*.yaml")))
def test_every_shipped_run_config_loads(path):
    """Each file of runs/ is a valid config over its task's defaults (a key misspelt in one
    would otherwise surface only when someone runs it)."""
    config = load_run_config(None, str(ROOT_DIR / path), [])
    assert config.task.name
    if path == "runs/pose_long.yaml":  # laid over runs/pose.yaml: its proxy, with one rung above it
        assert config.task.options["iterations"] == 1000 and config.fidelity.rungs == ({"iterations": 3000},)
