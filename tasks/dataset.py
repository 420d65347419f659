"""The skeleton that the dataset tasks (seg, det, pose) share.

Their data options (`DataOptions`: a user's directory or the built-in synthetic set, the
splits, limits, the schedule's length, DataLoader settings), where the data is (the synthetic
set is written once into a cache directory, under a lock), the split a task scores, its
DataLoaders, its networks seeded per training, its optimizer, seeded batch draws, and the
check that a trained network's outputs are finite.

A dataset task subclasses `DatasetTask` with `Options` a subclass of `DataOptions` (changing
defaults, adding its own), and implements `synthetic_name`, `write_synthetic`, `build_network`
and `train_size` beside the contract's methods (gp_losses/contract.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional

import torch

from gp_losses.contract import Task, TrainResult
from gp_losses.core.options import option
from tasks.cache import dataset_root


@dataclass(frozen=True)
class DataOptions:
    """What every dataset task's options hold (a task's `Options` subclasses it)."""

    data_root: str = ""            # a directory in the task's layout; "" = built-in synthetic data
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    cache_dir: str = ""            # where synthetic data is written ("" = ~/.cache/gp_losses)
    synthetic_train: int = option(600, 1)
    synthetic_val: int = option(200, 1)
    synthetic_test: int = option(200, 1)
    synthetic_seed: int = option(0, 0, 2 ** 32 - 1)
    synthetic_size: int = option(96, 32, 4096, help="side of the synthetic images, pixels")
    train_limit: int = option(0, 0, help="use only the first N training samples (0 = all)")
    val_limit: int = option(0, 0, help="likewise for the scored split (val or test)")
    iterations: int = option(600, 1, help="proxy training length, unless epochs > 0")
    epochs: float = option(0.0, 0)
    batch_size: int = option(8, 1)
    loader_workers: int = option(0, 0, help="DataLoader processes; 0: in the training process")
    pin_memory: bool = False       # DataLoader pin_memory, for CUDA


class DatasetTask(Task):
    """A task over a dataset on disk: the engine's contract plus the shared skeleton."""

    Options = DataOptions
    collate: Optional[Callable] = None
    """The DataLoaders' collate_fn (None: torch's default)."""

    # --- to implement -------------------------------------------------------------------
    def synthetic_name(self) -> str:
        """The cache directory of the built-in synthetic data: its name says what shaped it."""
        raise NotImplementedError

    def write_synthetic(self, root: Path) -> Any:
        """Write the built-in synthetic data under `root` unless it is there."""
        raise NotImplementedError

    def build_network(self) -> torch.nn.Module:
        """A new, randomly initialized proxy network (the seed is set before the call)."""
        raise NotImplementedError

    def train_size(self) -> int:
        """Training samples a pass over the data holds (for `epochs`)."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------
    def root(self) -> Path:
        """Where the data is: `data_root`, or the synthetic data's directory in the cache."""
        return dataset_root(self.options, self.synthetic_name(), self.write_synthetic)

    @property
    def scored_split(self) -> str:
        """The data split that `train()` scores: `val_split` in a search, `test_split` in a retrain."""
        return self.options.test_split if self.split == "test" else self.options.val_split

    def loader(self, dataset: Any, **kwargs: Any) -> torch.utils.data.DataLoader:
        """A DataLoader with the task's loader options (pin_memory on CUDA only)."""
        opt = self.options
        return torch.utils.data.DataLoader(dataset, num_workers=opt.loader_workers, collate_fn=self.collate,
                                           pin_memory=opt.pin_memory and self.device.type == "cuda", **kwargs)

    def network(self, seed: int) -> torch.nn.Module:
        """The proxy network of a training (or probe) with `seed`, on the task's device."""
        torch.manual_seed(seed)
        return self.build_network().to(self.device)

    def iterations(self) -> int:
        return schedule_length(self.options, self.train_size())

    def optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """Adam, or SGD with momentum and weight decay where the task's `optimizer` option
        says so (pose has none: Adam)."""
        opt = self.options
        if getattr(opt, "optimizer", "adam") == "adam":
            return torch.optim.Adam(params, lr=opt.lr)
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)


def not_finite(what: str, tensors: Iterable[torch.Tensor], iterations: int) -> Optional[TrainResult]:
    """TrainResult.invalid when one of the trained network's `tensors` (its outputs: `what`)
    holds a non-finite value, else None: a metric computed from NaN would score by chance."""
    if all(bool(torch.isfinite(t).all()) for t in tensors):
        return None
    return TrainResult.invalid(f"the trained network's {what} are not finite", iterations)


def schedule_length(options: Any, samples: int) -> int:
    """A proxy's training iterations: `options.epochs` passes over `samples` training samples
    in batches of `options.batch_size` when epochs > 0, else `options.iterations`."""
    if options.epochs > 0:
        return max(1, math.ceil(options.epochs * samples / options.batch_size))
    return options.iterations


class Draws(torch.utils.data.Sampler):
    """`batches` batches of `batch_size` indices drawn uniformly with replacement from `n`,
    fixed by `seed`: the same batches whether the data is in memory or streamed."""

    def __init__(self, n: int, batches: int, batch_size: int, seed: int) -> None:
        self.n, self.batches, self.batch_size, self.seed = n, batches, batch_size, seed

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[List[int]]:
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.batches):
            yield torch.randint(0, self.n, (self.batch_size,), generator=gen).tolist()
