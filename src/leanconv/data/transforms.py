"""Normalisation and light augmentation on tensors (no torchvision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalise(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Per-channel standardisation of (N, C, H, W) images with the *training* statistics:
    ``(x - mean_train) / std_train`` for ``train`` and each of ``others``."""
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True) if len(train) > 1 else torch.ones_like(mean)
    std = std.clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


class Augment:
    """Random crop after zero padding (``pad`` pixels) and, optionally, horizontal flips.

    Flips are off by default: they change the meaning of digits and text. Deterministic for a
    given ``torch.Generator``.
    """

    def __init__(self, pad: int = 2, flip: bool = False):
        if pad < 0:
            raise ValueError(f"Augment: pad={pad} must be >= 0")
        self.pad, self.flip = pad, flip

    def __call__(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, _, h, w = batch.shape
        if self.pad:
            padded = F.pad(batch, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            rows = (dy[:, None] + torch.arange(h)[None, :]).to(batch.device)  # (n, h)
            cols = (dx[:, None] + torch.arange(w)[None, :]).to(batch.device)  # (n, w)
            idx = torch.arange(n, device=batch.device)[:, None, None]
            batch = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]
            batch = batch.permute(0, 3, 1, 2)
        if self.flip:
            flip = torch.rand(n, generator=generator) < 0.5
            batch = torch.where(flip.to(batch.device)[:, None, None, None], batch.flip(-1), batch)
        return batch.contiguous()
