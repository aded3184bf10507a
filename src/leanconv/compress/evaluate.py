"""Accuracy of a classifier on a dataset, in batches, without gradients."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import LeanconvError


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def batches(dataset: Dataset, batch_size: int, order: torch.Tensor | None = None):
    """Yield ``(x, y)`` batches of a ``TensorDataset``-like dataset (index order ``order``)."""
    n = len(dataset)
    order = torch.arange(n) if order is None else order
    tensors = getattr(dataset, "tensors", None)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if tensors is not None:
            yield tensors[0][idx], tensors[1][idx]
        else:
            items = [dataset[int(i)] for i in idx]
            yield torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def check_classes(model: nn.Module, dataset: Dataset, num_classes: int) -> None:
    """Raise if the model's output does not have one logit per class of the data."""
    device, dtype = _device_dtype(model)
    x, _ = next(batches(dataset, 1))
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x.to(device, dtype))
    model.train(was)
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise LeanconvError(
            f"the model outputs {tuple(out.shape[1:])} logits but the data has {num_classes} "
            "classes; build it with num_classes matching the data"
        )


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent."""
    device, dtype = _device_dtype(model)
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in batches(dataset, batch_size):
        pred = model(x.to(device, dtype)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    model.train(was)
    return 100.0 * correct / max(1, total)
