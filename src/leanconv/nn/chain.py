"""A decomposed layer's chain that runs as one convolution where the chain does not pay.

A decomposition's chain of thin convolutions (Tucker-2, spatial SVD, ``low_rank``, CP) computes
fewer multiplications than the layer it replaced, but at small batches its thin factors can run
slower than one dense convolution would: each is a separate pass over memory with its own
weight reorder. The chain is linear, so it *is* one convolution
(:func:`leanconv.decompose.compose.compose_chain`); :class:`ChainConv2d` runs that composite,
on a weight packed for oneDNN with the last factor's activation fused, for inputs of fewer than
``min_batch`` images, and the chain itself from ``min_batch`` on. Both compute the same function
(up to float32 rounding), so the switch by input shape changes speed only; ``min_batch`` is
measured by :func:`leanconv.selection.batch_switch.fit_min_batch`, as for the fast algorithms.

From ``min_batch`` on, narrow factors in a row (:class:`leanconv.nn.NarrowConv2d`: a spatial SVD's
pair, a Tucker-2 chain's 1x1, core and 1x1) run in one pass
(:meth:`leanconv.nn.NarrowConv2d.forward_chain`) when the kernel takes them all; the other layers
run one after the other, as in ``nn.Sequential``.

``chain(x, residual)`` gives a residual block's shortcut to the chain's last convolution, which
computes ``activation(conv(h) + residual)`` (:mod:`leanconv.nn.fast`; the composite takes it
likewise), so that the block's sum and the ReLU after it are taken as the output is written
(:mod:`leanconv.rewrite.residual`).

The module is an ``nn.Sequential`` of the chain's layers: its parameters, state dict and cost
(the chain's, counted on the meta device) are the chain's. The composite is built from the
chain's current weights when first needed and rebuilt when they change; it is never trained
(while autograd records, the chain runs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..algorithms import narrow
from ..decompose.compose import chain_convolutions, compose_chain
from .fast import NarrowConv2d, PackedConv2d, _FastConv2d

__all__ = ["ChainConv2d", "narrow_runs", "run_chain"]


def run_chain(layers, x: Tensor, residual: Tensor | None = None) -> Tensor:
    """``x`` through ``layers`` in order (``nn.Identity`` skipped), each run of narrow layers in
    a row (2 to :data:`leanconv.algorithms.narrow.CHAIN_MAX`) that
    :meth:`NarrowConv2d.forward_chain` takes in one pass; ``residual`` given to the last layer
    (a fast layer adds it before its activation; after any other it is added)."""
    todo = [m for m in layers if type(m) is not nn.Identity]
    i = 0
    while i < len(todo):
        run = _narrow_run(todo, i)
        if len(run) >= 2:
            extra = residual if i + len(run) == len(todo) else None
            y = NarrowConv2d.forward_chain(run, x, extra)
            if y is not None:
                x, i = y, i + len(run)
                continue
        layer, last = todo[i], i + 1 == len(todo)
        if last and residual is not None:
            x = layer(x, residual) if isinstance(layer, _FastConv2d) else layer(x) + residual
        else:
            x = layer(x)
        i += 1
    return x


def _narrow_run(layers: list, start: int) -> list:
    """The narrow layers in a row from ``start`` (at most the kernel's chain length)."""
    end = start
    while end < len(layers) and isinstance(layers[end], NarrowConv2d):
        end += 1
    return layers[start : min(end, start + narrow.CHAIN_MAX)]


def narrow_runs(layers) -> list[list[NarrowConv2d]]:
    """The runs of narrow layers that :func:`run_chain` gives the kernel in one pass when each
    of them runs it (``nn.Identity`` skipped; two layers or more)."""
    todo = [m for m in layers if type(m) is not nn.Identity]
    runs, i = [], 0
    while i < len(todo):
        run = _narrow_run(todo, i)
        if len(run) >= 2:
            runs.append(run)
        i += max(len(run), 1)
    return runs


class ChainConv2d(nn.Sequential):
    """``nn.Sequential`` of a composable chain of convolutions that runs the one convolution it
    composes to for batches of fewer than ``min_batch`` images (see the module docstring)."""

    min_batch: int = 1

    @classmethod
    def from_chain(cls, chain: nn.Sequential, min_batch: int = 1) -> ChainConv2d | None:
        """``chain``'s layers (shared, not copied) as a switchable chain; ``None`` when the chain
        cannot be composed exactly into one convolution."""
        convs = chain_convolutions(chain)
        if convs is None or compose_chain(convs) is None:
            return None
        out = cls(*chain)
        out.min_batch = min_batch
        return out.train(chain.training)

    def composed(self) -> PackedConv2d:
        """The one convolution the chain computes, with the last factor's activation, packed
        (built from the current weights, kept while they do not change)."""
        convs = [m for m in self._modules.values() if type(m) is not nn.Identity]  # the chain
        activation = getattr(convs[-1], "activation", None)
        key = tuple((c.weight._version, c.weight.data_ptr()) for c in convs) + (activation,)
        hit = self.__dict__.get("_composed")
        if hit is None or hit[0] != key:  # the layers were checked by from_chain
            like = convs[-1].weight
            with torch.no_grad():
                conv = compose_chain(convs).conv(like)
            layer = PackedConv2d.from_conv(conv, activation=activation).eval()
            layer = layer.to(memory_format=_memory_format(like))
            hit = self.__dict__["_composed"] = (key, layer)
        return hit[1]

    def _packed_direct(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """The composite convolution (what runs below ``min_batch``; its ``forward`` directly:
        one module call per layer, as the layer it replaced)."""
        return self.composed().forward(x, residual)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """The chain (or below ``min_batch`` its composite), ``residual`` added by its last
        convolution before that one's activation (see the module docstring)."""
        if self._below_min_batch(x):
            return self._packed_direct(x, residual)
        return run_chain(self, x, residual)

    def _below_min_batch(self, x: Tensor) -> bool:
        if self.min_batch <= 1 or x.dim() != 4 or x.shape[0] >= self.min_batch:
            return False
        if type(x) is not Tensor or x.is_meta:
            return False  # meta, fake or traced: those see the chain, as it is counted
        # while autograd records, the chain runs (the composite is never trained)
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))

    def __getstate__(self) -> dict:
        """Copies and pickles leave the composite behind: it is derived from the weights."""
        state = self.__dict__.copy()
        state.pop("_composed", None)
        return state

    def extra_repr(self) -> str:
        return f"min_batch={self.min_batch}" if self.min_batch > 1 else ""


def _memory_format(weight: Tensor) -> torch.memory_format:
    channels_last = weight.dim() == 4 and not weight.is_contiguous()
    if channels_last and weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
