"""The narrow direct convolution (``algorithms.narrow``, ``kernels/narrow_direct.c``) and its
module ``nn.NarrowConv2d``.

Reference: ``torch.nn.functional.conv2d`` (plus the residual, then ``relu``) in float64. An indexing mistake in the
kernel (a tap, a padded edge, a partial vector of channels) gives errors of the order of the
output itself; float32 direct summation stays below 1e-5 of it.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from leanconv.algorithms import narrow, native
from leanconv.nn import NarrowConv2d, PackedConv2d
from leanconv.selection import eligibility

pytestmark = pytest.mark.skipif(not native.available(), reason=native.status())


def _relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    assert y.shape == ref.shape and y.dtype == torch.float32
    return ((y.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


@st.composite
def geometries(draw):
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 7)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 4)))
    size = [draw(st.integers(max(1, r - 2 * p), r + 12)) for r, p in zip(reach, padding,
                                                                          strict=True)]  # fmt: skip
    return {
        "batch": draw(st.sampled_from([1, 3])),
        "cin": draw(st.sampled_from([1, 3, 8, 17, 32])),
        # whole and partial vectors of 8, and more than the four vectors of one pass
        "cout": draw(st.sampled_from([1, 2, 7, 8, 9, 24, 33, 40])),
        "kernel": kernel,
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "padding": padding,
        "dilation": dilation,
        "size": size,
        "bias": draw(st.booleans()),
        "relu": draw(st.booleans()),
        "channels_last": draw(st.booleans()),
        # a residual block's shortcut: none, in the output's layout, or in the other (copied)
        "residual": draw(st.sampled_from([None, "channels_last", "contiguous"])),
    }


def _residual_like(ref: torch.Tensor, layout: str | None) -> torch.Tensor | None:
    """A random residual of ``ref``'s shape in ``layout`` (None: no residual)."""
    if layout is None:
        return None
    r = torch.randn(ref.shape)
    return r.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else r


