"""Tasks for engine tests: the digits task with a fault injected where a test asks for one."""

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gp_losses.core.errors import InputError
from gp_losses.evolution import evaluation_seed
from gp_losses.contract import TrainResult
from tasks.cls import DigitsTask


class FaultyDigits(DigitsTask):
    """Digits, with `fault` injected into the proxy evaluation numbered `fault_eval` of a run
    with seed `run_seed` (every evaluation when `fault_eval` is -2), or into the training with
    seed `fault_seed` (when it is not -1):

    raise, nan (a NaN score), score (7.5), metric (a metric that is a string), hang, exit
    (os._exit), segv (SIGSEGV). With `fault_dir` set, the fault happens once only: its first
    occurrence leaves a file there. `setup_fault`: `raise` (bad input) or `slow` (3 s).
    `probe_fault`: the probe metric raises. `train_s`: every training sleeps that long first
    (a training longer than a rejection job's time box)."""

    name = "faulty"

    @dataclass(frozen=True)
    class Options(DigitsTask.Options):
        fault: str = ""
        fault_eval: int = -1
        fault_seed: int = -1
        run_seed: int = 0
        fault_dir: str = ""
        setup_fault: str = ""
        probe_fault: bool = False
        probe_nan: bool = False
        train_s: float = 0.0

    def setup(self):
        if self.options.setup_fault == "raise":
            raise InputError("digits data: '/no/such/digits' not found")
        if self.options.setup_fault == "slow":
            time.sleep(3)
        super().setup()

    def probe_metric(self, outputs, targets):
        if self.options.probe_fault:
            raise RuntimeError("injected probe failure")
        if self.options.probe_nan:
            return torch.full_like(super().probe_metric(outputs, targets), float("nan"))
        return super().probe_metric(outputs, targets)

    def _faulty(self, seed):
        opt = self.options
        if not opt.fault:
            return False
        if opt.fault_seed != -1:
            if seed != opt.fault_seed:
                return False
        elif opt.fault_eval != -2 and seed != evaluation_seed(opt.run_seed, opt.fault_eval):
            return False
        if opt.fault_dir:
            marker = Path(opt.fault_dir) / "fault"
            if marker.exists():
                return False
            marker.touch()
        return True

    def train(self, loss, seed):
        time.sleep(self.options.train_s)
        if not self._faulty(seed):
            return super().train(loss, seed)
        fault = self.options.fault
        if fault == "raise":
            raise RuntimeError("injected failure")
        if fault == "nan":
            return TrainResult(float("nan"), {"accuracy": float("nan")}, 1)
        if fault == "score":
            return TrainResult(7.5, {"accuracy": 7.5}, 1)
        if fault == "metric":
            return TrainResult(0.5, {"accuracy": "high"}, 1)
        if fault == "hang":
            time.sleep(3600)
        if fault == "exit":
            os._exit(3)
        if fault == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        raise ValueError(f"unknown fault {fault!r}")


class ValOnlyDigits(DigitsTask):
    """Digits without a test split, as a user's task may be."""

    name = "valonly"
    splits = ("train", "val")


class TwoMetricDigits(DigitsTask):
    """Digits scored two ways: `accuracy`, and `confidence`, the mean softmax probability of
    the true class (per sample in the protocol too): for searches with two objectives."""

    name = "two_metric"
    metrics = ("accuracy", "confidence")

    def probe_metric(self, outputs, targets):
        if self.metric == "accuracy":
            return super().probe_metric(outputs, targets)
        probs = outputs["cls"].flatten(1).softmax(dim=1)
        return probs.gather(1, targets["cls"][:, None])[:, 0]

    def _network(self, seed):
        self._net = super()._network(seed)  # trained in place by DigitsTask.train
        return self._net

    def train(self, loss, seed):
        result = super().train(loss, seed)
        if result.status != "ok":
            return result
        with torch.no_grad():
            probs = self._net(self.x_eval).softmax(dim=1)
        confidence = probs.gather(1, self.y_eval[:, None]).mean().item()
        metrics = {"accuracy": result.metrics["accuracy"], "confidence": confidence}
        return TrainResult(score=metrics[self.metric], metrics=metrics, iterations=result.iterations)
