"""Which of a convolution's input channels to keep, and its weight refitted on them: pure functions
on tensors.

A convolution is linear in its input: with ``A`` the unfolded input (one row per output position,
one column per input channel and tap, :func:`torch.nn.functional.unfold`) its output is
``Y = A W^T + b`` (``W`` the weight as a ``K x C k_h k_w`` matrix). Everything below comes from
the Gram matrix of the input on calibration data,

    G = A^T A        (C k_h k_w square, summed over images and positions; :func:`input_gram`),

so that the calibration data is read once whatever is asked of it afterwards:

- the part of the output that input channel ``c`` contributes, ``A_c W_c^T``, has the energy
  ``||A_c W_c^T||^2 = tr(W_c G_cc W_c^T)`` (:func:`channel_energy`), and the channels kept are
  those of the largest energies (:func:`select_channels`);
- with only the channels ``S`` kept, the weight that reproduces the original output best in the
  least-squares sense (the reconstruction step of channel pruning, He, Zhang and Sun 2017,
  "Channel Pruning for Accelerating Very Deep Neural Networks", section 3; Luo et al. 2017,
  ThiNet) solves ``min ||A W^T - A_S V^T||^2``, whose normal equations are
  ``G_SS V^T = G_S: W^T`` (:func:`refit_weight`): the dropped channels' contribution projected
  onto the kept ones. The bias is unchanged (the output it is fitted to includes it on both
  sides). A small ridge (:data:`RIDGE` times the mean diagonal) keeps ``G_SS`` invertible when
  kept channels are always zero (dead ReLUs).

All in float64; the returned weight has the original's dtype and device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CHUNK_VALUES",
    "RIDGE",
    "channel_energy",
    "input_gram",
    "refit_weight",
    "select_channels",
]

#: The ridge added to the kept channels' Gram matrix, relative to its mean diagonal.
RIDGE = 1e-8


def _unfold(x: Tensor, kernel, stride, padding, dilation) -> Tensor:
    """``x`` (N, C, H, W) as rows of ``C k_h k_w`` values, one per output position (float64)."""
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]).double()


#: The unfolded input is formed a few images at a time, at most this many float64 values at once
#: (128 MiB): the whole calibration set unfolded would be ``k_h k_w`` times its size.
CHUNK_VALUES = 1 << 24


def input_gram(inputs, kernel, stride=1, padding=0, dilation=1) -> Tensor:
    """``G = A^T A`` of a convolution's unfolded input, summed over the batches of ``inputs``
    (each a tensor ``(N, C, H, W)``; an iterable, so calibration data can stream), float64 on the
    inputs' device. ``kernel``, ``stride``, ``padding``, ``dilation``: the convolution's
    (zero padding)."""
    gram = None
    for batch in inputs:
        per_image = _unfold(batch[:1], kernel, stride, padding, dilation).numel()
        step = max(1, CHUNK_VALUES // max(1, per_image))
        for start in range(0, len(batch), step):
            a = _unfold(batch[start : start + step], kernel, stride, padding, dilation)
            part = a.T @ a
            gram = part if gram is None else gram + part
    if gram is None:
        raise ValueError("input_gram: no calibration inputs were given")
    return gram


def channel_energy(gram: Tensor, weight: Tensor) -> Tensor:
    """``||A_c W_c^T||^2`` for each input channel ``c`` of ``weight`` (``K x C x k_h x k_w``):
    the energy of the output part that channel ``c`` contributes, on the data of ``gram``."""
    k, c = weight.shape[:2]
    taps = weight[0, 0].numel()
    w = weight.detach().double().reshape(k, c, taps)
    g = gram.reshape(c, taps, c, taps)
    diag = torch.stack([g[i, :, i, :] for i in range(c)])  # (C, taps, taps): G_cc
    return torch.einsum("kcs,cst,kct->c", w, diag, w)


def select_channels(gram: Tensor, weight: Tensor, keep: int) -> Tensor:
    """The ``keep`` input channels of ``weight`` whose outputs carry the most energy
    (:func:`channel_energy`), in increasing order."""
    c = weight.shape[1]
    if not 1 <= keep <= c:
        raise ValueError(f"keep={keep} must be between 1 and the {c} input channels")
    return torch.sort(torch.topk(channel_energy(gram, weight), keep).indices).values


def refit_weight(gram: Tensor, weight: Tensor, kept: Tensor) -> Tensor:
    """The weight on the ``kept`` input channels that reproduces ``weight``'s output on the data
    of ``gram`` best in the least-squares sense (see the module docstring): ``K x |kept| x k_h x
    k_w``, in ``weight``'s dtype and device (``weight`` itself, copied, when every channel is
    kept)."""
    k, c = weight.shape[:2]
    if torch.equal(kept.cpu(), torch.arange(c)):  # nothing dropped: nothing to refit
        return weight.detach().clone()
    taps = weight[0, 0].numel()
    cols = (kept.to(gram.device)[:, None] * taps + torch.arange(taps, device=gram.device)).flatten()
    w = weight.detach().double().reshape(k, c * taps).to(gram.device)
    g_ss = gram[cols][:, cols]
    rhs = gram[cols] @ w.T  # G_S: W^T
    ridge = RIDGE * float(g_ss.diagonal().mean().clamp_min(1e-300))
    eye = torch.eye(len(cols), dtype=g_ss.dtype, device=g_ss.device)
    v = torch.linalg.solve(g_ss + ridge * eye, rhs).T
    return v.reshape(k, len(kept), *weight.shape[2:]).to(weight.dtype).to(weight.device)
