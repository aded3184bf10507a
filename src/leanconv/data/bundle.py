"""A train/test pair with what a model needs to know about it.

``train`` and ``test`` are any sources :mod:`.batches` reads: the built-in data are
``TensorDataset``s, a user's are their own ``DataLoader``s, datasets or lists of batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .batches import DataError, first_inputs, holdout, num_samples

__all__ = ["DataBundle", "DataError"]


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

    def class_counts(self) -> tuple[list[int], list[int]] | None:
        """Images per class in the training and the test split, where the labels are known
        without reading the images (built-in data, image folders); else ``None``."""
        if not self.num_classes:
            return None
        counts = []
        for source in (self.train, self.test):
            labels = _labels(source)
            if labels is None:
                return None
            counts.append([labels.count(c) for c in range(self.num_classes)])
        return counts[0], counts[1]

    def check_counts(self, least_train: int = 2, least_test: int = 1) -> None:
        """Refuse data a compression cannot be judged on: fewer than two classes, or a class with
        fewer than ``least_train`` training or ``least_test`` test images (numbers named)."""
        if self.num_classes is not None and self.num_classes < 2:
            raise DataError(
                f"{self.name} has {self.num_classes} class: accuracy on it says nothing (every "
                "prediction is right); give data with at least two classes"
            )
        counts = self.class_counts()
        if counts is None:
            return
        names = self.preprocessing.get("classes") or [str(c) for c in range(self.num_classes)]
        for split, have, least in (("training", counts[0], least_train),
                                   ("test", counts[1], least_test)):  # fmt: skip
            few = [f"{names[c]} ({n})" for c, n in enumerate(have) if n < least]
            if few:
                raise DataError(
                    f"{self.name}: too few {split} images in class(es) {', '.join(few[:5])}; "
                    f"each class needs at least {least} {split} image(s) to calibrate, fine-tune "
                    "and measure on"
                )

    def describe(self) -> str:
        sizes = [num_samples(s) for s in (self.train, self.test)]
        counts = f"{sizes[0]} train / {sizes[1]} test images, " if None not in sizes else ""
        classes = f"{self.num_classes} classes, " if self.num_classes else ""
        return f"{self.name}: {counts}{classes}{'x'.join(map(str, self.input_shape))}"


def _labels(source) -> list[int] | None:
    dataset = source if not hasattr(source, "dataset") else source.dataset
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) > 1:
        return [int(v) for v in tensors[1].reshape(-1).tolist()]
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, list):
        return [int(v) for v in labels]
    return None
