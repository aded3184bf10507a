"""Deformable convolution (Dai et al. 2017, "Deformable Convolutional Networks"; v2 with
modulation: Zhu et al. 2019, "Deformable ConvNets v2: More Deformable, Better Results").

Each output position ``p`` of a ``kh x kw`` convolution samples its taps at learned fractional
positions instead of the regular grid::

    y[n,k,p] = b[k] + sum_{c,t} w[k,c,t] m[n,g(c),t,p] X[n,c](p0 + t_d + delta[n,g(c),t,p])

where ``p0 = (p_y * s_h - pad_h, p_x * s_w - pad_w)``, ``t_d = (i * d_h, j * d_w)`` is tap
``t = (i, j)`` scaled by the dilation, ``delta`` the learned offset of the offset group ``g(c)`` of
channel ``c`` and ``m`` the modulation mask (1 in v1). ``X(.)`` is bilinear interpolation with zeros
outside the image::

    X(y, x) = sum over the four integer neighbours (y', x') of
              max(0, 1 - |y - y'|) * max(0, 1 - |x - x'|) * x[y', x']   (0 when (y', x') is outside)

Layout of the offsets and masks follows ``torchvision.ops.deform_conv2d``: ``offset`` has shape
``(N, 2 * G * kh * kw, Ho, Wo)`` with, for offset group ``g`` and tap ``t = i * kw + j``, channel
``2 * (g * kh * kw + t)`` the vertical offset ``dy`` and the next channel the horizontal ``dx``;
``mask`` has shape ``(N, G * kh * kw, Ho, Wo)``. Offset group ``g`` holds the input channels
``[g * C / G, (g + 1) * C / G)``.

The implementation is pure PyTorch (gather + batched matmul, differentiable by autograd, exported
by ``torch.export`` and ONNX). The sampled columns ``(N, C * kh * kw, Ho * Wo)`` of an im2col
convolution are built in chunks of whole images or of output rows, at most ``max_chunk_elements``
column elements at a time, so that the peak memory of inference stays close to the input plus the
output plus a few chunks (see ``docs/blocks-deform.md`` for measured figures).

- :func:`deform_conv2d`: the operation (offsets and mask as inputs).
- :class:`DeformConv2dOp`: the weight and bias of the operation; offsets given to ``forward``
  (the interface of ``torchvision.ops.DeformConv2d``). Counted by the closed form
  :func:`leanconv.cost.formulas.deform_conv_cost`.
- :class:`DeformConv2d`: a deformable convolution with its own offset predictor (a plain
  ``nn.Conv2d`` of the same geometry, initialised to zero so that the layer starts as an ordinary
  convolution); ``modulated=True`` adds the v2 masks (sigmoid of the predictor, 0.5 at init);
  ``checkpoint=True`` recomputes the sampled columns in the backward pass to save memory.
- :class:`ModulatedDeformConv2d`: ``DeformConv2d(..., modulated=True)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils import checkpoint as _ckpt

from ..cost import register_module_rule
from ..cost.convention import Convention
from ..cost.formulas import OpCost, deform_conv_cost
from ..spec import normalise_tuple
from ._common import call_spec, check_divisible, check_positive, reset_like_conv

# Default bound on the sampled-column elements built at once: 2**23 elements is 32 MiB in float32.
DEFAULT_CHUNK_ELEMENTS = 1 << 23


def _pair(value: int | tuple[int, int], arg: str) -> tuple[int, int]:
    """``value`` (an int, or one or two ints) as two ints; raises naming ``arg``."""
    return normalise_tuple(value, 2, arg, "deform_conv2d: ")  # type: ignore[return-value]


def _chunks(n: int, ho: int, per_row: int, budget: int) -> list[tuple[int, int, int, int]]:
    """``(n0, n1, r0, r1)`` blocks of images and output rows with at most ``budget`` elements
    (``per_row`` elements per output row of one image), whole images when one fits."""
    per_image = per_row * ho
    if per_image <= budget:
        step = max(1, budget // per_image)
        return [(b, min(n, b + step), 0, ho) for b in range(0, n, step)]
    rows = max(1, budget // per_row)
    return [(b, b + 1, r, min(ho, r + rows)) for b in range(n) for r in range(0, ho, rows)]


def _sample_columns(
    x: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    rows: tuple[int, int],
    out_width: int,
) -> Tensor:
    """Bilinearly sampled columns ``(n, C * kh * kw, rows * Wo)`` for output rows ``rows``.

    ``offset`` and ``mask`` are already cut to these images and rows. Positions, interpolation
    weights and the interpolated sums are computed in float32 at least (bfloat16 cannot even
    represent positions past 256 to 1), then the columns are cast to the input's dtype.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    kk = kh * kw
    groups = offset.shape[1] // (2 * kk)
    r0, r1 = rows
    nrows = r1 - r0
    coord = torch.promote_types(x.dtype, torch.float32)
    dev = x.device

    off = offset.to(coord).reshape(n, groups, kk, 2, nrows, out_width)
    i = torch.arange(kh, device=dev, dtype=coord).repeat_interleave(kw)  # tap row, (kk,)
    j = torch.arange(kw, device=dev, dtype=coord).repeat(kh)  # tap column, (kk,)
    oy = torch.arange(r0, r1, device=dev, dtype=coord)
    ox = torch.arange(out_width, device=dev, dtype=coord)
    base_y = (oy * stride[0] - padding[0]).view(1, nrows, 1) + (i * dilation[0]).view(kk, 1, 1)
    base_x = (ox * stride[1] - padding[1]).view(1, 1, out_width) + (j * dilation[1]).view(kk, 1, 1)
    py = base_y + off[:, :, :, 0]  # (n, G, kk, rows, Wo)
    px = base_x + off[:, :, :, 1]

    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly, lx = py - y0, px - x0  # fractional parts: gradients flow to the offsets through these
    hy, hx = 1 - ly, 1 - lx
    y0i, x0i = y0.long(), x0.long()
    scale = mask.to(coord).reshape(n, groups, kk, nrows, out_width) if mask is not None else None

    cg = c // groups
    length = kk * nrows * out_width
    source = x.reshape(n, groups, cg, h * w)
    cols = None
    for dy, dx, wy, wx in ((0, 0, hy, hx), (0, 1, hy, lx), (1, 0, ly, hx), (1, 1, ly, lx)):
        yy, xx = y0i + dy, x0i + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        weight = wy * wx * inside.to(coord)
        if scale is not None:
            weight = weight * scale  # modulate the 4 coefficients, not the C sampled values
        index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(n, groups, 1, length)
        picked = torch.gather(source, 3, index.expand(n, groups, cg, length))
        weight = weight.reshape(n, groups, 1, length)
        if cols is None:
            cols = picked * weight  # in the coordinate dtype: bfloat16 sums in float32
        else:
            cols = cols.addcmul_(picked, weight)
    assert cols is not None
    # (n, G, C/G, kk, rows*Wo) -> (n, C * kk, rows * Wo): channel-major, then tap, as im2col
    return cols.reshape(n, c * kk, nrows * out_width).to(x.dtype)


