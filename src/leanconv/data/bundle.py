"""A train/test pair with what a model needs to know about it, and the ``--data SPEC`` parser."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

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
