"""Batches from whatever a user has: a ``DataLoader``, a ``Dataset``, or a re-iterable of batches.

Every step of the pipeline reads data through these functions, so a user's own loader, with its
own transforms, batch size and collate function, goes through unchanged (nothing is resized or
re-normalised). A *source* is one of

- a ``torch.utils.data.DataLoader``: iterated as it is; for training, its shuffling is made
  reproducible by seeding PyTorch's global generator with the epoch's seed (the loader's
  ``RandomSampler`` draws its order from it when it has no generator of its own);
- a map-style ``Dataset`` of ``(input, target)`` samples: read in batches of ``batch_size`` in a
  given index order (a ``TensorDataset`` by slicing its tensors, any other by stacking samples);
- any other re-iterable of ``(inputs, targets)`` batches (a list, an object whose ``__iter__``
  starts again each time). A generator or iterator can be read only once and is refused.

A batch is a tuple or list ``(inputs, targets)``; ``inputs`` is a tensor (the model's one
argument), ``targets`` a tensor or any structure a user's metric or loss understands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from ..errors import LeanconvError


class DataError(LeanconvError, ValueError):
    """Data that cannot be used: missing, empty, unreadable, or inconsistent."""


def is_dataset(source) -> bool:
    """A map-style dataset (indexable, with a length), not a loader or a plain list of batches."""
    return isinstance(source, Dataset) and not isinstance(source, IterableDataset)


def check_source(source, where: str) -> None:
    """Raise :class:`DataError` unless ``source`` can be read more than once."""
    if source is None:
        raise DataError(f"{where}: no data given")
    if isinstance(source, DataLoader | Dataset):
        return
    if isinstance(source, Tensor) or not isinstance(source, Iterable):
        raise DataError(
            f"{where}: {type(source).__name__} is not a DataLoader, a Dataset or an iterable of "
            "(inputs, targets) batches"
        )
    if isinstance(source, Iterator):
        raise DataError(
            f"{where}: a generator or iterator can be read only once, and compressing reads the "
            "data many times; give a DataLoader, a Dataset or a list of batches"
        )


def _pair(batch, where: str) -> tuple[Tensor, object]:
    if isinstance(batch, tuple | list) and len(batch) == 2:
        x, y = batch
        if isinstance(x, Tensor):
            return x, y
        raise DataError(f"{where}: the inputs of a batch are a {type(x).__name__}, not a tensor")
    raise DataError(
        f"{where}: a batch must be a pair (inputs, targets); got a {type(batch).__name__}"
        + (f" of {len(batch)}" if isinstance(batch, tuple | list) else "")
    )


def _stack_targets(ys: list):
    if all(isinstance(y, Tensor) for y in ys):
        return torch.stack(ys)
    if all(isinstance(y, int | float | bool) for y in ys):
        return torch.tensor(ys)
    return ys


def _dataset_batches(dataset: Dataset, batch_size: int, order: Tensor | None) -> Iterator:
    n = len(dataset)
    order = torch.arange(n) if order is None else order
    tensors = getattr(dataset, "tensors", None)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if tensors is not None:
            yield tensors[0][idx], tensors[1][idx]
        else:
            items = [dataset[int(i)] for i in idx]
            xs, ys = zip(*(_pair(item, "dataset sample") for item in items), strict=True)
            yield torch.stack(xs), _stack_targets(list(ys))


def iterate(source, batch_size: int = 64, order: Tensor | None = None, where: str = "data"):
    """Yield ``(inputs, targets)`` batches of ``source``; ``order`` (an index permutation) and
    ``batch_size`` apply to a map-style dataset, a loader or a list keeps its own."""
    if is_dataset(source) and not isinstance(source, DataLoader):
        yield from _dataset_batches(source, batch_size, order)
        return
    for batch in source:
        yield _pair(batch, where)


def epoch(source, batch_size: int, seed: int, rank: int = 0, world: int = 1, where="data",
          generator: torch.Generator | None = None):  # fmt: skip
    """The training batches of one epoch, reproducible from ``seed``: a dataset in a permutation
    drawn from ``generator`` (default: one seeded with ``seed``; rank ``r`` of ``world`` takes
    every ``world``-th sample of it), a loader with PyTorch's global generator seeded with
    ``seed`` first (rank ``r`` takes every ``world``-th batch)."""
    torch.manual_seed(seed)
    if is_dataset(source):
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        order = torch.randperm(len(source), generator=g)[rank::world]
        yield from _dataset_batches(source, batch_size, order)
        return
    for i, batch in enumerate(iterate(source, batch_size, where=where)):
        if i % world == rank:
            yield batch


def num_batches(source, batch_size: int, world: int = 1) -> int:
    """Batches per epoch for one rank (a loader or list without a length is counted)."""
    if is_dataset(source):
        return math.ceil(math.ceil(len(source) / world) / batch_size)
    try:
        n = len(source)
    except TypeError:
        n = sum(1 for _ in source)
    return math.ceil(n / world)


def num_samples(source) -> int | None:
    """The number of samples, where it is known without reading the data."""
    if is_dataset(source):
        return len(source)
    dataset = getattr(source, "dataset", None)
    if is_dataset(dataset):
        return len(dataset)
    return None


def first_inputs(source, n: int, batch_size: int = 64, where: str = "data") -> Tensor:
    """The inputs of the first ``n`` samples (fewer when the source is smaller), one tensor."""
    taken, count = [], 0
    for x, _ in iterate(source, batch_size, where=where):
        taken.append(x[: n - count])
        count += len(taken[-1])
        if count >= n:
            break
    if not taken:
        raise DataError(f"{where}: no batches")
    return torch.cat(taken)


def _loader_like(loader: DataLoader, dataset: Dataset, shuffle: bool | None = None) -> DataLoader:
    """A loader over ``dataset`` with ``loader``'s batch size, collate function and workers."""
    from torch.utils.data import RandomSampler

    if shuffle is None:
        shuffle = isinstance(loader.sampler, RandomSampler)
    return DataLoader(dataset, batch_size=loader.batch_size or 1, shuffle=shuffle,
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      drop_last=loader.drop_last)  # fmt: skip


