"""A train/test pair with what a model needs to know about it, and the ``--data SPEC`` parser.

``train`` and ``test`` are any sources :mod:`.batches` reads: the built-in data are
``TensorDataset``s, a user's are their own ``DataLoader``s, datasets or lists of batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .batches import DataError, first_inputs, holdout, num_samples

__all__ = ["DataBundle", "DataError", "load_data"]


@dataclass
class DataBundle:
    name: str
    train: object
    test: object
    num_classes: int | None = None  # None: not a classification task, or not known
    input_shape: tuple[int, ...] | None = None  # (C, H, W) of one sample; None: read from test
    preprocessing: dict = field(default_factory=dict)  # how the inputs were made (CLI flags)

    def __post_init__(self) -> None:
        if self.input_shape is None:
            self.input_shape = tuple(first_inputs(self.test, 1, where="test data").shape[1:])
        self.input_shape = tuple(self.input_shape)

    def holdout(self, fraction: float, seed: int = 0) -> DataBundle:
        """A bundle that trains on ``1 - fraction`` of this training set and tests on the rest
        (random, fixed by ``seed``): for choices that must not look at the test split."""
        train, test = holdout(self.train, fraction, seed)
        return DataBundle(f"{self.name} (training split {1 - fraction:.0%}/{fraction:.0%})",
                          train, test, self.num_classes, self.input_shape,
                          self.preprocessing)  # fmt: skip

    def describe(self) -> str:
        sizes = [num_samples(s) for s in (self.train, self.test)]
        counts = f"{sizes[0]} train / {sizes[1]} test images, " if None not in sizes else ""
        classes = f"{self.num_classes} classes, " if self.num_classes else ""
        return f"{self.name}: {counts}{classes}{'x'.join(map(str, self.input_shape))}"


def load_data(spec: str, size: int | None = None, seed: int = 0, **preprocessing) -> DataBundle:
    """``digits`` (built in, at ``size`` x ``size``, 32 by default), ``folder:PATH`` (one
    sub-folder per class, optional train/ and test/ splits; ``size`` and ``preprocessing`` as
    :func:`leanconv.data.folders.image_folder` takes them), ``cifar10:PATH`` or ``cifar100:PATH``
    (python-format batches)."""
    from .cifar import cifar
    from .digits import digits
    from .folders import image_folder

    kind, _, path = spec.partition(":")
    if kind == "digits" and not path:
        return digits(size=size or 32, seed=seed)
    if kind == "folder" and path:
        return image_folder(path, size, seed=seed, **preprocessing)
    if kind in ("cifar10", "cifar100") and path:
        return cifar(path, classes=int(kind[5:]))
    raise DataError(f"--data {spec!r} is not digits, folder:PATH, cifar10:PATH or cifar100:PATH")
