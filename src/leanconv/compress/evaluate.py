"""Judging a model on data: the metric (higher is better) and the checks before any work.

A :class:`Metric` is what the pipeline reports before and after and what the accuracy budget
searches on. ``"accuracy"`` (top-1) and ``"top5"`` read class logits (the model returns an
``(N, K)`` tensor); any callable ``metric(model, loader) -> float`` serves every other task
(segmentation, detection heads, regression), with the model's outputs compared as plain tensors
(:mod:`.outputs`). Built-in metrics are in percent; a callable's unit is its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..data.batches import iterate
from ..errors import LeanconvError, first_line
from .outputs import logits_of


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def to_model(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Inputs on the model's device, floating inputs in its dtype (integer inputs kept)."""
    device, dtype = _device_dtype(model)
    return x.to(device, dtype) if x.is_floating_point() else x.to(device)


def batches(dataset, batch_size: int, order: torch.Tensor | None = None):
    """``(inputs, targets)`` batches of any data source (:func:`leanconv.data.batches.iterate`)."""
    return iterate(dataset, batch_size, order)


@torch.no_grad()
def topk_accuracy(model: nn.Module, data, k: int = 1, batch_size: int = 256) -> float:
    """Top-``k`` accuracy in percent: a sample counts when its target is among the ``k`` largest
    logits."""
    was = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in iterate(data, batch_size, where="test data"):
            logits = logits_of(model(to_model(x, model))).cpu()
            y = torch.as_tensor(y).reshape(-1).cpu()
            top = logits.topk(min(k, logits.shape[1]), dim=1).indices
            correct += int((top == y[:, None]).any(1).sum())
            total += len(y)
    finally:
        model.train(was)
    return 100.0 * correct / max(1, total)


def accuracy(model: nn.Module, data, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent."""
    return topk_accuracy(model, data, 1, batch_size)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable  # fn(model, data) -> float, higher is better
    logits: bool  # the model returns class logits (KL sensitivities, distillation, chance check)
    top: int = 1  # for class logits: a sample counts when its target is in the top ``top``
    unit: str = "%"

    def __call__(self, model: nn.Module, data) -> float:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                value = self.fn(model, data)
        finally:
            model.train(was)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise LeanconvError(
                f"metric {self.name!r} returned {type(value).__name__}, not a number"
            ) from None
        if value != value:
            raise LeanconvError(f"metric {self.name!r} returned NaN")
        return value

    def chance(self, num_classes: int | None) -> float | None:
        """The metric of a model that guesses uniformly (class logits only)."""
        if not self.logits or not num_classes:
            return None
        return 100.0 * min(self.top, num_classes) / num_classes


ACCURACY = Metric("accuracy", lambda m, d: topk_accuracy(m, d, 1), logits=True)
TOP5 = Metric("top5", lambda m, d: topk_accuracy(m, d, 5), logits=True, top=5)


def resolve_metric(metric) -> Metric:
    """``"accuracy"``, ``"top5"``, a :class:`Metric`, or a callable ``(model, loader) -> float``."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        known = {"accuracy": ACCURACY, "top1": ACCURACY, "top5": TOP5}
        if metric not in known:
            raise LeanconvError(
                f"metric={metric!r} is not 'accuracy' or 'top5'; pass a callable "
                "metric(model, loader) -> float for another measure"
            )
        return known[metric]
    if callable(metric):
        name = getattr(metric, "__name__", type(metric).__name__)
        return Metric(name, metric, logits=False, unit="")
    raise LeanconvError(f"metric must be 'accuracy', 'top5' or a callable, not {metric!r}")


def _channels_hint(said: str, x: torch.Tensor) -> str:
    """What to do when the model takes one channel and was given three, or the reverse (torch's
    convolution says ``expected input[...] to have 1 channels, but got 3 channels``); the same
    check serves the command line and the Python API, so the hint names both."""
    if x.dim() == 4 and x.shape[1] == 3 and "to have 1 channels" in said:
        return (
            ". The model takes one channel: read the images as grayscale (--grayscale), or in "
            "Python with image_folder(..., grayscale=True)"
        )
    if x.dim() == 4 and x.shape[1] == 1 and "to have 3 channels" in said:
        return ". The model takes three channels: read the images in colour (without --grayscale)"
    return ""


def check_outputs(model: nn.Module, data, metric: Metric, num_classes: int | None) -> None:
    """Raise before any work when the model's output does not suit the metric: class logits
    ``(N, K)`` for accuracy, with ``K`` the data's number of classes when it is known."""
    x, y = next(iter(iterate(data, 2, where="test data")))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(to_model(x, model))
    except Exception as exc:
        said = first_line(exc)
        raise LeanconvError(
            f"the model fails on the data's first batch {tuple(x.shape)} ({x.dtype}): "
            f"{said}{_channels_hint(said, x)}"
        ) from None
    finally:
        model.train(was)
    if not metric.logits:
        return
    logits = logits_of(out)
    if num_classes is not None and logits.shape[1] != num_classes:
        raise LeanconvError(
            f"the model outputs {logits.shape[1]} logits but the data has {num_classes} "
            "classes; build it with num_classes matching the data"
        )
    labels = isinstance(y, torch.Tensor) and y.numel() and not y.is_floating_point()
    if num_classes is None and labels and (y.max() >= logits.shape[1] or y.min() < 0):
        raise LeanconvError(
            f"the data's targets run from {int(y.min())} to {int(y.max())} but the model "
            f"outputs {logits.shape[1]} logits"
        )