@settings(max_examples=80, deadline=None)
@given(geometries())
def test_matches_conv2d_in_float64(g):
    torch.manual_seed(0)
    x = torch.randn(g["batch"], g["cin"], *g["size"])
    if g["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(g["cout"], g["cin"], *g["kernel"])
    b = torch.randn(g["cout"]) if g["bias"] else None
    args = (g["stride"], g["padding"], g["dilation"])
    ref = F.conv2d(x.double(), w.double(), None if b is None else b.double(), *args)
    residual = _residual_like(ref, g["residual"])
    if residual is not None:
        ref = ref + residual.double()
    if g["relu"]:
        ref = ref.relu()
    packed = narrow.pack(w)
    y = narrow.conv2d(x, packed, narrow.pack_bias(b, packed.shape[-1]), g["cout"], *args,
                      activation="relu" if g["relu"] else None, residual=residual)  # fmt: skip
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert _relative_error(y, ref) < 1e-5


@pytest.mark.parametrize("kernel", [(3, 1), (1, 3), (3, 3)])
@pytest.mark.parametrize("padding", [(0, 0), (1, 1), (1, 0), (0, 1)])
@pytest.mark.parametrize("cout", [1, 5, 8, 12, 16])
@pytest.mark.parametrize("with_residual", [False, True])
def test_row_blocks_of_the_thinnest_factors(kernel, padding, cout, with_residual):
    """Stride 1 and one vector of output channels (at most 8; 9-16 where the kernel's vectors
    hold 16) take the row-blocked path (several output rows share each input value); sizes with
    a remainder of rows and pixels, smaller than one block, taps over every edge, and an input
    whose pixels are further apart than its channels; with and without a residual added before
    the ReLU. The channel-reducing path, which would take cout 1 here, is off."""
    torch.manual_seed(2)
    for size in [(1, 1), (2, 3), (5, 7), (13, 32), (32, 13)]:
        if any(s + 2 * p < k for s, p, k in zip(size, padding, kernel, strict=True)):
            continue
        wide = torch.randn(3, 40, *size).contiguous(memory_format=torch.channels_last)
        for x in (wide[:, :32].contiguous(memory_format=torch.channels_last), wide[:, 3:35]):
            w, b = torch.randn(cout, 32, *kernel), torch.randn(cout)
            ref = F.conv2d(x.double(), w.double(), b.double(), padding=padding)
            residual = _residual_like(ref, "channels_last" if with_residual else None)
            ref = (ref if residual is None else ref + residual.double()).relu()
            packed = narrow.pack(w)
            with native.narrow_reduce_from(0):
                y = narrow.conv2d(x, packed, narrow.pack_bias(b, packed.shape[-1]), cout,
                                  (1, 1), padding, (1, 1), activation="relu",
                                  residual=residual)  # fmt: skip
            assert _relative_error(y, ref) < 1e-5, (size, x.stride())


@pytest.mark.parametrize("cin", [16, 32, 48, 64])
@pytest.mark.parametrize("cout", [1, 2, 3, 4])
def test_channel_reducing_path(cin, cout):
    """At most 4 output channels from a whole number of vectors of input channels take the path
    vectorised over the input channels (``kernels/narrow_reduce.h``): against float64
    ``F.conv2d``, and against the output-channel path (``narrow_reduce_from(0)``), which sums in
    another order, so that the switch is seen to change the path; kernels, strides, dilations
    and paddings whose taps reach past every edge, rows whose pixels leave a remainder of the
    pixel block, an input whose pixels are further apart than its channels, and a residual added
    before the ReLU."""
    torch.manual_seed(3)
    cases = [((1, 1), (1, 1), (0, 0), (1, 1)), ((3, 1), (1, 1), (1, 0), (1, 1)),
             ((1, 3), (1, 2), (0, 2), (1, 2)), ((3, 3), (2, 1), (1, 1), (1, 1)),
             ((3, 3), (1, 1), (0, 3), (2, 1))]  # fmt: skip
    wide = torch.randn(2, cin + 8, 9, 23).contiguous(memory_format=torch.channels_last)
    for x in (wide[:, :cin].contiguous(memory_format=torch.channels_last), wide[:, 5 : 5 + cin]):
        for kernel, stride, padding, dilation in cases:
            w, b = torch.randn(cout, cin, *kernel), torch.randn(cout)
            ref = F.conv2d(x.double(), w.double(), b.double(), stride, padding, dilation)
            residual = torch.randn(ref.shape).contiguous(memory_format=torch.channels_last)
            ref = (ref + residual.double()).relu()
            packed = narrow.pack(w)

            def run(packed=packed, b=b, stride=stride, padding=padding, dilation=dilation,
                    residual=residual, x=x):  # fmt: skip
                bias = narrow.pack_bias(b, packed.shape[-1])
                return narrow.conv2d(x, packed, bias, cout, stride, padding, dilation,
                                     activation="relu", residual=residual)  # fmt: skip

            reduced = run()
            with native.narrow_reduce_from(0):
                general = run()
            assert _relative_error(reduced, ref) < 1e-5, (kernel, stride, x.stride())
            assert _relative_error(general, ref) < 1e-5, (kernel, stride, x.stride())
            assert not torch.equal(reduced, general)


@pytest.mark.parametrize("cout", [9, 16, 24, 33])
def test_both_vector_widths(cout):
    """Layers of more than 8 output channels computed with vectors of 8 (``narrow_widest(8)``)
    and with the machine's widest (16 with AVX-512): both against float64 ``F.conv2d``, the
    general and the row-blocked paths (3x3, stride 1; 3x3, stride 2), with a residual."""
    torch.manual_seed(4)
    x = torch.randn(2, 12, 11, 17).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(cout, 12, 3, 3), torch.randn(cout)
    for stride in [(1, 1), (2, 1)]:
        ref = F.conv2d(x.double(), w.double(), b.double(), stride, 1)
        residual = torch.randn(ref.shape).contiguous(memory_format=torch.channels_last)
        ref = (ref + residual.double()).relu()
        for width in [8, 16]:
            with native.narrow_widest(width):
                packed = narrow.pack(w)
                assert packed.shape[-1] % native.narrow_vector(cout) == 0
                y = narrow.conv2d(x, packed, narrow.pack_bias(b, packed.shape[-1]), cout,
                                  stride, (1, 1), (1, 1), activation="relu",
                                  residual=residual)  # fmt: skip
            assert _relative_error(y, ref) < 1e-5, (width, stride)
    with native.narrow_widest(8):
        assert native.narrow_vector(cout) == 8


def test_vector_width_follows_the_channels():
    """Up to 8 output channels fill vectors of 8; more fill the machine's widest vectors (16
    floats with AVX-512, else 8): the packing pads to a whole number of them."""
    assert native.narrow_vector(1) == native.narrow_vector(8) == 8
    wide = native.narrow_vector(9)
    assert wide in (8, 16) and native.narrow_vector(64) == wide
    assert narrow.pack(torch.randn(9, 2, 1, 1)).shape[-1] == -(-9 // wide) * wide == 16
    assert narrow.pack(torch.randn(24, 2, 1, 1)).shape[-1] == -(-24 // wide) * wide


def test_input_whose_channels_are_a_slice():
    """Pixels further apart than the channels (a channel slice of a wider tensor): the kernel
    reads the input's own strides."""
    torch.manual_seed(1)
    wide = torch.randn(2, 40, 9, 11).contiguous(memory_format=torch.channels_last)
    x = wide[:, 4:20]
    assert x.stride(1) == 1 and x.stride(3) == 40
    w = torch.randn(8, 16, 3, 3)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    y = narrow.conv2d(x, narrow.pack(w), None, 8, (1, 1), (1, 1), (1, 1))
    assert _relative_error(y, ref) < 1e-5


def test_pack_layout_and_bias_padding():
    w = torch.arange(2 * 3 * 2 * 1, dtype=torch.float32).reshape(2, 3, 2, 1)
    p = narrow.pack(w)
    assert p.shape == (2, 1, 3, native.narrow_vector(2)) == (2, 1, 3, 8)
    assert torch.equal(p[1, 0, 2, :2], w[:, 2, 1, 0]) and not p[..., 2:].any()
    b = narrow.pack_bias(torch.tensor([1.0, 2.0]), 8)
    assert b.tolist() == [1.0, 2.0] + [0.0] * 6
    assert narrow.pack_bias(None, 8) is None


def test_wrong_operands_never_reach_the_kernel():
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    packed = narrow.pack(torch.randn(8, 4, 3, 3))
    out = torch.empty(1, 8, 5, 5, memory_format=torch.channels_last)  # should be 4x4
    with pytest.raises(ValueError, match="wrong size"):
        native.narrow(x, packed, out, (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="packing"):
        native.narrow(x, packed[..., :4].contiguous(), out[:, :4, :4, :4], (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="activation"):
        narrow.conv2d(x, packed, None, 8, (1, 1), (0, 0), (1, 1), activation="gelu")
    good = torch.empty(1, 8, 4, 4, memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="residual of shape"):  # a broadcast is the caller's
        narrow.conv2d(x, packed, None, 8, (1, 1), (0, 0), (1, 1), residual=torch.randn(1, 8, 1, 1))
    with pytest.raises(ValueError, match="residual without"):
        native.narrow(x, packed, good, (1, 1), (0, 0), (1, 1), residual=torch.randn(1, 8, 4, 4))


class TestModule:
    def _conv(self, **kw):
        torch.manual_seed(2)
        return torch.nn.Conv2d(16, 8, (3, 1), padding=(1, 0), **kw)

    def test_from_conv_and_from_packed(self):
        conv = self._conv()
        x = torch.randn(3, 16, 10, 12)
        ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=(1, 0))
        with torch.no_grad():
            plain = NarrowConv2d.from_conv(conv).eval()
            fused = NarrowConv2d.from_conv(PackedConv2d.from_conv(conv, activation="relu"))
            assert fused.activation == "relu"
            assert _relative_error(plain(x), ref) < 1e-5
            assert _relative_error(fused.eval()(x), ref.relu()) < 1e-5
            back = fused.as_packed()
            assert type(back) is PackedConv2d and back.activation == "relu"
            assert _relative_error(back(x), ref.relu()) < 1e-5

    def test_cache_follows_the_weight(self):
        layer = NarrowConv2d.from_conv(self._conv()).eval()
        x = torch.randn(2, 16, 7, 7)
        with torch.no_grad():
            layer(x)
            layer.weight.mul_(2)
            layer.bias.add_(1)
            ref = F.conv2d(x.double(), layer.weight.double(), layer.bias.double(), padding=(1, 0))
            assert _relative_error(layer(x), ref) < 1e-5

    def test_trains_through_the_oneDNN_path(self):
        """While autograd records, the layer runs ``F.conv2d``: gradients reach the weight and
        equal those of ``nn.Conv2d``."""
        conv = self._conv()
        layer = NarrowConv2d.from_conv(conv)
        x = torch.randn(2, 16, 6, 6)
        layer(x).square().sum().backward()
        conv(x).square().sum().backward()
        assert torch.allclose(layer.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-4)

    def test_other_dtypes_groups_and_min_batch_fall_back(self):
        conv = self._conv().double()
        layer = NarrowConv2d.from_conv(conv).eval()
        x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
        with torch.no_grad():
            y = layer(x)
        assert y.dtype == torch.float64
        assert torch.allclose(y, conv(x), atol=1e-12)
        grouped = NarrowConv2d(16, 8, 3, padding=1, groups=2).eval()
        xg = torch.randn(1, 16, 5, 5)
        with torch.no_grad():
            ref = F.conv2d(xg, grouped.weight, grouped.bias, padding=1, groups=2)
            assert torch.allclose(grouped(xg), ref, atol=1e-5)
        assert not eligibility.narrow(torch.nn.Conv2d(16, 8, 3, groups=2))
        small = NarrowConv2d.from_conv(self._conv()).eval()
        small.min_batch = 4  # batch 2 runs oneDNN, the same function
        with torch.no_grad():
            ref = F.conv2d(x.float(), small.weight, small.bias, padding=(1, 0))
            assert torch.allclose(small(x.float()), ref, atol=1e-5)

    def test_copies_drop_the_cache(self):
        layer = NarrowConv2d.from_conv(self._conv()).eval()
        with torch.no_grad():
            layer(torch.randn(1, 16, 5, 5))
        assert layer._cache is not None
        assert copy.deepcopy(layer)._cache is None


def test_eligibility_limits():
    assert eligibility.narrow(torch.nn.Conv2d(64, 64, 3))
    assert not eligibility.narrow(torch.nn.Conv2d(64, 65, 1))
    assert not eligibility.narrow(torch.nn.Conv2d(8, 8, 3, padding_mode="reflect"))
    assert eligibility.narrow(PackedConv2d(8, 8, 3))
