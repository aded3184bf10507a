"""One model for every batch size: a fast algorithm only where it pays.

A Winograd or FFT layer chosen for one batch size can be slower at another: its transforms cost
per image what the direct convolution's weight reorder costs once per call, so at batch 1 a
layer that won at batch 64 can lose (a Winograd-only plan made for batch 64 once ran 0.64x as
fast at batch 1). :func:`fit_min_batch` times each such layer of a model, on its real inputs,
against the direct convolution at every batch size the model is deployed for, and sets the
layer's ``min_batch`` (:class:`leanconv.nn.fast._FastConv2d`): the smallest of those batch
sizes from which the algorithm is at least as fast at that size and every larger one. Below it
the layer runs the direct convolution on a weight packed for oneDNN; the function is the same
either way (up to float32 rounding), so the switch by input shape changes speed only.

A decomposed layer's chain (:class:`leanconv.nn.ChainConv2d`) is fitted the same way, after the
fast layers (a chain's Winograd core switches first): below its ``min_batch`` it runs the one
convolution the chain composes to, which runs as fast as the layer it replaced. Every batch size
then runs each layer at least as fast as the layer it replaced, by this measurement.
"""

from __future__ import annotations

import torch
from torch import nn

from ..bench.timing import compare
from ..errors import InvalidSpecError
from ..modules import capture_inputs, input_at_batch
from ..nn.chain import ChainConv2d
from ..nn.fast import FFTConv2d, WinogradConv2d

__all__ = ["fit_min_batch"]


def _switchable(model: nn.Module, kinds) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, kinds)}


def fit_min_batch(
    model: nn.Module, example: torch.Tensor, batch_sizes, repeats: int = 5
) -> dict[str, int]:
    """Set ``min_batch`` on each Winograd or FFT layer and each switchable chain of ``model`` (in
    place) from timings on ``example`` (a batch of inputs, repeated or cut to each ``b`` of
    ``batch_sizes``; see the module docstring); returns the layers whose ``min_batch`` is above
    1, and its value. A layer slower at every size gets one more than the largest (it always runs
    direct)."""
    if example.dim() != 4:
        raise InvalidSpecError(
            f"fit_min_batch: example of shape {tuple(example.shape)} is not a batch (N, C, H, W)"
        )
    sizes = sorted({int(b) for b in batch_sizes if int(b) >= 1})
    switched = {}
    for kinds in (WinogradConv2d | FFTConv2d, ChainConv2d):  # a chain's fast core first
        layers = _switchable(model, kinds)
        if layers and sizes:
            switched.update(_fit(model, layers, example, sizes, repeats))
    return switched


def _fit(model, layers: dict[str, nn.Module], example, sizes: list[int], repeats: int):
    """``min_batch`` of each of ``layers`` (set in place), timed inside ``model``."""
    wins: dict[str, dict[int, bool]] = {n: {} for n in layers}
    for layer in layers.values():
        layer.min_batch = 1  # the algorithm itself is timed, at every size
    for b in sizes:
        inputs = capture_inputs(model, list(layers), input_at_batch(example, b), strict=False)
        for name, x in inputs.items():
            layer = layers[name]
            forms = {"fast": lambda m=layer, x=x: m(x),
                     "direct": lambda m=layer, x=x: m._packed_direct(x)}  # fmt: skip
            t = compare(forms, warmup=1, repeats=repeats, device=x.device)
            wins[name][b] = t["fast"].ms <= t["direct"].ms
    switched = {}
    for name, layer in layers.items():
        won = wins[name]
        losing = [b for b in sizes if not won.get(b, True)]
        layer.min_batch = 1 if not losing else next(
            (b for b in sizes if b > max(losing)), sizes[-1] + 1)  # fmt: skip
        if layer.min_batch > 1:
            switched[name] = layer.min_batch
    return switched
