"""Imports only go down the layers of docs/engine.md's architecture, inside functions too:
primitives and tasks import nothing of the engine but its leaf core and the task contract,
and naming one built-in task imports no other task's dependencies."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    {"cli", "main", "__main__", "api", "testing"}, {"commands", "export"}, {"driver"}, {"final"}, {"retrain"}, {"report"}, {"journal"},
    {"evolution", "warmstart"}, {"scheduler"}, {"recorder"}, {"streams"}, {"jobs"}, {"workers"}, {"cluster"},
    {"sandbox"}, {"sandboxed"}, {"context"},
    {"space", "rejection", "evaluate", "variation", "trees", "torch_loss", "formula", "population", "fidelity", "pareto",
     "plot", "rundir", "tracking"},
    {"messages", "outcomes", "config"}, {"contract"}, {"core"},
]
"""gp_losses' modules from the top down (docs/engine.md); a module imports from its own layer
or those below."""
LAYER = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def imports(path: Path):
    """Every module `path` imports, at its top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            if node.module == "gp_losses":
                yield from (f"gp_losses.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def layer(module: str):
    parts = module.split(".")
    return LAYER.get(parts[1]) if parts[0] == "gp_losses" and len(parts) > 1 else None


def test_every_engine_module_has_a_layer():
    names = {p.stem for p in (ROOT / "gp_losses").glob("*.py")} - {"__init__"}
    assert names | {"core"} == set(LAYER)


def test_no_engine_module_imports_one_above_it():
    upward = []
    for path in (ROOT / "gp_losses").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for target in imports(path):
            if layer(module) is not None and layer(target) is not None and layer(target) < layer(module):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_primitives_and_tasks_import_only_the_core_and_the_contract_of_the_engine():
    allowed = {"primitives": ("gp_losses.core",), "tasks": ("gp_losses.core", "gp_losses.contract")}
    wrong = []
    for package, ok in allowed.items():
        for path in (ROOT / package).rglob("*.py"):
            wrong += [f"{path.relative_to(ROOT)} -> {t}" for t in imports(path)
                      if t.startswith("gp_losses") and not t.startswith(ok)]
    assert wrong == []
    core = [t for path in (ROOT / "gp_losses" / "core").glob("*.py") for t in imports(path)
            if t.startswith(("gp_losses", "primitives", "tasks")) and not t.startswith("gp_losses.core")]
    assert core == []


def test_resolving_cls_imports_no_detection_model():
    code = ("import sys; from gp_losses.context import resolve_task; resolve_task('cls'); "
            "print('torchvision.models.detection' in sys.modules, 'tasks.det' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_task_whose_import_fails_says_so_again_on_the_next_lookup(tmp_path, monkeypatch):
    """A built-in registered by path (say det without torchvision) fails with its import error
    each time it is asked for, never as an unknown name the second time."""
    import pytest

    from gp_losses.core.errors import InputError
    from gp_losses.core.registry import Registry

    (tmp_path / "broken_task.py").write_text("import no_such_dependency\nTask = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("task")
    registry.register_path("broken", "broken_task:Task")
    for _ in range(2):
        with pytest.raises(InputError, match="cannot import module 'broken_task'.*no_such_dependency"):
            registry.get("broken")
    (tmp_path / "broken_task.py").write_text("Task = 1\n")
    sys.modules.pop("broken_task", None)
    assert registry.get("broken") == 1 and "broken" in registry
