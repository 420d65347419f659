"""Tasks for engine tests: the digits task with a fault injected into one evaluation."""

import time
from dataclasses import dataclass

from gp_losses.evolution import evaluation_seed
from tasks.base import TrainResult
from tasks.cls import DigitsTask


class FaultyDigits(DigitsTask):
    """Raises, returns NaN, or hangs for the evaluation numbered `fault_eval` of a run with
    seed `run_seed`; trains normally otherwise."""

    name = "faulty"

    @dataclass(frozen=True)
    class Options(DigitsTask.Options):
        fault: str = ""
        fault_eval: int = -1
        run_seed: int = 0

    def train(self, loss, seed):
        opt = self.options
        if opt.fault and seed == evaluation_seed(opt.run_seed, opt.fault_eval):
            if opt.fault == "raise":
                raise RuntimeError("injected failure")
            if opt.fault == "nan":
                return TrainResult(float("nan"), {"accuracy": float("nan")}, 1)
            if opt.fault == "hang":
                time.sleep(3600)
        return super().train(loss, seed)