class _Every:
    """Every batch of ``source`` whose index is (or is not) in ``held``: a split by batches."""

    def __init__(self, source, held: set[int], keep_held: bool):
        self.source, self.held, self.keep_held = source, held, keep_held

    def __iter__(self):
        for i, batch in enumerate(self.source):
            if (i in self.held) == self.keep_held:
                yield batch

    def __len__(self) -> int:
        n = len(self.source)
        inside = sum(1 for i in self.held if i < n)
        return inside if self.keep_held else n - inside


def holdout(source, fraction: float, seed: int = 0) -> tuple[object, object]:
    """``(rest, held)``: ``fraction`` of ``source`` held out at random (fixed by ``seed``), for
    choices that must not look at the test split. A dataset or a loader over one is split by
    samples (the held part read in order); other sources by whole batches, which assumes they
    come in the same order every time."""
    dataset = source if is_dataset(source) else getattr(source, "dataset", None)
    if is_dataset(dataset):
        n = len(dataset)
        held = max(1, min(n - 1, round(n * fraction)))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        parts = (order[held:], order[:held])
        tensors = getattr(dataset, "tensors", None)
        if tensors is not None:
            from torch.utils.data import TensorDataset

            rest, kept = (TensorDataset(*(t[i] for t in tensors)) for i in parts)
        else:
            rest, kept = (Subset(dataset, i.tolist()) for i in parts)
        if source is dataset:
            return rest, kept
        return _loader_like(source, rest), _loader_like(source, kept, shuffle=False)
    n = num_batches(source, 1)
    if n < 2:
        raise DataError("holding out part of the training data needs at least 2 batches")
    held_n = max(1, min(n - 1, round(n * fraction)))
    held = set(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:held_n].tolist())
    return _Every(source, held, False), _Every(source, held, True)
