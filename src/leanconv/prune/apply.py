"""Pruning the inner channels of a model's convolution pairs, refitted on calibration data.

For each pair (:mod:`.pairs`) given a channel count, the consumer's input Gram matrix is
gathered on the calibration images in one pass of the original model, the channels kept are
chosen and the consumer's weight refitted on them by least squares (:mod:`.channels`), and three
modules are replaced: the producer by one with only the kept output channels (its rows of weight
and bias), the batch norm between by one with only their statistics, the consumer by one with
only those inputs and the refitted weight. Every pair is pruned against the original's
activations (the pairs are independent of one another, as the planner's per-layer sensitivities
assume). The model given is not changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..modules import replace_modules
from .channels import input_gram, refit_weight, select_channels
from .pairs import Pair, find_pairs

__all__ = ["PairOutcome", "PruneResult", "pair_grams", "prune_pairs"]


@dataclass(frozen=True)
class PairOutcome:
    """One pair pruned: the channels kept (indices into the producer's outputs) and the
    consumer's relative output error on the calibration data, without its bias:
    ``||A W^T - A_S V^T|| / ||A W^T||`` (:mod:`.channels`)."""

    pair: Pair
    kept: tuple[int, ...]
    output_error: float


@dataclass
class PruneResult:
    model: nn.Module
    outcomes: list[PairOutcome]


def _check(pairs: dict[str, Pair], keep: dict[str, int]) -> None:
    for name, count in keep.items():
        if name not in pairs:
            known = ", ".join(sorted(pairs)) or "none"
            raise ValueError(f"{name!r} is not the first convolution of a prunable pair "
                             f"(those of this model: {known})")  # fmt: skip
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"keep[{name!r}]={count!r} must be an int (channels kept)")
        if not 1 <= count <= pairs[name].channels:
            raise ValueError(f"keep[{name!r}]={count} must be between 1 and its "
                             f"{pairs[name].channels} channels")  # fmt: skip


def pair_grams(model: nn.Module, pairs: list[Pair], calibration: Tensor,
               batch: int = 32) -> dict[str, Tensor]:  # fmt: skip
    """The Gram matrix of each pair's consumer input on ``calibration``, by consumer name, from
    one pass of ``model`` (:func:`.channels.input_gram`): what :func:`prune_pairs` chooses and
    refits from, for any channel count."""
    consumers = {p.consumer: model.get_submodule(p.consumer) for p in pairs}
    grams: dict[str, Tensor] = {}

    def hook(name: str, conv: nn.Conv2d):
        def record(_module, args):
            part = input_gram([args[0]], conv.kernel_size, conv.stride, conv.padding,
                              conv.dilation)  # fmt: skip
            grams[name] = part if name not in grams else grams[name] + part

        return record

    handles = [c.register_forward_pre_hook(hook(n, c)) for n, c in consumers.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(calibration), batch):
                model(calibration[start : start + batch])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n in consumers if n not in grams]
    if missing:
        raise ValueError(f"the forward on the calibration images never called {missing}")
    return grams


def _rows(conv: nn.Conv2d, kept: Tensor) -> nn.Conv2d:
    """``conv`` with only the output channels ``kept``."""
    new = nn.Conv2d(conv.in_channels, len(kept), conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None).to(conv.weight)  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(conv.weight[kept])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[kept])
    return new.train(conv.training)


def _norm_rows(norm: nn.BatchNorm2d, kept: Tensor) -> nn.BatchNorm2d:
    """``norm`` for only the channels ``kept``."""
    new = copy.deepcopy(norm)
    new.num_features = len(kept)
    with torch.no_grad():
        for name in ("weight", "bias"):
            if getattr(norm, name) is not None:
                setattr(new, name, nn.Parameter(getattr(norm, name)[kept].clone()))
        for name in ("running_mean", "running_var"):
            if getattr(norm, name) is not None:
                setattr(new, name, getattr(norm, name)[kept].clone())
    return new


def _refitted(conv: nn.Conv2d, weight: Tensor) -> nn.Conv2d:
    """``conv`` reading ``weight.shape[1]`` input channels, with ``weight`` and its bias."""
    new = nn.Conv2d(weight.shape[1], conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, bias=conv.bias is not None)  # fmt: skip
    new = new.to(conv.weight)
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new.train(conv.training)


def _relative_error(gram: Tensor, weight: Tensor, refit: Tensor, kept: Tensor) -> float:
    """``||A W^T - A_S V^T|| / ||A W^T||`` from the Gram matrix (see :class:`PairOutcome`)."""
    k, c = weight.shape[:2]
    taps = weight[0, 0].numel()
    w = weight.detach().double().reshape(k, c, taps).to(gram.device)
    v = torch.zeros_like(w)
    v[:, kept.to(gram.device)] = refit.detach().double().reshape(k, len(kept), taps).to(w)
    w, d = w.reshape(k, -1), (w - v).reshape(k, -1)
    signal = float(torch.einsum("ki,ij,kj->", w, gram, w))
    residual = float(torch.einsum("ki,ij,kj->", d, gram, d))
    return (max(residual, 0.0) / signal) ** 0.5 if signal > 0 else 0.0


def prune_pairs(
    model: nn.Module,
    keep: dict[str, int],
    calibration: Tensor | None = None,
    batch: int = 32,
    grams: dict[str, Tensor] | None = None,
) -> PruneResult:
    """A copy of ``model`` with the pairs named by their producer in ``keep`` pruned to that many
    channels (see the module docstring), and what was done to each. Raises ``ValueError`` naming
    a layer that is not the producer of a prunable pair (:func:`.pairs.find_pairs` lists them),
    a count out of range, or a layer that two of the pairs share (:func:`.pairs.disjoint`).
    ``grams``: the pairs' Gram matrices from :func:`pair_grams` (to prune one pair to several
    counts from one pass over the calibration images); else they are gathered here."""
    pairs = {p.producer: p for p in find_pairs(model)}
    _check(pairs, keep)
    chosen = [pairs[name] for name in keep]
    shared = [p.producer for p in chosen if p.producer in {q.consumer for q in chosen}]
    if shared:
        raise ValueError(f"{shared[0]!r} would be pruned twice, as the second convolution of "
                         "one pair and the first of another: prune pairs that share no "
                         "convolution")  # fmt: skip
    consumers = {p.consumer: model.get_submodule(p.consumer) for p in chosen}
    if grams is None or any(p.consumer not in grams for p in chosen):
        if calibration is None:
            raise ValueError("prune_pairs: give the calibration images or the pairs' grams")
        grams = pair_grams(model, chosen, calibration, batch) if chosen else {}
    replacements: dict[str, nn.Module] = {}
    outcomes = []
    for pair in chosen:
        consumer = consumers[pair.consumer]
        gram = grams[pair.consumer]
        kept = select_channels(gram, consumer.weight, keep[pair.producer])
        refit = refit_weight(gram, consumer.weight, kept)
        index = kept.to(consumer.weight.device)
        replacements[pair.producer] = _rows(model.get_submodule(pair.producer), index)
        if pair.norm is not None:
            replacements[pair.norm] = _norm_rows(model.get_submodule(pair.norm), index)
        replacements[pair.consumer] = _refitted(consumer, refit)
        error = _relative_error(gram, consumer.weight, refit, kept)
        outcomes.append(PairOutcome(pair, tuple(kept.tolist()), error))
    return PruneResult(replace_modules(model, replacements), outcomes)
