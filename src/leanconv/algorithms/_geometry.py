"""Arguments shared by every convolution algorithm: checking them and reducing stride and dilation.

``normalise`` checks ``conv2d`` arguments as ``torch.nn.functional.conv2d`` would and names the bad
one; the geometry itself (ints or pairs, padding in every accepted form, ``"same"``) is parsed by
:mod:`leanconv.spec` (``strict=True``: ints only, as ``F.conv2d`` takes them). ``phases``
rewrites one spatial dimension of a strided, dilated correlation as stride-1, dilation-1
sub-problems (polyphase decomposition). With ``g = gcd(s, d)``, ``s = g s'``,
``d = g d'`` and ``L = lcm(s, d) = g s' d'``::

    y[o] = sum_k w[k] x[o s + k d]
    y[q d' + j] = sum_{p < s'} sum_k' w[k' s' + p] x[L (q + k') + g (j s' + p d')]

so output phase ``j`` (every ``d'``-th output from ``j``) is the sum over kernel phases ``p`` of
stride-1 correlations of ``x[g (j s' + p d') :: L]`` with ``w[p :: s']``. Stride 2 gives the classic
four (2 x 2) sub-problems; dilation ``d`` gives ``d x d`` sub-sampled ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidSpecError
from ..spec import PaddingArg, normalise_padding, normalise_tuple


@dataclass(frozen=True)
class ConvArgs:
    """Checked ``conv2d`` arguments. ``padding`` is ``(top, bottom, left, right)``."""

    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    kernel_size: tuple[int, int]
    batched: bool

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        top, bottom, left, right = self.padding
        (r, s), (dh, dw), (sh, sw) = self.kernel_size, self.dilation, self.stride
        return (
            (height + top + bottom - dh * (r - 1) - 1) // sh + 1,
            (width + left + right - dw * (s - 1) - 1) // sw + 1,
        )


def pair(value: int | Sequence[int], arg: str, where: str) -> tuple[int, int]:
    """``value`` (an int, or one or two ints) as two ints (:func:`spec.normalise_tuple`)."""
    return normalise_tuple(value, 2, arg, f"{where}: ", strict=True)


def symmetric_padding(padding) -> tuple[int, int] | None:
    """``padding`` as ``(along H, along W)`` when it pads both sides of each axis alike (an int,
    or two ints); ``None`` for a string or a four-sided padding."""
    if isinstance(padding, int):
        return (padding, padding)
    if isinstance(padding, tuple | list) and len(padding) == 2:
        return tuple(padding) if all(isinstance(p, int) for p in padding) else None
    return None


def symmetric_output_size(
    size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, int]:
    """``(H_o, W_o) = ((H + 2 p - d (k - 1) - 1) // s + 1, ...)``: the output of a convolution of
    a ``size = (H, W)`` input padding both sides of each axis by ``padding`` (zero or less: the
    input is too small for the kernel)."""
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(size, kernel, stride, padding, dilation, strict=True)
    )


def padding4(
    padding: PaddingArg,
    kernel: tuple[int, int],
    dilation: tuple[int, int],
    stride: tuple[int, int],
    where: str,
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` from an int, ``(ph, pw)``, ``((top, bottom), (left, right))``,
    ``(left, right, top, bottom)`` (the order of ``torch.nn.functional.pad``), ``"same"`` or
    ``"valid"`` (:func:`spec.normalise_padding`)."""
    (top, bottom), (left, right) = normalise_padding(
        padding, 2, kernel, dilation, stride, f"{where}: ", strict=True
    )
    return (top, bottom, left, right)


def check_tensors(x: torch.Tensor, weight: torch.Tensor, where: str) -> None:
    """Input and weight: tensors of the right rank, a floating dtype, one dtype and device."""
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise InvalidSpecError(f"{where}: input and weight must be tensors")
    if weight.dim() != 4:
        raise InvalidSpecError(
            f"{where}: weight of shape {tuple(weight.shape)} must be (C_out, C_in/groups, kH, kW)"
        )
    if x.dtype != weight.dtype or x.device != weight.device:
        raise InvalidSpecError(
            f"{where}: input ({x.dtype}, {x.device}) and weight ({weight.dtype}, "
            f"{weight.device}) must share dtype and device"
        )


def normalise(
    x: torch.Tensor,
    weight_shape: Sequence[int],
    bias: torch.Tensor | None,
    stride,
    padding,
    dilation,
    groups: int,
    where: str,
) -> ConvArgs:
    """Check ``conv2d`` arguments against ``weight_shape`` (shapes, geometry) and normalise them."""
    if not isinstance(x, torch.Tensor):
        raise InvalidSpecError(f"{where}: input must be a tensor")
    if x.dim() not in (3, 4):
        raise InvalidSpecError(
            f"{where}: input of shape {tuple(x.shape)} must be (N, C, H, W) or (C, H, W)"
        )
    if not x.is_floating_point():
        raise InvalidSpecError(f"{where}: input dtype {x.dtype} is not a floating-point type")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise InvalidSpecError(f"{where}: groups={groups!r} must be a positive integer")
    channels = x.shape[-3]
    k_out, c_per_group, r, s = (int(v) for v in weight_shape)
    if channels != c_per_group * groups:
        raise InvalidSpecError(
            f"{where}: input has {channels} channels but weight {tuple(weight_shape)} with "
            f"groups={groups} expects {c_per_group * groups}"
        )
    if k_out % groups:
        raise InvalidSpecError(f"{where}: out_channels={k_out} is not divisible by groups={groups}")
    if min(r, s, k_out, c_per_group) < 1:
        raise InvalidSpecError(f"{where}: weight of shape {tuple(weight_shape)} is empty")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (k_out,):
            shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else bias
            raise InvalidSpecError(f"{where}: bias of shape {shape} must be ({k_out},)")
        if bias.dtype != x.dtype or bias.device != x.device:
            raise InvalidSpecError(f"{where}: bias must share the input's dtype and device")
    st = pair(stride, "stride", where)
    dil = pair(dilation, "dilation", where)
    if min(st) < 1:
        raise InvalidSpecError(f"{where}: stride={stride!r} must be positive")
    if min(dil) < 1:
        raise InvalidSpecError(f"{where}: dilation={dilation!r} must be positive")
    pad = padding4(padding, (r, s), dil, st, where)
    args = ConvArgs(st, pad, dil, groups, (r, s), x.dim() == 4)
    height, width = x.shape[-2:]
    top, bottom, left, right = pad
    if height + top + bottom < dil[0] * (r - 1) + 1 or width + left + right < dil[1] * (s - 1) + 1:
        raise InvalidSpecError(
            f"{where}: kernel {(r, s)} (dilation {dil}) is larger than the padded input "
            f"{(height + top + bottom, width + left + right)}"
        )
    return args


def check_filter_weight(weight: torch.Tensor, groups: int, where: str) -> None:
    """A weight to transform: a ``(K, C/groups, r, s)`` tensor whose ``K`` ``groups`` divides."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise InvalidSpecError(f"{where}: weight must be a (K, C/groups, r, s) tensor")
    k_out = weight.shape[0]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or k_out % groups:
        raise InvalidSpecError(f"{where}: out_channels={k_out} and groups={groups} do not fit")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype fast algorithms compute in: float32 for half precision, else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def conv_args(x, weight, bias, stride, padding, dilation, groups, where: str) -> ConvArgs:
    """What every ``conv2d`` function starts with: :func:`check_tensors`, then :func:`normalise`
    against ``weight``'s shape."""
    check_tensors(x, weight, where)
    return normalise(x, weight.shape, bias, stride, padding, dilation, groups, where)


def batched(x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``(N, C, H, W)``: an unbatched ``(C, H, W)`` input gets a batch of one."""
    return x if x.dim() == 4 else x.unsqueeze(0)


def unbatched(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The batched result ``y`` of the input ``x``, without the batch when ``x`` had none."""
    return y if x.dim() == 4 else y.squeeze(0)


def add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``y + bias`` per output channel (in ``y``'s dtype), or ``y`` without a bias."""
    return y if bias is None else y + bias.to(y.dtype).view(1, -1, 1, 1)


def all_finite(t: torch.Tensor) -> bool:
    """No NaN and no infinity in ``t`` (one read-only pass: min and max propagate NaN)."""
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def check_finite(where: str, **tensors: torch.Tensor | None) -> None:
    """Raise when a tensor holds NaN or infinity (fast algorithms would spread it wrongly)."""
    for name, t in tensors.items():
        if t is not None and not all_finite(t):
            raise InvalidSpecError(
                f"{where}: {name} holds NaN or infinity; a fast algorithm would spread it over "
                "whole tiles (or the whole image) where direct convolution does not; use "
                "algorithm='direct' or pass check_finite_input=False to accept that"
            )


@dataclass(frozen=True)
class Phase:
    """One stride-1 sub-problem along one dimension (see the module docstring)."""

    out_start: int  # output phase j: the outputs j, j + d', j + 2 d', ...
    out_step: int  # d'
    in_start: int  # g (j s' + p d')
    in_step: int  # lcm(s, d)
    k_start: int  # p
    k_step: int  # s'


def phases(stride: int, dilation: int, kernel: int) -> list[list[Phase]]:
    """Per output phase ``j < d'``, the kernel phases ``p < s'`` whose sub-kernel is not empty."""
    g = math.gcd(stride, dilation)
    s1, d1 = stride // g, dilation // g
    step = g * s1 * d1
    return [
        [Phase(j, d1, g * (j * s1 + p * d1), step, p, s1) for p in range(min(s1, kernel))]
        for j in range(d1)
    ]


def pad_input(x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    top, bottom, left, right = padding
    if any(padding):
        return torch.nn.functional.pad(x, (left, right, top, bottom))
    return x


def sub_kernel(weight: torch.Tensor, key: tuple[int, int], steps: tuple[int, int]) -> torch.Tensor:
    """The kernel phase ``key = (p_h, p_w)``: ``weight[..., p_h::s'_h, p_w::s'_w]``."""
    return weight[:, :, key[0] :: steps[0], key[1] :: steps[1]]


def kernel_steps(args: ConvArgs) -> tuple[int, int]:
    """``s' = s / gcd(s, d)`` per dimension: the step between taps of one kernel phase."""
    return tuple(s // math.gcd(s, d) for s, d in zip(args.stride, args.dilation, strict=True))


def reduce_to_stride1(
    x: torch.Tensor,
    args: ConvArgs,
    out_channels: int,
    core: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor],
) -> torch.Tensor:
    """The correlation of ``x`` (unpadded) through stride-1, dilation-1 sub-problems.

    ``core(x_sub, (p_h, p_w))`` correlates the (already padded and sub-sampled) ``x_sub`` with the
    kernel phase ``(p_h, p_w)`` (see :func:`sub_kernel`) and returns the valid output
    ``(N, K, H_sub - r_sub + 1, W_sub - s_sub + 1)``; the results are summed over kernel phases and
    interleaved over output phases (``phases`` along each dimension).
    """
    xp = pad_input(x, args.padding)
    if args.stride == (1, 1) and args.dilation == (1, 1):
        return core(xp, (0, 0))
    ho, wo = args.output_size(*x.shape[-2:])
    (r, s) = args.kernel_size
    out = xp.new_empty((xp.shape[0], out_channels, ho, wo))
    for row_group in phases(args.stride[0], args.dilation[0], r):
        for col_group in phases(args.stride[1], args.dilation[1], s):
            ph, pw = row_group[0], col_group[0]
            nh = len(range(ph.out_start, ho, ph.out_step))
            nw = len(range(pw.out_start, wo, pw.out_step))
            if nh == 0 or nw == 0:
                continue
            acc = None
            for prow in row_group:
                for pcol in col_group:
                    kr = len(range(prow.k_start, r, prow.k_step))
                    ks = len(range(pcol.k_start, s, pcol.k_step))
                    # The nh x nw outputs need nh + kr - 1 rows and nw + ks - 1 columns.
                    x_sub = xp[
                        :,
                        :,
                        prow.in_start : prow.in_start + prow.in_step * (nh + kr - 1) : prow.in_step,
                        pcol.in_start : pcol.in_start + pcol.in_step * (nw + ks - 1) : pcol.in_step,
                    ]
                    y = core(x_sub, (prow.k_start, pcol.k_start))
                    acc = y if acc is None else acc + y
            out[:, :, ph.out_start :: ph.out_step, pw.out_start :: pw.out_step] = acc
    return out