def deform_conv2d(
    x: Tensor,
    weight: Tensor,
    offset: Tensor,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    checkpoint: bool = False,
) -> Tensor:
    """Deformable 2-D convolution (v1; v2 when ``mask`` is given), ``torchvision.ops`` semantics.

    ``x`` (N, C, H, W); ``weight`` (K, C / groups, kh, kw); ``offset`` (N, 2 G kh kw, Ho, Wo) of
    (dy, dx) pairs; ``mask`` (N, G kh kw, Ho, Wo); the number of offset groups ``G`` is read from
    ``offset``. With zero offsets and a mask of ones this is ``F.conv2d`` (up to round-off).
    At most ``max_chunk_elements`` sampled-column elements are built at once. With ``checkpoint``
    (and autograd recording), each chunk's columns are recomputed in the backward pass instead of
    being kept (``torch.utils.checkpoint``): the saved state drops from about five times the
    full columns to the chunks' inputs (see ``docs/blocks-deform.md``).
    """
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"deform_conv2d: x and weight must be 4-D, got {tuple(x.shape)}, {tuple(weight.shape)}"
        )
    s, p, d = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ValueError(f"deform_conv2d: stride={s}, dilation={d} (>= 1), padding={p} (>= 0)")
    n, c, h, w = x.shape
    k, cpg, kh, kw = weight.shape
    if groups < 1 or c % groups or k % groups or cpg * groups != c:
        raise ValueError(
            f"deform_conv2d: groups={groups} does not fit input channels {c} and weight "
            f"{tuple(weight.shape)}"
        )
    ho = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"deform_conv2d: output size ({ho}, {wo}) is empty for input {(h, w)}")
    kk = kh * kw
    if offset.dim() != 4 or offset.shape[1] % (2 * kk) or offset.shape[1] == 0:
        raise ValueError(
            f"deform_conv2d: offset shape {tuple(offset.shape)} must be (N, 2 * G * {kh} * {kw}, "
            f"Ho, Wo)"
        )
    og = offset.shape[1] // (2 * kk)
    if tuple(offset.shape) != (n, 2 * og * kk, ho, wo):
        raise ValueError(
            f"deform_conv2d: offset shape {tuple(offset.shape)} != {(n, 2 * og * kk, ho, wo)}"
        )
    if c % og:
        raise ValueError(f"deform_conv2d: {og} offset groups do not divide {c} input channels")
    if mask is not None and tuple(mask.shape) != (n, og * kk, ho, wo):
        raise ValueError(f"deform_conv2d: mask shape {tuple(mask.shape)} != {(n, og * kk, ho, wo)}")
    if max_chunk_elements < 1:
        raise ValueError(f"deform_conv2d: max_chunk_elements={max_chunk_elements} must be positive")

    w_mat = weight.reshape(1, groups, k // groups, cpg * kk)

    def block(xs: Tensor, offs: Tensor, masks: Tensor | None, w_mat: Tensor, r0: int, r1: int):
        cols = _sample_columns(xs, offs, masks, (kh, kw), s, p, d, (r0, r1), wo)
        out = torch.matmul(w_mat, cols.reshape(xs.shape[0], groups, cpg * kk, -1))
        return out.reshape(xs.shape[0], k, r1 - r0, wo)

    recompute = checkpoint and torch.is_grad_enabled()
    per_image: list[Tensor] = []
    images: list[Tensor] = []
    for n0, n1, r0, r1 in _chunks(n, ho, c * kk * wo, max_chunk_elements):
        args = (x[n0:n1], offset[n0:n1, :, r0:r1])
        args += (None if mask is None else mask[n0:n1, :, r0:r1], w_mat, r0, r1)
        if recompute:
            out = _ckpt.checkpoint(block, *args, use_reentrant=False)
        else:
            out = block(*args)
        if r0 == 0 and r1 == ho:
            images.append(out)
        else:
            per_image.append(out)
            if r1 == ho:
                images.append(torch.cat(per_image, dim=2))
                per_image = []
    y = images[0] if len(images) == 1 else torch.cat(images, dim=0)
    if bias is not None:
        y = y + bias.reshape(1, k, 1, 1)
    return y


class DeformConv2dOp(nn.Module):
    """The weight and bias of a deformable convolution; ``forward(x, offset, mask=None)``.

    The interface of ``torchvision.ops.DeformConv2d``: offsets (and masks) come from elsewhere.
    ``leanconv.count`` counts it by :func:`~leanconv.cost.formulas.deform_conv_cost`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        kh, kw = _pair(kernel_size, "kernel_size")
        self.checkpoint = checkpoint
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        check_positive(name, in_channels=in_channels, out_channels=out_channels, groups=groups)
        check_positive(name, kernel_size=min(kh, kw), stride=min(self.stride))
        check_positive(name, dilation=min(self.dilation))
        if min(self.padding) < 0:
            raise ValueError(f"{name}: padding={self.padding} must not be negative")
        check_divisible(name, groups, in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = (kh, kw)
        kwargs = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kh, kw, **kwargs)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **kwargs)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Conv2d``: uniform in +-1/sqrt(fan_in) (kaiming, a=sqrt(5))."""
        reset_like_conv(self.weight, self.bias)

    def extra_repr(self) -> str:
        kh, kw = self.kernel_size
        out = f"{self.in_channels}->{self.out_channels}, k={kh}x{kw}, stride={self.stride}"
        out += f", padding={self.padding}, dilation={self.dilation}"
        if self.groups != 1:
            out += f", groups={self.groups}"
        out += f", bias={self.bias is not None}"
        return out + (", checkpoint=True" if self.checkpoint else "")

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(
            x, self.weight, offset, mask, self.bias, self.stride, self.padding, self.dilation,
            self.groups, checkpoint=self.checkpoint,
        )  # fmt: skip


@register_module_rule(DeformConv2dOp)
def _deform_rule(
    module: DeformConv2dOp, args: tuple, output: Tensor, convention: Convention
) -> tuple[str, OpCost]:
    """Closed form of one call: bilinear sampling plus the convolution on the sampled columns."""
    x, offset = args[0], args[1]
    mask = args[2] if len(args) > 2 else None
    spec = call_spec(module, x)
    offset_groups = offset.shape[1] // (2 * spec.taps)
    kind = "deform_conv2d_v2" if mask is not None else "deform_conv2d"
    return kind, deform_conv_cost(spec, offset_groups, mask is not None, convention)


class DeformConv2d(nn.Module):
    """Deformable convolution with learned offsets (v1; v2 masks when ``modulated=True``).

    ``offset = nn.Conv2d(C, 2 G kh kw (+ G kh kw), k, stride, padding, dilation)`` predicts the
    offsets (and mask logits) from the input at the output resolution; it is initialised to zero,
    so the layer starts as ``nn.Conv2d`` (times 0.5 when modulated: ``sigmoid(0)``, as in Zhu et al.
    2019). The sampling and convolution are :class:`DeformConv2dOp` ``deform``; the offset
    predictor is its sibling, so ``leanconv.count`` counts it as an ordinary convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        modulated: bool = False,
        checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        check_positive(name, offset_groups=offset_groups)
        if in_channels % offset_groups:
            raise ValueError(
                f"{name}: in_channels={in_channels} is not divisible by "
                f"offset_groups={offset_groups}"
            )
        self.deform = DeformConv2dOp(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            checkpoint, device, dtype,
        )  # fmt: skip
        kh, kw = self.deform.kernel_size
        self.offset_groups, self.modulated = offset_groups, modulated
        self._n_offsets = 2 * offset_groups * kh * kw
        n_out = self._n_offsets + (offset_groups * kh * kw if modulated else 0)
        self.offset = nn.Conv2d(
            in_channels, n_out, (kh, kw), self.deform.stride, self.deform.padding,
            self.deform.dilation, bias=True, device=device, dtype=dtype,
        )  # fmt: skip
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    @property
    def weight(self) -> Tensor:
        return self.deform.weight

    @property
    def bias(self) -> Tensor | None:
        return self.deform.bias

    def extra_repr(self) -> str:
        out = f"offset_groups={self.offset_groups}"
        return out + (", modulated (v2)" if self.modulated else "")

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The predicted offsets ``(N, 2 G kh kw, Ho, Wo)`` and mask (sigmoid) or None."""
        out = self.offset(x)
        if not self.modulated:
            return out, None
        return out[:, : self._n_offsets], torch.sigmoid(out[:, self._n_offsets :])

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offsets_and_mask(x)
        if mask is None:
            return self.deform(x, offset)
        return self.deform(x, offset, mask)


class ModulatedDeformConv2d(DeformConv2d):
    """Deformable ConvNets v2 (Zhu et al. 2019): ``DeformConv2d(..., modulated=True)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            offset_groups, bias, modulated=True, checkpoint=checkpoint, device=device, dtype=dtype,
        )  # fmt: skip


__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "DeformConv2d",
    "DeformConv2dOp",
    "ModulatedDeformConv2d",
    "deform_conv2d",
]
