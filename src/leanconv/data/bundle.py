"""A train/test pair with what a model needs to know about it, and the ``--data SPEC`` parser."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ..errors import LeanconvError


class DataError(LeanconvError, ValueError):
    """Data that cannot be used: missing, empty, unreadable, or inconsistent."""


@dataclass
class DataBundle:
    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]  # (C, H, W) of one sample

    def holdout(self, fraction: float, seed: int = 0) -> DataBundle:
        """A bundle that trains on ``1 - fraction`` of this training set and tests on the rest
        (random, fixed by ``seed``): for choices that must not look at the test split."""
        n = len(self.train)
        held = max(1, min(n - 1, round(n * fraction)))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        parts = (order[held:], order[:held])
        tensors = getattr(self.train, "tensors", None)
        if tensors is not None:
            train, test = (TensorDataset(*(t[idx] for t in tensors)) for idx in parts)
        else:
            train, test = (Subset(self.train, idx.tolist()) for idx in parts)
        return DataBundle(f"{self.name} (training split {1 - fraction:.0%}/{fraction:.0%})",
                          train, test, self.num_classes, self.input_shape)  # fmt: skip

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.train)} train / {len(self.test)} test images, "
            f"{self.num_classes} classes, {'x'.join(map(str, self.input_shape))}"
        )


def load_data(spec: str, size: int = 32, seed: int = 0) -> DataBundle:
    """``digits`` (built in), ``folder:PATH`` (one sub-folder per class, optional train/ and
    test/ splits), ``cifar10:PATH`` or ``cifar100:PATH`` (python-format batches)."""
    from .cifar import cifar
    from .digits import digits
    from .folders import image_folder

    kind, _, path = spec.partition(":")
    if kind == "digits" and not path:
        return digits(size=size, seed=seed)
    if kind == "folder" and path:
        return image_folder(path, size=size, seed=seed)
    if kind in ("cifar10", "cifar100") and path:
        return cifar(path, classes=int(kind[5:]))
    raise DataError(f"--data {spec!r} is not digits, folder:PATH, cifar10:PATH or cifar100:PATH")
