"""Deformable convolution against independent references: ``F.conv2d`` (zero and integer
offsets), a brute-force loop over bilinear samples (fractional offsets), ``gradcheck``, the closed
form of its cost, and export (``torch.export``, ONNX run by onnxruntime)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import leanconv
from leanconv.cost.formulas import conv_cost, deform_conv_cost
from leanconv.nn.deform import (
    DeformConv2d,
    DeformConv2dOp,
    ModulatedDeformConv2d,
    _chunks,
    deform_conv2d,
)
from leanconv.spec import ConvSpec

F64 = torch.float64


def _bilinear(img: list, y: float, x: float) -> float:
    """torchvision's ``bilinear_interpolate``: zero outside, corners outside count as zero."""
    h, w = len(img), len(img[0])
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                total += (1 - abs(y - yy)) * (1 - abs(x - xx)) * img[yy][xx]
    return total


def _brute(x, w, offset, mask, bias, stride, padding, dilation, groups):
    """Direct loops over every output, channel and tap (tiny sizes only)."""
    n_, c_, _, _ = x.shape
    k_, cpg, kh, kw = w.shape
    ho, wo = offset.shape[2:]
    og = offset.shape[1] // (2 * kh * kw)
    xs, ws, offs = x.tolist(), w.tolist(), offset.tolist()
    ms = mask.tolist() if mask is not None else None
    out = torch.zeros(n_, k_, ho, wo, dtype=F64)
    for n in range(n_):
        for k in range(k_):
            grp = k // (k_ // groups)
            for oy in range(ho):
                for ox in range(wo):
                    acc = float(bias[k]) if bias is not None else 0.0
                    for cl in range(cpg):
                        c = grp * cpg + cl
                        g = c // (c_ // og)
                        for i in range(kh):
                            for j in range(kw):
                                t = g * kh * kw + i * kw + j
                                y = oy * stride[0] - padding[0] + i * dilation[0]
                                xx = ox * stride[1] - padding[1] + j * dilation[1]
                                y += offs[n][2 * t][oy][ox]
                                xx += offs[n][2 * t + 1][oy][ox]
                                m = ms[n][t][oy][ox] if ms is not None else 1.0
                                acc += ws[k][cl][i][j] * m * _bilinear(xs[n][c], y, xx)
                    out[n, k, oy, ox] = acc
    return out


