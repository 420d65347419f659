"""Task templates: a task of one's own from a model factory, datasets and a metric.

Two shapes cover most users:

- `LabelTask`: class labels per sample (classification) or per pixel (semantic segmentation),
  with `ignore_index`. The network returns logits (N, C), (N, C, L) or (N, C, H, W); the
  targets are class indices (N,), (N, L) or (N, H, W). Loss inputs: `yhat` = softmax
  probabilities and `y` = one-hot targets, both multiplied by the mask of labelled elements
  (as the built-in seg task feeds its search).
- `DenseTask`: dense regression targets of the network's own shape (heatmaps, depth maps).
  Loss inputs: the raw outputs `yhat` and the targets `y`, both multiplied by the sample's
  weight when the data gives one (as the built-in pose task masks unlabelled joints).

A template task is a subclass, so that the engine (and every SCOOP worker and sandbox) builds
it by name, as any task:

    class Digits(LabelTask):
        name = "digits"
        metrics = ("accuracy",)                  # built-in names, callables, or {name: callable}
        data = {"train": train_set, "val": val_set, "test": test_set}   # or zero-argument factories

        def model(self):                         # called after the training's seed is set
            return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

or, in one call, `Digits = LabelTask.define("digits", model=..., train=..., val=..., test=...)`.
`gp-losses search --task mymodule:Digits` and `gp_losses.search(Digits)` then search it.

The probe follows the paper (B training samples through the randomly initialized network; each
sample scored by the search metric alone); training draws seeded batches with replacement,
steps the optimizer (Adam at `lr` unless `optimizer()` says otherwise) and the optional
`scheduler()` once per iteration, and scores the split the engine asks for. What a template
cannot check by type it checks in `setup()`, before any candidate: a dataset that does not
yield (input, target) pairs of the right shapes, a model output without a class dimension, a
metric that does not return a number in [0, 1] — each an InputError naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from gp_losses.contract import Branch, LossFn, Probe, Task, TrainResult
from gp_losses.core.errors import InputError
from gp_losses.core.options import option
from primitives import CLASSIFICATION_INPUTS, ONE, Y, YHAT_REAL
from tasks.dataset import Draws, not_finite

SPLITS = ("train", "val", "test")
CE = "Neg(Mul(y, Log(yhat)))"
MSE = "Square(Add(yhat, Neg(y)))"


@dataclass(frozen=True)
class TemplateOptions:
    """What every template task's options hold (the `task.options` section of a run config)."""

    iterations: int = option(300, 1, help="proxy training length in batches")
    batch_size: int = option(32, 1)
    lr: float = option(1e-3, 0, lo_open=True, help="the default optimizer's (Adam) learning rate")
    eval_batch: int = option(256, 1, help="batch size when scoring a split")
    loader: str = option("memory", choices=("memory", "stream"),
                         help="memory: every sample read once and held as tensors; stream: a DataLoader")
    loader_workers: int = option(0, 0, help="DataLoader processes with loader: stream")
    train_limit: int = option(0, 0, help="use only the first N training samples (0 = all)")
    val_limit: int = option(0, 0, help="likewise for the scored split (val or test)")


