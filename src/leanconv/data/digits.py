"""scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes), the built-in data.

Upsampled to ``size x size`` by bilinear interpolation, replicated to ``channels`` channels so the
CIFAR-style reference models take them, standardised with the training split's statistics, and
split into train and test sets by a fixed, stratified permutation (``test_fraction``, ``seed``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from .bundle import DataBundle
from .transforms import normalise


def digits(
    size: int = 32, channels: int = 3, test_fraction: float = 0.25, seed: int = 0
) -> DataBundle:
    from sklearn.datasets import load_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"digits: test_fraction={test_fraction} must be in (0, 1)")
    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(raw.target, dtype=torch.long)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.expand(-1, channels, -1, -1).contiguous()
    g = torch.Generator().manual_seed(seed)
    test_idx, train_idx = [], []
    for c in range(10):  # stratified: the same fraction of every class in the test split
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        cut = round(len(idx) * test_fraction)
        test_idx.append(idx[:cut])
        train_idx.append(idx[cut:])
    train_i, test_i = torch.cat(train_idx), torch.cat(test_idx)
    x_train, x_test = normalise(images[train_i], images[test_i])
    return DataBundle(
        "digits",
        TensorDataset(x_train, labels[train_i]),
        TensorDataset(x_test, labels[test_i]),
        10,
        (channels, size, size),
    )
