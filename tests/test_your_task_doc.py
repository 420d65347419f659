"""docs/your-task.md runs as written: its code blocks, in order, in an empty directory.

A ```python block that starts with `# file: NAME` is written to NAME; any other ```python
block runs; a ```console block's `$ ` lines run in a shell. All of it becomes one script
(files written, shell lines run, at their place in the text), run by this interpreter in a
fresh directory, as a user following the page would.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "your-task.md"
BLOCK = re.compile(r"^```(python|console)\n(.*?)^```$", re.M | re.S)


def blocks(text: str):
    for match in BLOCK.finditer(text):
        yield match.group(1), match.group(2)


def script(text: str) -> str:
    """The page's blocks as one Python script."""
    lines = ["import subprocess", "from pathlib import Path", ""]
    for kind, body in blocks(text):
        first, _, rest = body.partition("\n")
        if kind == "python" and first.startswith("# file: "):
            lines.append(f"Path({first[len('# file: '):].strip()!r}).write_text({body!r})")
        elif kind == "python":
            lines.append(body)
        else:
            for command in (line[2:] for line in body.splitlines() if line.startswith("$ ")):
                lines.append(f"subprocess.run({command!r}, shell=True, check=True)")
    return "\n".join(lines) + "\n"


def test_the_walkthrough_has_what_it_promises():
    text = DOC.read_text()
    kinds = [kind for kind, _ in blocks(text)]
    files = [body.partition("\n")[0] for kind, body in blocks(text) if body.startswith("# file: ")]
    assert kinds.count("console") >= 1 and len(kinds) >= 8
    assert files == ["# file: digits_task.py", "# file: test_digits_task.py", "# file: shapes_task.py"]
    for name in ("digits_task.py", "shapes_task.py"):      # "about 40 lines of user code"
        body = next(b for _, b in blocks(text) if b.startswith(f"# file: {name}"))
        assert len([line for line in body.splitlines() if line.strip()]) <= 40, name
    code = "\n".join(body for _, body in blocks(text))
    for needle in ("retrain(top=1, seeds=2)", "result.export(", "result.tree()", "assert_close(a.grad, b.grad)"):
        assert code.count(needle) == 2, needle                 # once for each task


def test_the_walkthrough_runs(tmp_path):
    (tmp_path / "walkthrough.py").write_text(script(DOC.read_text()))
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "walkthrough.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    out = done.stdout
    assert "passed" in out                                     # the contract suite ran and passed
    assert re.search(r"^\s+ce  accuracy \d\.\d{4} ± \d\.\d{4}$", out, re.M)
    assert re.search(r"^\s+ce  mIoU \d\.\d{4} ± \d\.\d{4}$", out, re.M)
    assert re.search(r"^test accuracy 0\.\d+", out, re.M)
    for run in ("digits", "shapes"):
        assert (tmp_path / "runs" / run / "retrain").is_dir()
        assert (tmp_path / f"{run}_loss.py").is_file()
