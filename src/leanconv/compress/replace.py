"""One layer in, a drop-in replacement out: ``decompose_layer(module, method, rank)``.

The decomposition itself is a pure function of :mod:`leanconv.decompose` on the layer's weight; this
module only turns its factors into modules. Every method becomes the chain of convolutions given by
:func:`leanconv.decompose.rank.factor_specs` — one ``nn.Conv2d`` per factor, grouped where the
layer is grouped (the per-group factors concatenated along their output channels), stride, padding
and dilation on the factor that convolves along that dimension, the bias on the last factor — so
the replacement has exactly the original's input and output shapes, runs on oneDNN/cuDNN kernels,
exports to ONNX and saves without pickle. A ``Linear`` becomes two ``Linear`` layers.

Rank may be an int (a tuple ``(R_out, R_in)`` for Tucker-2, ``(r1, r2, r3)`` for TT, the depth
multiplier for ``depthwise``) or ``"auto"`` with a policy: ``"vbmf"`` (Kim et al. 2016, Tucker-2),
``"energy:0.95"`` (keep that share of squared singular values), ``"budget:0.33"`` (largest rank
within that share of the layer's MACs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..decompose import methods
from ..decompose import rank as ranks
from ..decompose._errors import InvalidRankError
from ..decompose.grouped import GroupedFactors
from ..decompose.svd import low_rank
from ..errors import InvalidSpecError, LeanconvError
from ..spec import ConvSpec
from . import factor_memo


class UnsupportedLayerError(LeanconvError, TypeError):
    """A layer type or configuration the requested method cannot decompose."""


@dataclass(frozen=True)
class Decomposed:
    """A replacement and what it came from."""

    module: nn.Module
    method: str
    rank: object
    weight_error: float  # ||W - W_hat||_F / ||W||_F


# ---------------------------------------------------------------------- factors -> conv weights
def _chain_weights(method: str, f) -> list[Tensor]:
    """Conv weights of one group's factor chain, in the order of ``factor_specs``."""
    return methods.get(method).weights(f)


def _conv_from_spec(s: ConvSpec, weight: Tensor, bias: Tensor | None) -> nn.Module:
    sym = s.symmetric_padding
    conv = nn.Conv2d(
        s.in_channels, s.out_channels, s.kernel_size, s.stride, sym if sym else 0, s.dilation,
        s.groups, bias=bias is not None, device=weight.device, dtype=weight.dtype,
    )  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))
        if bias is not None:
            conv.bias.copy_(bias)
    if sym is not None:
        return conv
    (t, b), (l, r) = s.padding
    return nn.Sequential(nn.ZeroPad2d((l, r, t, b)), conv)


def chain_module(specs: list[ConvSpec], weights: list[Tensor], bias: Tensor | None) -> nn.Module:
    """``nn.Sequential`` of one convolution per factor (a padded conv is itself a Sequential)."""
    layers: list[nn.Module] = []
    for i, (s, w) in enumerate(zip(specs, weights, strict=True)):
        m = _conv_from_spec(s, w, bias if i == len(specs) - 1 else None)
        layers.extend(m if isinstance(m, nn.Sequential) else [m])
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------- rank policies
def _auto_rank(method: str, weight: Tensor, spec: ConvSpec, policy: str, name: str):
    kind, _, value = policy.partition(":")
    g = spec.groups
    if kind == "budget":
        return ranks.budget_rank(spec, method, float(value or 0.33))
    if kind in ("vbmf", "energy"):
        per_group = weight.reshape(g, -1, *weight.shape[1:])[0]  # ranks of the first group
        if kind == "vbmf":
            w = float(value) if value else 1.0
            r_out = ranks.vbmf_rank(per_group, 0, w, name=name)
            r_in = ranks.vbmf_rank(per_group, 1, w, name=name)
        else:
            frac = float(value or 0.95)
            r_out = ranks.energy_rank(per_group, frac, 0, name=name)
            r_in = ranks.energy_rank(per_group, frac, 1, name=name)
        auto = methods.get(method).auto_rank
        if auto is not None:
            return auto(r_out, r_in)
    raise InvalidRankError(
        f"layer {name!r}: rank policy {policy!r} is not vbmf[:w], energy[:f] or budget[:ratio]"
    )


