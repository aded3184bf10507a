"""The ``--data SPEC`` parser: a bundle from what a user typed."""

from __future__ import annotations

from .batches import DataError
from .bundle import DataBundle
from .cifar import cifar
from .digits import digits
from .folders import image_folder

__all__ = ["load_data"]


def load_data(spec: str, size: int | None = None, seed: int = 0, **preprocessing) -> DataBundle:
    """``digits`` (built in, at ``size`` x ``size``, 32 by default), ``folder:PATH`` (one
    sub-folder per class, optional train/ and test/ splits; ``size`` and ``preprocessing`` as
    :func:`leanconv.data.folders.image_folder` takes them), ``cifar10:PATH`` or ``cifar100:PATH``
    (python-format batches)."""
    kind, _, path = spec.partition(":")
    if kind == "digits" and not path:
        return digits(size=size or 32, seed=seed)
    if kind == "folder" and path:
        return image_folder(path, size, seed=seed, **preprocessing)
    if kind in ("cifar10", "cifar100") and path:
        return cifar(path, classes=int(kind[5:]))
    raise DataError(f"--data {spec!r} is not digits, folder:PATH, cifar10:PATH or cifar100:PATH")