def _out_size(h, w, k, s, p, d):
    return (
        (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1,
        (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1,
    )


geometry = st.fixed_dictionaries(
    {
        "n": st.integers(1, 2),
        "g": st.integers(1, 2),
        "og": st.integers(1, 2),
        "cpg": st.integers(1, 2),
        "kpg": st.integers(1, 2),
        "k": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "s": st.tuples(st.integers(1, 2), st.integers(1, 2)),
        "p": st.tuples(st.integers(0, 2), st.integers(0, 2)),
        "d": st.tuples(st.integers(1, 2), st.integers(1, 2)),
        "hw": st.tuples(st.integers(3, 6), st.integers(3, 6)),
        "modulated": st.booleans(),
        "bias": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def _case(gm):
    """Random tensors for one geometry (channels are a multiple of groups and offset groups)."""
    gen = torch.Generator().manual_seed(gm["seed"])
    c = gm["g"] * gm["og"] * gm["cpg"]
    k = gm["g"] * gm["kpg"]
    ho, wo = _out_size(*gm["hw"], gm["k"], gm["s"], gm["p"], gm["d"])
    kk = gm["k"][0] * gm["k"][1]
    x = torch.randn(gm["n"], c, *gm["hw"], generator=gen, dtype=F64)
    w = torch.randn(k, c // gm["g"], *gm["k"], generator=gen, dtype=F64)
    off = 3 * torch.randn(gm["n"], 2 * gm["og"] * kk, ho, wo, generator=gen, dtype=F64)
    mask = torch.rand(gm["n"], gm["og"] * kk, ho, wo, generator=gen, dtype=F64)
    b = torch.randn(k, generator=gen, dtype=F64)
    return x, w, off, (mask if gm["modulated"] else None), (b if gm["bias"] else None)


def _valid(gm) -> bool:
    ho, wo = _out_size(*gm["hw"], gm["k"], gm["s"], gm["p"], gm["d"])
    return ho >= 1 and wo >= 1


@settings(max_examples=25, deadline=None)
@given(geometry.filter(_valid))
def test_zero_offsets_equal_conv2d(gm):
    x, w, off, mask, b = _case(gm)
    off = torch.zeros_like(off)
    mask = None if mask is None else torch.ones_like(mask)
    y = deform_conv2d(x, w, off, mask, b, gm["s"], gm["p"], gm["d"], gm["g"])
    ref = F.conv2d(x, w, b, gm["s"], gm["p"], gm["d"], gm["g"])
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(geometry.filter(_valid))
def test_fractional_offsets_match_brute_force(gm):
    x, w, off, mask, b = _case(gm)
    y = deform_conv2d(x, w, off, mask, b, gm["s"], gm["p"], gm["d"], gm["g"])
    # the same in chunks of a single output row (and less than one row's columns)
    y_rows = deform_conv2d(
        x, w, off, mask, b, gm["s"], gm["p"], gm["d"], gm["g"], max_chunk_elements=1
    )
    ref = _brute(x, w, off, mask, b, gm["s"], gm["p"], gm["d"], gm["g"])
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y_rows, ref, rtol=1e-10, atol=1e-10)


def _shifted_conv(x, w, dy: int, dx: int, s, p, d, g):
    """Output (oy, ox) reads x at ``oy * s - p + i * d + dy`` (zero outside): a convolution
    without padding of a crop of the input padded by a wide margin."""
    m = 8
    xp = F.pad(x, (m, m, m, m))[:, :, m - p[0] + dy :, m - p[1] + dx :]
    ho, wo = _out_size(*x.shape[2:], w.shape[2:], s, p, d)
    return F.conv2d(xp, w, None, s, 0, d, g)[:, :, :ho, :wo]


def test_integer_offsets_equal_shifted_convolution():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 9, 7, generator=gen, dtype=F64)
    w = torch.randn(6, 2, 3, 3, generator=gen, dtype=F64)
    s, p, d, g = (2, 1), (1, 2), (1, 2), 2
    ho, wo = _out_size(9, 7, (3, 3), s, p, d)
    # no shift is F.conv2d itself (a check of the reference)
    torch.testing.assert_close(
        _shifted_conv(x, w, 0, 0, s, p, d, g), F.conv2d(x, w, None, s, p, d, g)
    )
    # one integer shift for every position and tap: a convolution of the shifted input
    off = torch.zeros(2, 18, ho, wo, dtype=F64)
    off[:, 0::2], off[:, 1::2] = 2.0, -1.0
    ref = _shifted_conv(x, w, 2, -1, s, p, d, g)
    torch.testing.assert_close(deform_conv2d(x, w, off, None, None, s, p, d, g), ref)
    # a different integer shift per tap: the sum over taps of one-tap shifted convolutions
    shifts = torch.randint(-3, 4, (9, 2), generator=gen)
    off = shifts.to(F64).reshape(1, 18, 1, 1).expand(2, 18, ho, wo).contiguous()
    ref = torch.zeros_like(ref)
    for t, (dy, dx) in enumerate(shifts.tolist()):
        one_tap = torch.zeros_like(w)
        one_tap[:, :, t // 3, t % 3] = w[:, :, t // 3, t % 3]
        ref += _shifted_conv(x, one_tap, dy, dx, s, p, d, g)
    torch.testing.assert_close(deform_conv2d(x, w, off, None, None, s, p, d, g), ref)


@pytest.mark.parametrize("modulated", [False, True])
def test_gradcheck(modulated):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 5, 6, generator=gen, dtype=F64, requires_grad=True)
    w = torch.randn(4, 2, 2, 3, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=F64, requires_grad=True)
    s, p, d, g = (1, 2), (1, 1), (2, 1), 2
    ho, wo = _out_size(5, 6, (2, 3), s, p, d)
    # offsets away from integers (where bilinear interpolation has a kink), some samples outside
    frac = 0.15 + 0.7 * torch.rand(2, 24, ho, wo, generator=gen, dtype=F64)
    whole = torch.randint(-3, 3, (2, 24, ho, wo), generator=gen).to(F64)
    off = (whole + frac).requires_grad_()
    mask = (
        torch.rand(2, 12, ho, wo, generator=gen, dtype=F64).requires_grad_() if modulated else None
    )

    def fn(x, w, off, mask, b):
        return deform_conv2d(x, w, off, mask, b, s, p, d, g, max_chunk_elements=50)

    assert torch.autograd.gradcheck(fn, (x, w, off, mask, b), fast_mode=True)


def test_gradcheck_full_jacobian_tiny():
    """Every entry of the Jacobian (not a random projection), two offset groups, groups=2."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 4, 4, generator=gen, dtype=F64, requires_grad=True)
    w = torch.randn(2, 1, 2, 2, generator=gen, dtype=F64, requires_grad=True)
    whole = torch.randint(-2, 2, (1, 16, 3, 3), generator=gen).to(F64)
    off = (whole + 0.15 + 0.7 * torch.rand(1, 16, 3, 3, generator=gen, dtype=F64)).requires_grad_()
    mask = torch.rand(1, 8, 3, 3, generator=gen, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: deform_conv2d(*a, groups=2), (x, w, off, mask))


def test_gradient_reaches_offsets_from_zero():
    """At zero offsets (the initial state of :class:`DeformConv2d`) the offset gradient is the
    one-sided derivative of bilinear interpolation: x[y, x+1] - x[y, x] for dx."""
    x = torch.arange(16.0, dtype=F64).reshape(1, 1, 4, 4) ** 2
    w = torch.ones(1, 1, 1, 1, dtype=F64)
    off = torch.zeros(1, 2, 4, 4, dtype=F64, requires_grad=True)
    deform_conv2d(x, w, off).sum().backward()
    xp = F.pad(x, (0, 1, 0, 1))
    torch.testing.assert_close(off.grad[0, 0], (xp[0, 0, 1:, :-1] - x[0, 0]))
    torch.testing.assert_close(off.grad[0, 1], (xp[0, 0, :-1, 1:] - x[0, 0]))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 12), st.integers(1, 20), st.integers(1, 2000))
def test_chunks_cover_every_row_within_budget(n, ho, per_row, budget):
    blocks = _chunks(n, ho, per_row, budget)
    covered = [(b, r) for n0, n1, r0, r1 in blocks for b in range(n0, n1) for r in range(r0, r1)]
    assert sorted(covered) == [(b, r) for b in range(n) for r in range(ho)]
    assert len(set(covered)) == len(covered)
    for n0, n1, r0, r1 in blocks:
        assert (n1 - n0) * (r1 - r0) * per_row <= max(budget, per_row)


def test_bad_arguments_name_the_value():
    x, w = torch.randn(1, 4, 5, 5), torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"offset shape \(1, 18, 2, 2\)"):
        deform_conv2d(x, w, torch.zeros(1, 18, 2, 2))
    with pytest.raises(ValueError, match="3 offset groups"):
        deform_conv2d(x, w, torch.zeros(1, 54, 3, 3))
    with pytest.raises(ValueError, match="mask shape"):
        deform_conv2d(x, w, torch.zeros(1, 18, 3, 3), torch.ones(1, 8, 3, 3))
    with pytest.raises(ValueError, match="offset_groups=3"):
        DeformConv2d(4, 4, 3, offset_groups=3)
    with pytest.raises(ValueError, match="out_channels=3 is not divisible by groups=2"):
        DeformConv2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_size=0"):
        DeformConv2dOp(4, 4, 0)


@pytest.mark.parametrize("cls", [DeformConv2d, ModulatedDeformConv2d])
def test_module_starts_as_conv2d_and_learns_offsets(cls):
    torch.manual_seed(0)
    m = cls(4, 6, 3, stride=2, padding=1, dilation=1, groups=2, offset_groups=2).double()
    x = torch.randn(2, 4, 8, 8, dtype=F64)
    scale = 0.5 if cls is ModulatedDeformConv2d else 1.0  # sigmoid(0) masks at initialisation
    ref = F.conv2d(x, m.weight * scale, m.bias, 2, 1, 1, 2)
    torch.testing.assert_close(m(x), ref)
    m(x).square().sum().backward()
    assert m.offset.weight.grad.abs().sum() > 0  # the zero-initialised predictor gets a gradient
    assert "offset_groups=2" in repr(m) and "k=3x3" in repr(m)


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_count_equals_closed_form(modulated, device):
    m = DeformConv2d(
        8, 16, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2,
        offset_groups=4, modulated=modulated, device=device,
    )  # fmt: skip
    shape = (3, 8, 11, 10)
    report = leanconv.count(m, shape)
    spec = ConvSpec(8, 16, (3, 2), shape[2:], (2, 1), (1, 0), (1, 2), 2, batch=3)
    channels = (3 if modulated else 2) * 4 * 6
    offset_spec = ConvSpec(8, channels, (3, 2), shape[2:], (2, 1), (1, 0), (1, 2), batch=3)
    deform = deform_conv_cost(spec, 4, modulated)
    assert report.total.macs == deform.macs + conv_cost(offset_spec).macs
    assert report.total.params == sum(p.numel() for p in m.parameters())
    assert not report.uncounted
    kinds = {r.name: r.kind for r in report.rows if r.macs}
    assert kinds == {
        "offset": "conv2d",
        "deform": "deform_conv2d_v2" if modulated else "deform_conv2d",
    }


def test_meta_forward_gives_shape():
    m = ModulatedDeformConv2d(8, 16, 3, stride=2, padding=1, device="meta")
    assert m(torch.empty(2, 8, 9, 9, device="meta")).shape == (2, 16, 5, 5)


def test_bfloat16_close_to_float64():
    torch.manual_seed(3)
    m = ModulatedDeformConv2d(8, 8, 3, padding=1)
    torch.nn.init.normal_(m.offset.weight, std=0.1)
    x = torch.randn(2, 8, 10, 10)
    ref = m.double()(x.double())
    y = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    err = (y.double() - ref).abs().max() / ref.abs().max()
    assert err < 3e-2


def _export_case():
    torch.manual_seed(4)
    m = DeformConv2d(4, 6, 3, stride=2, padding=1, offset_groups=2, modulated=True).eval()
    torch.nn.init.normal_(m.offset.weight, std=0.5)
    return m, torch.randn(2, 4, 9, 8)


def test_torch_export():
    m, x = _export_case()
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m, x = _export_case()
    path = tmp_path / "deform.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=True, verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), m(x), rtol=1e-4, atol=1e-5)


def test_checkpoint_gives_the_same_gradients():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 6, 5, generator=gen, dtype=F64, requires_grad=True)
    w = torch.randn(3, 4, 3, 3, generator=gen, dtype=F64, requires_grad=True)
    off = (2 * torch.randn(2, 18, 6, 5, generator=gen, dtype=F64)).requires_grad_()
    mask = torch.rand(2, 9, 6, 5, generator=gen, dtype=F64, requires_grad=True)
    grads = []
    for ckpt in (False, True):
        y = deform_conv2d(x, w, off, mask, padding=1, max_chunk_elements=100, checkpoint=ckpt)
        grads.append(torch.autograd.grad(y.sin().sum(), (x, w, off, mask)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
