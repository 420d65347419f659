"""The task contract: what the engine needs from a task, and nothing more.

A task names its loss branches (`Branch`) and metrics, gives probe samples for the loss-rejection
protocol (paper Eq. 5-6), maps raw network outputs to loss inputs, scores predictions, and
trains its proxy network with a given loss. `setup()` runs lazily, once per worker process
(as EvoTorch's `Problem._prepare()`), so a task object is cheap to create and to ship.

Tasks are deterministic: the same seed gives the same probe and the same proxy result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple

import torch

from primitives import CLASSIFICATION_INPUTS, Terminal


@dataclass(frozen=True)
class Branch:
    """A loss branch: its name, its input terminals and its weight in the total (Eq. 4)."""

    name: str
    inputs: Tuple[Terminal, ...] = CLASSIFICATION_INPUTS
    weight: float = 1.0

    @property
    def input_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.inputs)


LossFn = Callable[[Mapping[str, Mapping[str, torch.Tensor]]], torch.Tensor]
"""A compiled loss: {branch: {input name: tensor}} -> scalar (paper Eq. 4)."""


@dataclass
class Probe:
    """B training samples as a randomly initialized network sees them (paper section 3.2).

    `outputs[branch]` are the raw network outputs that the protocol optimizes directly;
    `ideal[branch]` are outputs that reproduce the targets, used for the other branches while
    one branch is being checked; `targets[branch]` is whatever `loss_inputs` and `probe_metric`
    need (labels, heatmaps, boxes).
    """

    outputs: Dict[str, torch.Tensor]
    targets: Dict[str, Any]
    ideal: Dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a proxy training returns. `score` is the search metric, a finite number in [0, 1];
    `metrics` maps each metric name to a finite number. The engine checks both: anything else
    is recorded as status `error`, never as a score. A training whose network ends with
    non-finite outputs is `TrainResult.invalid(...)`: no score at all."""

    score: Optional[float]
    metrics: Dict[str, float]
    iterations: int
    status: str = "ok"
    error: Optional[str] = None

    @classmethod
    def invalid(cls, message: str, iterations: int) -> "TrainResult":
        return cls(None, {}, iterations, status="invalid", error=message)


class Task:
    """Base class of a task. Subclasses set the class attributes and implement the methods.

    `Options` is a frozen dataclass of the task's own settings (the `task.options` section of a
    run config); the engine validates the YAML against it like any other config section.
    """

    name: ClassVar[str] = ""
    branches: ClassVar[Tuple[Branch, ...]] = ()
    metrics: ClassVar[Tuple[str, ...]] = ()
    """Metric names; each is a search target (`task.metric`), the first is the default."""
    baselines: ClassVar[Dict[str, Dict[str, str]]] = {}
    """Hand-designed losses by name: {baseline: {branch: expression}}; an expression may be the
    name of one of `python_losses`."""
    python_losses: ClassVar[Dict[str, Dict[str, Callable[[Mapping[str, torch.Tensor]], torch.Tensor]]]] = {}
    """Baselines that no tree expresses, written in Python: {branch: {name: function}}. A
    function maps the branch inputs to the branch loss, a scalar (at the scale it trains
    with, as Eq. 3's mean over N·H·W is for a tree). Trained and retrained by name (`--loss NAME`); never searched or exported."""
    splits: ClassVar[Tuple[str, ...]] = ("train", "val")
    """The task's data splits. `train` trains the proxy network and gives the probe samples;
    `val` scores a search's evaluations; a task that lists `test` can score held-out data that
    no search has seen (`gp-losses retrain`), with `Task(..., split="test")`."""
    fixed: ClassVar[Dict[str, str]] = {}
    """Branches left out of the search (`search.branches`) and the expressions they train
    with, set by gp_losses.context.partial_task; {} when every branch is searched."""
    loss_inputs_doc: ClassVar[Dict[str, str]] = {}
    """For each branch, how the task maps network outputs and targets to the loss inputs
    (softmax, one-hot, masks), in words: an exported loss's docstring repeats it."""

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, options: Optional[Any] = None, metric: Optional[str] = None,
                 device: str = "cpu", split: str = "val") -> None:
        self.options = options if options is not None else self.Options()
        self.metric = metric or self.metrics[0]
        if self.metric not in self.metrics:
            raise ValueError(f"task {self.name!r} has no metric {self.metric!r}; metrics: {self.metrics}")
        if split == "train" or split not in self.splits:
            raise ValueError(f"task {self.name!r} cannot score split {split!r}; splits: {self.splits}")
        self.split = split
        """The split that `train()` scores: `val` in a search, `test` in a retrain."""
        self.device = torch.device(device)
        self._ready = False

    @classmethod
    def export_inputs(cls, options: Any) -> Optional[Dict[str, Any]]:
        """How an exported loss takes what a user's training loop has (gp_losses/export.py):
        `{"kind": "labels", "ignore_index": K}` for logits and class indices (the loss inputs
        are softmax and one-hot, masked where the target is K), `{"kind": "dense"}` for outputs,
        targets and an optional weight (both multiplied by it); None (the default) where the
        task's transform is its own: the export then takes the loss inputs themselves."""
        return None

    @classmethod
    def check_options(cls, options: Any) -> None:
        """Raise gp_losses.core.options.ConfigError for option values the types cannot rule out
        (called when a run is configured, before any work starts). Optional."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    # --- to implement -----------------------------------------------------------------
    def setup(self) -> None:
        """Load or generate data, once per process. Optional."""

    def probe(self, n: int, seed: int) -> Probe:
        """`n` training samples and the outputs of a network initialized with `seed`."""
        raise NotImplementedError

    def loss_inputs(self, branch: str, outputs: torch.Tensor, targets: Any) -> Dict[str, torch.Tensor]:
        """The loss inputs of `branch` ({name: (N, C, H, W) tensor}) from raw outputs."""
        raise NotImplementedError

    def probe_metric(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> torch.Tensor:
        """The search metric (`self.metric`) of each probe sample, shape (B,), values in [0, 1].
        A search with several objectives sets `self.metric` to each in turn; a task whose
        per-sample score is one for every metric returns it for each (the same gain)."""
        raise NotImplementedError

    def train(self, loss: LossFn, seed: int) -> TrainResult:
        """Train the proxy network from scratch with `loss` and evaluate it on `self.split`.

        The engine wraps `loss` so that a non-finite value stops training (status `invalid`)
        and enforces the time limit; the task only trains and scores.
        """
        raise NotImplementedError

    # --- helpers ------------------------------------------------------------------------
    def branch_names(self) -> Tuple[str, ...]:
        return tuple(b.name for b in self.branches)