# ---------------------------------------------------------------------- entry point
def decompose_layer(
    module: nn.Module,
    method: str = "tucker2",
    rank="auto",
    policy: str | None = None,
    name: str = "",
    input_size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> Decomposed:
    """A decomposed copy of ``module`` (an ``nn.Conv2d`` or ``nn.Linear``); ``module`` is untouched.

    ``rank="auto"`` uses ``policy`` (default: ``vbmf`` for Tucker-2, ``budget:0.33`` otherwise).
    """
    label = name or type(module).__name__
    method = ranks.canonical_method(method, f"layer {label!r}")
    if isinstance(module, nn.Linear):
        return _decompose_linear(module, rank, label)
    if type(module) is not nn.Conv2d:
        raise UnsupportedLayerError(
            f"layer {label!r}: {type(module).__name__} cannot be decomposed (nn.Conv2d or "
            "nn.Linear only)"
        )
    if module.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"layer {label!r}: padding_mode={module.padding_mode!r} is not supported"
        )
    weight = module.weight.detach()
    kh, kw = module.kernel_size
    if (kh, kw) == (1, 1) and method in ("tucker2", "cp", "spatial_svd", "tt"):
        method = "low_rank"  # a pointwise convolution is a matrix: its best factorisation is SVD
        if isinstance(rank, tuple | list):
            rank = min(int(r) for r in rank)
    if method == "depthwise" and module.groups != 1:
        raise UnsupportedLayerError(f"layer {label!r}: depthwise needs groups=1")
    try:
        spec = ConvSpec(
            module.in_channels, module.out_channels, (kh, kw),
            input_size=(max(input_size[0], kh), max(input_size[1], kw)), stride=module.stride,
            padding=module.padding, dilation=module.dilation, groups=module.groups,
            bias=module.bias is not None, dtype=weight.dtype, name=label,
        )  # fmt: skip
    except InvalidSpecError as exc:
        raise UnsupportedLayerError(str(exc)) from None
    if isinstance(rank, str):
        if rank != "auto":
            raise InvalidRankError(
                f"layer {label!r}: rank={rank!r} must be an int, a tuple or 'auto'"
            )
        default = "vbmf" if method == "tucker2" else "budget:0.33"
        rank = _auto_rank(method, weight, spec, policy or default, label)
    g = module.groups
    compute = weight.to(torch.float64)
    factors = factor_memo.factorise(
        lambda: _factorise(method, compute, rank, g, label, seed), compute, method, rank, g, seed
    )
    groups = factors.groups if isinstance(factors, GroupedFactors) else (factors,)
    per_group = [_chain_weights(method, f) for f in groups]
    weights = [
        torch.cat([w[i] for w in per_group], 0).to(weight.dtype) for i in range(len(per_group[0]))
    ]
    specs = ranks.factor_specs(spec, method, rank)
    bias = module.bias.detach() if module.bias is not None else None
    replacement = chain_module(specs, weights, bias).to(weight.device)
    dense = factors.to_dense().to(torch.float64)
    err = float((dense - compute).norm() / compute.norm().clamp_min(1e-300))
    return Decomposed(replacement, method, rank, err)


def _factorise(method: str, compute: Tensor, rank, groups: int, label: str, seed: int):
    """The factors of ``compute`` (float64) by ``method`` (its record in the registry)."""
    return methods.get(method).factorise(compute, rank, groups, label, seed)


def _decompose_linear(module: nn.Linear, rank, label: str) -> Decomposed:
    weight = module.weight.detach()
    if isinstance(rank, str):
        rank = ranks.energy_rank(weight[:, :, None, None], 0.95, 0, name=label)
    f = low_rank(weight.to(torch.float64)[:, :, None, None], rank, name=label)
    first = nn.Linear(
        module.in_features, rank, bias=False, device=weight.device, dtype=weight.dtype
    )
    second = nn.Linear(rank, module.out_features, bias=module.bias is not None,
                       device=weight.device, dtype=weight.dtype)  # fmt: skip
    with torch.no_grad():
        first.weight.copy_(f.first.reshape(rank, -1))
        second.weight.copy_(f.second.reshape(module.out_features, rank))
        if module.bias is not None:
            second.bias.copy_(module.bias)
    dense = f.to_dense().reshape(weight.shape)
    err = float((dense - weight.double()).norm() / weight.double().norm().clamp_min(1e-300))
    return Decomposed(nn.Sequential(first, second), "low_rank", rank, err)


def decompose(module: nn.Module, method: str = "tucker2", rank="auto", **kwargs) -> nn.Module:
    """``leanconv.decompose(module, method, rank)``: the replacement module alone (see
    :func:`decompose_layer` for the measurements)."""
    return decompose_layer(copy.deepcopy(module), method, rank, **kwargs).module