# --- metrics ------------------------------------------------------------------------------------
class Metric:
    """A metric of a split, built up batch by batch (`update`, `value`), and its value per
    sample (`per_sample`: shape (N,)). Outputs and targets come in the network's own shapes."""

    def __init__(self, task: "TemplateTask") -> None:
        self.task = task

    def update(self, outputs: torch.Tensor, targets: Any) -> None:
        raise NotImplementedError

    def value(self) -> float:
        raise NotImplementedError

    def per_sample(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        values = []
        for i in range(len(outputs)):
            one = type(self)(self.task)
            one.update(outputs[i:i + 1], _index(targets, slice(i, i + 1)))
            values.append(one.value())
        return torch.tensor(values, dtype=torch.float32)


class Accuracy(Metric):
    """The share of labelled elements (samples or pixels) whose arg-max class is the label."""

    def __init__(self, task: "TemplateTask") -> None:
        super().__init__(task)
        self.correct = self.labelled = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        keep = targets != self.task.ignore_index
        self.correct += int(((outputs.argmax(dim=1) == targets) & keep).sum())
        self.labelled += int(keep.sum())

    def value(self) -> float:
        return self.correct / self.labelled if self.labelled else 1.0  # nothing to get wrong


class MeanIoU(Metric):
    """Mean over classes of intersection over union, from the confusion matrix of the labelled
    elements; a class absent from both prediction and labels is left out of the mean."""

    def __init__(self, task: "TemplateTask") -> None:
        super().__init__(task)
        self.confusion = torch.zeros(task.classes, task.classes, dtype=torch.long)

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        keep = targets != self.task.ignore_index
        pred, label = outputs.argmax(dim=1)[keep].cpu(), targets[keep].cpu()
        c = self.task.classes
        self.confusion += torch.bincount(label * c + pred, minlength=c * c).reshape(c, c)

    def value(self) -> float:
        tp = self.confusion.diag().double()
        union = self.confusion.sum(0).double() + self.confusion.sum(1).double() - tp
        present = union > 0
        return float((tp[present] / union[present]).mean()) if bool(present.any()) else 1.0


class PCK(Metric):
    """Heatmap peaks: the share of (sample, channel) pairs with a target peak whose predicted
    arg-max lies within `pck_radius` pixels of the target's (a channel of weight 0, or whose
    target is all 0, does not count)."""

    def __init__(self, task: "TemplateTask") -> None:
        super().__init__(task)
        self.hits = self.counted = 0

    def update(self, outputs: torch.Tensor, targets: Any) -> None:
        hits, counted = pck_counts(outputs, targets[0], targets[1], self.task.options.pck_radius)
        self.hits += hits
        self.counted += counted

    def value(self) -> float:
        return self.hits / self.counted if self.counted else 1.0


class R2(Metric):
    """The coefficient of determination 1 - SSE / SST over every (weighted) element, clipped to
    [0, 1] (0: no better than predicting the mean)."""

    def __init__(self, task: "TemplateTask") -> None:
        super().__init__(task)
        self.sums = torch.zeros(4, dtype=torch.float64)  # w, w*y, w*y^2, w*(y - yhat)^2

    def update(self, outputs: torch.Tensor, targets: Any) -> None:
        target, weight = targets
        y, yhat = target.double(), outputs.double()
        w = torch.ones_like(y) if weight is None else _broadcast(weight, y).double()
        self.sums += torch.stack([w.sum(), (w * y).sum(), (w * y * y).sum(), (w * (y - yhat) ** 2).sum()]).cpu()

    def value(self) -> float:
        w, wy, wyy, sse = self.sums.tolist()
        sst = wyy - wy * wy / w if w > 0 else 0.0
        if sst <= 0:
            return 1.0 if sse <= 0 else 0.0
        return min(max(1.0 - sse / sst, 0.0), 1.0)


class Callable_(Metric):
    """A user's metric `fn(outputs, targets) -> float`, called once on the whole split's
    outputs and targets (concatenated)."""

    fn: ClassVar[Callable[..., Any]]
    name: ClassVar[str]

    def __init__(self, task: "TemplateTask") -> None:
        super().__init__(task)
        self.outputs: List[torch.Tensor] = []
        self.targets: List[Any] = []

    def update(self, outputs: torch.Tensor, targets: Any) -> None:
        self.outputs.append(outputs.detach().cpu())
        self.targets.append(_to(targets, "cpu"))

    def value(self) -> float:
        targets = self.targets[0] if len(self.targets) == 1 else _cat(self.targets)
        outputs = torch.cat(self.outputs)
        if isinstance(targets, tuple) and targets[1] is None:  # a dense task's unweighted data
            targets = targets[0]
        value = type(self).fn(outputs, targets)
        return check_metric_value(self.name, value)


def check_metric_value(name: str, value: Any) -> float:
    """`value` as a float when it is a real number in [0, 1] (a 0-d tensor too), else InputError."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise InputError(f"metric {name!r} returned {value!r} ({type(value).__name__}): a metric returns "
                         "a number in [0, 1], higher is better")
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise InputError(f"metric {name!r} returned {value!r}: a metric returns a number in [0, 1], "
                         "higher is better (an error rate e: return 1 - e)")
    return float(value)


def pck_counts(outputs: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
               radius: float) -> Tuple[int, int]:
    """(hits, counted) of PCK over (N, C, *spatial) heatmaps."""
    n, c = outputs.shape[:2]
    spatial = outputs.shape[2:]
    counted = target.reshape(n, c, -1).amax(dim=2) > 0
    if weight is not None:
        counted &= _broadcast(weight, target).reshape(n, c, -1).amax(dim=2) > 0
    pred = _coords(outputs.reshape(n, c, -1).argmax(dim=2), spatial)
    true = _coords(target.reshape(n, c, -1).argmax(dim=2), spatial)
    near = ((pred - true) ** 2).sum(dim=-1).sqrt() <= radius
    return int((near & counted).sum()), int(counted.sum())


def _coords(flat: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Flat indices -> (..., len(spatial)) float coordinates."""
    coords = []
    for size in reversed(spatial):
        coords.append(flat % size)
        flat = flat // size
    return torch.stack(coords[::-1], dim=-1).double() if coords else flat[..., None].double()


LABEL_METRICS: Dict[str, type] = {"accuracy": Accuracy, "miou": MeanIoU}
DENSE_METRICS: Dict[str, type] = {"pck": PCK, "r2": R2}


# --- tensors --------------------------------------------------------------------------------------
def _index(targets: Any, index: Any) -> Any:
    if isinstance(targets, tuple):
        return tuple(None if t is None else t[index] for t in targets)
    return targets[index]


def _to(targets: Any, device: Any) -> Any:
    if isinstance(targets, tuple):
        return tuple(None if t is None else t.to(device) for t in targets)
    return targets.to(device)


def _cat(parts: List[Any]) -> Any:
    if isinstance(parts[0], tuple):
        return tuple(None if parts[0][k] is None else torch.cat([p[k] for p in parts]) for k in range(len(parts[0])))
    return torch.cat(parts)


def _broadcast(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A weight of shape (N, C) or like's own, broadcast to `like`."""
    while weight.dim() < like.dim():
        weight = weight[..., None]
    return weight.expand_as(like).to(like.dtype)


def as_4d(tensor: torch.Tensor) -> torch.Tensor:
    """(N, C), (N, C, L) or (N, C, H, W) -> (N, C, H, W): the shape a loss tree takes."""
    return tensor.reshape(*tensor.shape, *([1] * (4 - tensor.dim())))


def labels_as_3d(labels: torch.Tensor) -> torch.Tensor:
    """(N,), (N, L) or (N, H, W) -> (N, H, W)."""
    return labels.reshape(*labels.shape, *([1] * (3 - labels.dim())))


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    return f"{type(value).__name__} {value!r}"[:120]


# --- helpers of the class definitions --------------------------------------------------------------
def _metric_table(cls: type, spec: Any) -> Dict[str, type]:
    """{name: Metric class} from `metrics`: built-in names, callables, or {name: callable|name}."""
    if isinstance(spec, (str, bytes)) or callable(spec):
        spec = (spec,)
    items = list(spec.items()) if isinstance(spec, Mapping) else [(None, m) for m in spec]
    table: Dict[str, type] = {}
    for name, metric in items:
        if isinstance(metric, str):
            if metric not in cls.builtin_metrics:
                raise InputError(f"task {cls.__name__}: unknown metric {metric!r}; built-in: "
                                 f"{', '.join(cls.builtin_metrics)}, or give a callable fn(outputs, targets)")
            table[name or metric] = cls.builtin_metrics[metric]
        elif isinstance(metric, type) and issubclass(metric, Metric):
            table[name or metric.__name__.lower()] = metric
        elif callable(metric):
            label = name or getattr(metric, "__name__", "metric")
            table[label] = type(f"Metric_{label}", (Callable_,), {"fn": staticmethod(metric), "name": label})
        else:
            raise InputError(f"task {cls.__name__}: metric {metric!r} is neither a built-in name "
                             f"({', '.join(cls.builtin_metrics)}) nor a callable fn(outputs, targets)")
    if not table:
        raise InputError(f"task {cls.__name__}: no metric given")
    return table


def _method(fn: Callable) -> Callable:
    """A user's factory as a method of the task class (the task is not passed to it)."""
    def method(self, *args):
        return fn(*args)
    method.__doc__ = getattr(fn, "__doc__", None)
    return method


def with_defaults(options_cls: type, defaults: Mapping[str, Any], module: Optional[str] = None) -> type:
    """A subclass of the frozen dataclass `options_cls` with other defaults (ranges kept);
    `module`: where it is defined (the task's module, for pickling its instances there)."""
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    unknown = [k for k in defaults if k not in fields]
    if unknown:
        raise InputError(f"options: {unknown[0]!r} is not an option; options: {', '.join(fields)}")
    changed = [(k, fields[k].type, dataclasses.field(default=v, metadata=fields[k].metadata))
               for k, v in defaults.items()]
    made = dataclasses.make_dataclass(options_cls.__name__, changed, bases=(options_cls,), frozen=True)
    made.__module__ = module or options_cls.__module__
    return made


def _class_name(name: str) -> str:
    text = "".join(part.capitalize() for part in "".join(c if c.isalnum() else " " for c in name).split())
    return text if text and text[0].isalpha() else f"Task{text}"


DEFINE_ATTRIBUTES = ("classes", "ignore_index", "sample_metrics", "collate", "baselines", "description")
"""The class attributes `define(**attributes)` may set (those the template has)."""


# --- the templates --------------------------------------------------------------------------------
class TemplateTask(Task):
    """What both templates share: data, seeded networks, the optimizer, the training loop."""

    splits = SPLITS
    Options = TemplateOptions
    data: ClassVar[Mapping[str, Any]] = {}
    """{split: a Dataset, a DataLoader (its dataset and collate_fn are used) or a zero-argument
    callable returning either}; `train` and `val` are needed, `test` lets a retrain score
    held-out data."""
    collate: ClassVar[Optional[Callable]] = None
    """The DataLoaders' collate_fn (None: torch's default, or a given DataLoader's)."""
    metric_table: ClassVar[Dict[str, type]] = {}
    """Metric name -> Metric class; made from `metrics` when the subclass is defined."""
    builtin_metrics: ClassVar[Dict[str, type]] = {}
    sample_metrics: ClassVar[Mapping[str, Callable[..., Any]]] = {}
    """Optional {metric name: fn(outputs, targets) -> (N,) tensor}: the per-sample metric the
    probe uses for a callable metric (default: the metric of each sample alone)."""
    items: ClassVar[int] = 2
    """Members of a data item: (input, target), or a dense task's (input, target[, weight])."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "metrics" in cls.__dict__ or not cls.metric_table:
            cls.metric_table = _metric_table(cls, cls.__dict__.get("metrics", cls.metrics))
            cls.metrics = tuple(cls.metric_table)
        given = cls.__dict__.get("data")
        if given is not None:
            missing = [s for s in ("train", "val") if s not in given]
            unknown = [s for s in given if s not in SPLITS]
            if missing or unknown:
                raise InputError(f"task {cls.__name__}: data needs splits train and val (test optional), "
                                 f"got {sorted(given)}")
            cls.splits = tuple(s for s in SPLITS if s in given)

    @classmethod
    def define(cls, name: str, model: Callable[[], torch.nn.Module], train: Any, val: Any,
               test: Any = None, metrics: Any = None, optimizer: Optional[Callable] = None,
               scheduler: Optional[Callable] = None, options: Optional[Mapping[str, Any]] = None,
               **attributes: Any) -> type:
        """A template task class in one call: `model()` a new network; `optimizer(params)` and
        `scheduler(optimizer, iterations)` optional; `options` new defaults of the task's
        options (`{"iterations": 500}`); other keyword arguments set class attributes
        (`classes`, `ignore_index`, `sample_metrics`, `collate`). Assign the result to a
        module-level name: the engine finds the task by it (`--task module:Name`)."""
        body: Dict[str, Any] = {"name": name, "data": {k: v for k, v in
                                                       (("train", train), ("val", val), ("test", test))
                                                       if v is not None},
                                "model": _method(model)}
        if metrics is not None:
            body["metrics"] = metrics
        if optimizer is not None:
            body["optimizer"] = _method(optimizer)
        if scheduler is not None:
            body["scheduler"] = _method(scheduler)
        known = [a for a in DEFINE_ATTRIBUTES if hasattr(cls, a)]
        unknown = [a for a in attributes if a not in known and not a.startswith("__")]
        if unknown:
            from gp_losses.core.errors import did_you_mean

            raise InputError(f"{cls.__name__}.define: unknown argument {unknown[0]!r}"
                             + did_you_mean(unknown[0], known) + f"; the class attributes it sets: "
                             f"{', '.join(known)} (options go in options={{...}})")
        caller = sys._getframe(1).f_globals.get("__name__", cls.__module__)
        body.update(attributes)
        body.setdefault("__module__", caller)
        body.setdefault("__qualname__", _class_name(name))
        if options:
            body["Options"] = with_defaults(cls.Options, options, body["__module__"])
            body["Options"].__qualname__ = f"{body['__qualname__']}.Options"
        return type(body["__qualname__"], (cls,), body)

    @classmethod
    def with_options(cls, **defaults: Any) -> type:
        """The task's Options with other defaults: `Options = LabelTask.with_options(iterations=500)`."""
        caller = sys._getframe(1)
        made = with_defaults(cls.Options, defaults, caller.f_globals.get("__name__"))
        owner = getattr(caller.f_code, "co_qualname", "<module>")  # a class body's: the class
        if not owner.startswith("<"):
            made.__qualname__ = f"{owner}.Options"
        return made

    # --- to implement (or give to define) -------------------------------------------------
    def model(self) -> torch.nn.Module:
        """A new, randomly initialized network (the seed is set before the call)."""
        raise NotImplementedError(f"task {self.name!r}: define model() or give define(model=...)")

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The optimizer of a training: Adam at `options.lr` unless a subclass says otherwise."""
        return torch.optim.Adam(params, lr=self.options.lr)

    def scheduler(self, optimizer: torch.optim.Optimizer, iterations: int) -> Any:
        """An LR scheduler stepped once per iteration, or None (the default: a constant lr)."""
        return None

    # --- data ------------------------------------------------------------------------------
    def setup(self) -> None:
        opt = self.options
        self.spatial: Tuple[int, ...] = ()
        """The output's spatial shape (read at setup from the model's output on two samples)."""
        self.train_set, train_collate = self._dataset("train")
        self.eval_set, eval_collate = self._dataset(self.split)
        self.train_collate = self.collate or train_collate or torch.utils.data.default_collate
        self.eval_collate = self.collate or eval_collate or torch.utils.data.default_collate
        self.n_train = self._size(self.train_set, "train", opt.train_limit)
        self.n_eval = self._size(self.eval_set, self.split, opt.val_limit)
        self.memory: Dict[str, Tuple[Any, ...]] = {}
        if opt.loader == "memory":
            self.memory["train"] = self._read(self.train_set, "train", range(self.n_train), self.train_collate)
            self.memory["eval"] = self._read(self.eval_set, self.split, range(self.n_eval), self.eval_collate)
        first = self._read(self.train_set, "train", range(min(2, self.n_train)), self.train_collate)
        self._check(first, "train")
        if opt.loader == "memory":
            self._check_targets(self.memory["train"], "train")
            self._check_targets(self.memory["eval"], self.split)
        self._check_metrics()

    def _dataset(self, split: str) -> Tuple[Any, Optional[Callable]]:
        source = self.data.get(split)
        if source is None:
            raise InputError(f"task {self.name!r}: no {split!r} data (data: {sorted(self.data)})")
        if callable(source) and not isinstance(source, (torch.utils.data.Dataset, torch.utils.data.DataLoader)):
            source = source()
        if isinstance(source, torch.utils.data.DataLoader):
            return source.dataset, source.collate_fn
        if not hasattr(source, "__getitem__") or not hasattr(source, "__len__"):
            raise InputError(f"task {self.name!r}: the {split!r} data is {_describe(source)}: expected a "
                             "torch Dataset (with __len__ and __getitem__), a DataLoader, or a "
                             "zero-argument callable returning one")
        return source, None

    def _size(self, dataset: Any, split: str, limit: int) -> int:
        n = len(dataset)
        if n < 1:
            raise InputError(f"task {self.name!r}: the {split!r} dataset is empty")
        return min(n, limit) if limit else n

    def _read(self, dataset: Any, split: str, index: Any, collate: Callable) -> Tuple[Any, ...]:
        """The samples `index` of `dataset`, collated: (inputs, targets[, weights])."""
        want = "(input, target)" if self.items == 2 else "(input, target) or (input, target, weight)"
        items = [dataset[i] for i in index]
        own = collate is not torch.utils.data.default_collate  # a given collate makes the pairs
        for i, item in zip(index, items):
            if not own and (not isinstance(item, (tuple, list)) or not 2 <= len(item) <= self.items):
                raise InputError(f"task {self.name!r}: item {i} of the {split!r} dataset is {_describe(item)}: "
                                 f"expected a pair {want}")
        try:
            batch = collate(items)
        except Exception as exc:
            shapes = sorted({tuple(getattr(m, "shape", ())) for item in items[:64] for m in item[:1]})
            raise InputError(f"task {self.name!r}: the {split!r} samples cannot be collated into one batch "
                             f"({type(exc).__name__}: {exc}); input shapes seen: {shapes[:4]}. Make every "
                             "sample the same size in the dataset, give collate=, or use the option "
                             "loader: stream") from None
        if not isinstance(batch, (tuple, list)) or not 2 <= len(batch) <= self.items:
            raise InputError(f"task {self.name!r}: the collated {split!r} batch is {_describe(batch)}: "
                             f"expected {want}")
        return tuple(torch.as_tensor(b) for b in batch)

    def _batches(self, which: str, draws: Any) -> Iterator[Tuple[Any, ...]]:
        """Batches of the train (`draws`: lists of indices) or scored split."""
        dataset, collate = (self.train_set, self.train_collate) if which == "train" else (self.eval_set, self.eval_collate)
        if which in self.memory:
            data = self.memory[which]
            for index in draws:
                index = torch.as_tensor(index)
                yield tuple(d[index] for d in data)
            return
        split = "train" if which == "train" else self.split
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=draws, collate_fn=collate,
                                             num_workers=self.options.loader_workers)
        for batch in loader:
            batch = tuple(torch.as_tensor(b) for b in batch)
            self._check_targets(batch, split)
            yield batch

    def _eval_draws(self) -> List[List[int]]:
        size = self.options.eval_batch
        return [list(range(s, min(s + size, self.n_eval))) for s in range(0, self.n_eval, size)]

    def network(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        net = self.model()
        if not isinstance(net, torch.nn.Module):
            raise InputError(f"task {self.name!r}: model() returned {_describe(net)}, not a torch.nn.Module")
        return net.to(self.device)

    # --- the contract ------------------------------------------------------------------------
    def probe(self, n: int, seed: int) -> Probe:
        self.ensure_setup()
        if self.n_train < n:
            raise InputError(f"task {self.name!r}: the probe needs {n} training samples "
                             f"(protocol.samples), the train split has {self.n_train}")
        gen = torch.Generator().manual_seed(seed)
        index = torch.randperm(self.n_train, generator=gen)[:n].tolist()
        (batch,) = self._batches("train", [index])
        net = self.network(seed).eval()
        with torch.no_grad():
            outputs = net(batch[0].to(self.device))
        targets = self._targets(batch)
        return Probe(outputs={self.branch: as_4d(outputs)}, targets={self.branch: targets},
                     ideal={self.branch: self.ideal(outputs, targets)})

    def probe_metric(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> torch.Tensor:
        out = outputs[self.branch].reshape(self._shape(outputs[self.branch]))
        given = self.sample_metrics.get(self.metric)
        target = self._user_targets(targets[self.branch])
        if given is not None:
            values = torch.as_tensor(given(out, target), dtype=torch.float32).reshape(-1)
        else:
            values = self.metric_table[self.metric](self).per_sample(out, targets[self.branch])
        return values.clamp(0, 1)

    def training_loss(self, loss: LossFn, outputs: torch.Tensor, *targets: Any) -> torch.Tensor:
        """`loss` (a compiled tree) on one batch as training computes it: the network's
        `outputs` and the batch's targets (and weight, for a dense task) through the loss inputs."""
        return loss({self.branch: self.loss_inputs(self.branch, as_4d(outputs), self._targets((None,) + targets))})

    def train(self, loss: LossFn, seed: int) -> TrainResult:
        self.ensure_setup()
        opt = self.options
        net = self.network(seed).train()
        optim = self.optimizer(net.parameters())
        sched = self.scheduler(optim, opt.iterations)
        for batch in self._batches("train", Draws(self.n_train, opt.iterations, opt.batch_size, seed)):
            outputs = net(batch[0].to(self.device))
            value = self.training_loss(loss, outputs, *batch[1:])
            optim.zero_grad()
            value.backward()
            optim.step()
            if sched is not None:
                sched.step()
        net.eval()
        meters = {name: metric(self) for name, metric in self.metric_table.items()}
        with torch.no_grad():
            for batch in self._batches("eval", self._eval_draws()):
                outputs = net(batch[0].to(self.device))
                invalid = not_finite("outputs", [outputs], opt.iterations)
                if invalid:
                    return invalid
                targets = self._targets(batch)
                for meter in meters.values():
                    meter.update(outputs, targets)
        metrics = {name: meter.value() for name, meter in meters.items()}
        return TrainResult(score=metrics[self.metric], metrics=metrics, iterations=opt.iterations)

    # --- checks at setup ---------------------------------------------------------------------
    def _check(self, batch: Tuple[Any, ...], split: str) -> None:
        """The network's output on two training samples fits their targets; every metric
        returns a number in [0, 1] on them."""
        net = self.network(0).eval()
        with torch.no_grad():
            outputs = net(batch[0].to(self.device))
        if not isinstance(outputs, torch.Tensor):
            raise InputError(f"task {self.name!r}: the model returned {_describe(outputs)}: expected one "
                             "tensor of outputs")
        self._check_output(outputs, batch, split)
        self._probe_outputs = (outputs, self._targets(batch))

    def _check_metrics(self) -> None:
        outputs, targets = self._probe_outputs
        for name, metric in self.metric_table.items():
            meter = metric(self)
            try:
                meter.update(outputs, targets)
                check_metric_value(name, meter.value())
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"task {self.name!r}: metric {name!r} failed on the model's outputs "
                                 f"({_describe(outputs)}): {type(exc).__name__}: {exc}") from exc
        self._check_sample_metrics(outputs, targets)

    def _check_sample_metrics(self, outputs: torch.Tensor, targets: Any) -> None:
        """Each metric's per-sample form (the probe's) gives one finite number per sample."""
        out4 = as_4d(outputs)
        for name in self.metric_table:
            saved, self.metric = self.metric, name
            try:
                values = self.probe_metric({self.branch: out4}, {self.branch: targets})
            except Exception as exc:
                given = "sample_metrics[{!r}]".format(name) if name in self.sample_metrics else "its per-sample form"
                raise InputError(f"task {self.name!r}: metric {name!r}: {given} failed on two samples "
                                 f"({type(exc).__name__}: {exc}); give sample_metrics={{{name!r}: "
                                 "fn(outputs, targets) -> tensor (N,)}") from None
            finally:
                self.metric = saved
            if values.shape != (out4.shape[0],) or not torch.isfinite(values).all():
                raise InputError(f"task {self.name!r}: metric {name!r}: the per-sample values on "
                                 f"{out4.shape[0]} samples are {values.tolist()}: expected one finite "
                                 "number per sample")

    def _shape(self, outputs4: torch.Tensor) -> Tuple[int, ...]:
        """The network's own output shape of a 4-D tensor."""
        return (outputs4.shape[0], outputs4.shape[1], *self.spatial)

    # --- per template ------------------------------------------------------------------------
    branch: ClassVar[str] = ""

    def _targets(self, batch: Tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def _user_targets(self, targets: Any) -> Any:
        return targets

    def _check_output(self, outputs: torch.Tensor, batch: Tuple[Any, ...], split: str) -> None:
        raise NotImplementedError

    def _check_targets(self, batch: Tuple[Any, ...], split: str) -> None:
        pass

    def ideal(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        raise NotImplementedError


class LabelTask(TemplateTask):
    """Class labels per sample or per pixel (classification, semantic segmentation)."""

    branch = "labels"
    branches = (Branch("labels", CLASSIFICATION_INPUTS),)
    metrics = ("accuracy",)
    builtin_metrics = LABEL_METRICS
    baselines = {"ce": {"labels": CE}, "mse": {"labels": MSE}}
    classes: ClassVar[int] = 0
    """Classes (the size of the output's dimension 1); 0: read from the model's output."""
    ignore_index: ClassVar[int] = -100
    """The target label of elements left out of the loss and the metrics (torch's default)."""
    loss_inputs_doc = {"labels": "yhat = softmax(logits, dim=1) * m and y = one_hot(target, C) * m, both "
                                 "(N, C, H, W) (logits (N, C) or (N, C, L) get trailing dimensions of 1), "
                                 "where m = (target != ignore_index)[:, None]"}

    @classmethod
    def export_inputs(cls, options: Any) -> Dict[str, Any]:
        return {"kind": "labels", "ignore_index": cls.ignore_index}

    def _targets(self, batch: Tuple[Any, ...]) -> torch.Tensor:
        return batch[1].to(self.device).long()  # uint8 masks, int32 labels: the index type

    def _check_output(self, outputs: torch.Tensor, batch: Tuple[Any, ...], split: str) -> None:
        target = batch[1]
        where = f"task {self.name!r}: the model's output {_describe(outputs)} and the {split!r} targets {_describe(target)}"
        if target.is_floating_point() or target.dtype == torch.bool:
            raise InputError(f"{where}: targets must be integer class indices (torch.long), as "
                             "nn.CrossEntropyLoss takes them")
        if outputs.dim() != target.dim() + 1 or outputs.shape[0] != target.shape[0] or outputs.shape[2:] != target.shape[1:]:
            raise InputError(f"{where}: the output needs a class dimension, shape (N, C, *target.shape[1:]) "
                             f"= {(target.shape[0], 'C', *target.shape[1:])}")
        if outputs.dim() > 4:
            raise InputError(f"{where}: at most two spatial dimensions (N, C, H, W)")
        classes = outputs.shape[1]
        if type(self).classes and classes != type(self).classes:
            raise InputError(f"{where}: the output has {classes} classes, the task says classes = {self.classes}")
        if classes < 2:
            raise InputError(f"{where}: the class dimension (1) has size {classes}; a classifier's logits "
                             "have one entry per class, at least 2")
        self.classes = classes
        self.spatial = tuple(outputs.shape[2:])
        self._check_targets(batch, split)

    def _check_targets(self, batch: Tuple[Any, ...], split: str) -> None:
        target = batch[1]
        bad = target[(target != self.ignore_index) & ((target < 0) | (target >= self.classes))]
        if len(bad):
            raise InputError(f"task {self.name!r}: the {split!r} targets hold label {int(bad[0])}, outside "
                             f"0..{self.classes - 1} and not ignore_index ({self.ignore_index})")

    def loss_inputs(self, branch: str, outputs: torch.Tensor, targets: Any) -> Dict[str, torch.Tensor]:
        return label_inputs(outputs, targets, self.ignore_index)

    def ideal(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labels = labels_as_3d(torch.where(targets == self.ignore_index, 0, targets))
        return 10.0 * F.one_hot(labels, outputs.shape[1]).permute(0, 3, 1, 2).to(outputs.dtype)


def label_inputs(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> Dict[str, torch.Tensor]:
    """The loss inputs of a label task from 4-D logits and integer targets (the exported
    FoundLoss computes the same: tests/gp_losses/test_export.py checks that they agree)."""
    labels = labels_as_3d(target.to(logits.device).long())
    mask = (labels != ignore_index)[:, None].to(logits.dtype)
    onehot = F.one_hot(torch.where(labels == ignore_index, 0, labels), logits.shape[1])
    return {"yhat": logits.softmax(dim=1) * mask, "y": onehot.permute(0, 3, 1, 2).to(logits.dtype) * mask}


class DenseTask(TemplateTask):
    """Dense regression targets of the output's own shape (heatmaps, depth), optionally weighted."""

    branch = "dense"
    branches = (Branch("dense", (YHAT_REAL, Y, ONE)),)
    metrics = ("r2",)
    builtin_metrics = DENSE_METRICS
    baselines = {"mse": {"dense": MSE}, "l1": {"dense": "Abs(Add(yhat, Neg(y)))"}}
    items = 3
    loss_inputs_doc = {"dense": "yhat = output * w and y = target * w, both (N, C, H, W) (outputs (N, C) or "
                                "(N, C, L) get trailing dimensions of 1), where w is the sample's weight "
                                "((N, C) or the output's shape; 1 when the data gives none)"}

    @dataclass(frozen=True)
    class Options(TemplateOptions):
        pck_radius: float = option(2.0, 0, help="PCK: the largest distance of a hit, output pixels")

    @classmethod
    def export_inputs(cls, options: Any) -> Dict[str, Any]:
        return {"kind": "dense"}

    def _targets(self, batch: Tuple[Any, ...]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        weight = batch[2].to(self.device) if len(batch) > 2 else None
        return batch[1].to(self.device), weight

    def _user_targets(self, targets: Any) -> Any:
        return targets[0] if targets[1] is None else targets

    def _check_output(self, outputs: torch.Tensor, batch: Tuple[Any, ...], split: str) -> None:
        target = batch[1]
        where = f"task {self.name!r}: the model's output {_describe(outputs)} and the {split!r} targets {_describe(target)}"
        if outputs.shape != target.shape:
            raise InputError(f"{where}: a dense task's targets have the output's shape")
        if not target.is_floating_point():
            raise InputError(f"{where}: dense targets are floating-point tensors")
        if outputs.dim() < 2 or outputs.dim() > 4:
            raise InputError(f"{where}: outputs are (N, C), (N, C, L) or (N, C, H, W)")
        if len(batch) > 2:
            weight = batch[2]
            if weight.shape not in (target.shape, target.shape[:2]):
                raise InputError(f"task {self.name!r}: the {split!r} weights {_describe(weight)}: expected "
                                 f"shape {tuple(target.shape[:2])} (per channel) or {tuple(target.shape)}")
        self.spatial = tuple(outputs.shape[2:])

    def loss_inputs(self, branch: str, outputs: torch.Tensor, targets: Any) -> Dict[str, torch.Tensor]:
        target, weight = targets
        return dense_inputs(outputs, as_4d(target.to(outputs.device)),
                            None if weight is None else weight.to(outputs.device))

    def ideal(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        return as_4d(targets[0]).to(outputs.dtype)


def dense_inputs(outputs: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The loss inputs of a dense task from 4-D outputs and targets and an optional weight."""
    if weight is None:
        return {"yhat": outputs, "y": target}
    w = _broadcast(as_4d(weight) if weight.dim() > 2 else weight, outputs)
    return {"yhat": outputs * w, "y": target * w}
