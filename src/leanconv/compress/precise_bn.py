"""Precise batch-norm statistics: the running mean and variance recomputed for the current weights.

A BatchNorm layer evaluates with running statistics, an exponential moving average
(``momentum`` 0.1) of the batch statistics seen in training. While the weights change fast the
average lags them: after ``S`` steps the statistics of older weights still hold ``0.9^S`` of it.
On a small training set that lag is the whole story: a user's ResNet-style model, decomposed and
fine-tuned on 180 images (3 steps per epoch), evaluated at 33.33 % (chance) after every epoch,
and at 66.67 %, 96.67 % and 100 % once its statistics were recomputed.

:func:`recompute` is PreciseBN (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", section 3):
a forward pass without gradients over up to :data:`SAMPLES` training inputs with only the
BatchNorm layers in training mode (dropout and the rest stay in evaluation mode) and
``momentum=None``, so that each layer's statistics become the equal-weight average of the
batches' statistics instead of a decaying one. Layers without running statistics
(``track_running_stats=False``) and models without BatchNorm are left alone at no cost.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import batches as source
from .evaluate import to_model

#: Training inputs the statistics are recomputed from: 4,096 (64 batches of 64) estimate a
#: channel's mean and variance within about 1-2 % (Wu & Johnson 2021, figure 2: ~10^4 samples
#: suffice for ImageNet) at the cost of a fraction of an epoch's forward passes.
SAMPLES = 4096


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recompute(model: nn.Module, data, batch_size: int = 64, samples: int = SAMPLES) -> int:
    """Replace the running statistics of every BatchNorm layer in ``model`` by their average
    over ``samples`` inputs of ``data`` (a dataset's in a fixed random order, batches of
    ``batch_size``; a loader's first ones, in its batches); returns the number of inputs used.
    Batches of one input are skipped (a BatchNorm1d cannot take their statistics); with no
    batch left, or no such layer, the statistics stay as they were and 0 is returned. The
    model's training flags are restored afterwards."""
    norms = batch_norms(model)
    if not norms or samples <= 0:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in norms}
    before = {bn: [b.clone() for b in _stats(bn)] for bn in norms}
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches
        bn.train()
    seen = 0
    try:
        for x, _ in source.iterate(data, batch_size, _order(data), where="training data"):
            x = x[: samples - seen]
            if len(x) < 2:
                continue
            model(to_model(x, model))
            seen += len(x)
            if seen >= samples:
                break
    except BaseException:
        seen = 0
        raise
    finally:
        if seen == 0:
            for bn, stats in before.items():
                for b, old in zip(_stats(bn), stats, strict=True):
                    b.copy_(old)
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, training in modes.items():
            m.train(training)
    return seen


def _order(data) -> torch.Tensor | None:
    """A dataset's samples in a fixed random order (a dataset sorted by class would otherwise
    give the first classes' statistics); a loader keeps its own."""
    if not source.is_dataset(data) or isinstance(data, DataLoader):
        return None
    return torch.randperm(len(data), generator=torch.Generator().manual_seed(0))


def _stats(bn: nn.modules.batchnorm._BatchNorm) -> list[torch.Tensor]:
    return [bn.running_mean, bn.running_var, bn.num_batches_tracked]
