"""SCOOP's own log, routed to the run directory."""

import logging

import pytest

from gp_losses import parallel


@pytest.fixture
def scoop_logger(monkeypatch):
    """SCOOP's logger as its launcher sets it up: a console handler, propagating to root."""
    monkeypatch.setattr(parallel, "scoop_running", lambda: True)
    log = logging.getLogger("SCOOPLogger")
    saved = (list(log.handlers), log.propagate, log.level)
    console = logging.StreamHandler()
    log.handlers[:] = [console]
    log.propagate, log.level = True, logging.WARNING
    yield log
    for handler in log.handlers:
        handler.close()
    log.handlers[:], log.propagate, log.level = saved


def test_scoops_log_goes_to_a_file_and_the_terminal_gets_one_short_line(tmp_path, scoop_logger, capsys, caplog):
    payload = "Lost track of future (b'127.0.0.1:1', 5):_run_group((" + "{'config': ...}, " * 200 + "))"
    parallel.route_scoop_log(str(tmp_path / "first.log"))
    parallel.route_scoop_log(str(tmp_path / "scoop.log"))  # a second run in the same process
    scoop_logger.warning(payload)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("SCOOP warning: Lost track of future")
    assert len(err[0]) < 200 and str(tmp_path / "scoop.log") in err[0]
    assert payload in (tmp_path / "scoop.log").read_text()
    assert (tmp_path / "first.log").read_text() == ""
    assert "Lost track" not in caplog.text  # not propagated to the root logger's handlers
    assert sum(isinstance(h, logging.FileHandler) for h in scoop_logger.handlers) == 1


def test_without_scoop_the_log_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "scoop_running", lambda: False)
    before = list(logging.getLogger("SCOOPLogger").handlers)
    parallel.route_scoop_log(str(tmp_path / "scoop.log"))
    assert logging.getLogger("SCOOPLogger").handlers == before and not (tmp_path / "scoop.log").exists()
