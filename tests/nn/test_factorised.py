"""Factorised convolutions against independent references: factor containers against explicit
loops, each layer (run as its chain of factor convolutions) against ``F.conv2d`` with the dense
kernel in float64 over random geometries, counts against closed forms, export."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import leanconv
from leanconv.cost.formulas import conv_macs
from leanconv.decompose.factors import CPFactors, TTFactors, Tucker2Factors
from leanconv.nn.factorised import (
    CPConv2d,
    TTConv2d,
    TuckerConv2d,
    cp_conv2d,
    tt_conv2d,
    tucker2_conv2d,
)
from leanconv.spec import ConvSpec

F64 = torch.float64


def _randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=F64)


def _factors(kind: str, k: int, c: int, kh: int, kw: int, ranks, gen):
    if kind == "cp":
        r = ranks[0]
        return CPFactors(_randn(gen, k, r), _randn(gen, c, r), _randn(gen, kh, r),
                         _randn(gen, kw, r), _randn(gen, r))  # fmt: skip
    if kind == "tucker":
        r_out, r_in = ranks[:2]
        return Tucker2Factors(_randn(gen, r_out, r_in, kh, kw), _randn(gen, k, r_out),
                              _randn(gen, c, r_in))  # fmt: skip
    r1, r2, r3 = ranks
    return TTFactors((_randn(gen, 1, c, r1), _randn(gen, r1, kh, r2), _randn(gen, r2, kw, r3),
                      _randn(gen, r3, k, 1)))  # fmt: skip


def _loops(f) -> torch.Tensor:
    """The kernel element by element from the defining sums."""
    k_, c_, kh, kw = f.shape
    w = torch.zeros(k_, c_, kh, kw, dtype=F64)
    for k, c, i, j in itertools.product(range(k_), range(c_), range(kh), range(kw)):
        if isinstance(f, CPFactors):
            w[k, c, i, j] = sum(
                f.weights[r] * f.output[k, r] * f.input[c, r] * f.height[i, r] * f.width[j, r]
                for r in range(f.rank)
            )
        elif isinstance(f, Tucker2Factors):
            w[k, c, i, j] = sum(
                f.core[s, r, i, j] * f.output[k, s] * f.input[c, r]
                for s in range(f.ranks[0])
                for r in range(f.ranks[1])
            )
        else:
            g1, g2, g3, g4 = f.cores
            w[k, c, i, j] = (g1[0, c : c + 1] @ g2[:, i] @ g3[:, j] @ g4[:, k]).item()
    return w


@pytest.mark.parametrize("kind", ["cp", "tucker", "tt"])
def test_to_dense_matches_loops(kind):
    gen = torch.Generator().manual_seed(0)
    f = _factors(kind, 3, 4, 3, 2, (2, 3, 2), gen)
    assert f.shape == (3, 4, 3, 2)
    torch.testing.assert_close(f.to_dense(), _loops(f))


def test_containers_name_bad_shapes():
    z = torch.zeros
    with pytest.raises(ValueError, match="factor ranks differ"):
        CPFactors(z(3, 2), z(4, 2), z(3, 2), z(3, 5))
    with pytest.raises(ValueError, match=r"weights shape \(3,\) != \(2,\)"):
        CPFactors(z(3, 2), z(4, 2), z(3, 2), z(3, 2), z(3))
    with pytest.raises(ValueError, match="input .* rank != core"):
        Tucker2Factors(z(2, 3, 3, 3), z(5, 2), z(4, 2))
    with pytest.raises(ValueError, match="ranks of neighbouring cores differ"):
        TTFactors((z(1, 4, 2), z(3, 3, 2), z(2, 3, 2), z(2, 5, 1)))
    with pytest.raises(ValueError, match="boundary ranks must be 1"):
        TTFactors((z(2, 4, 2), z(2, 3, 2), z(2, 3, 2), z(2, 5, 1)))
    with pytest.raises(ValueError, match="rank=0"):
        CPConv2d(4, 4, 3, 0)
    with pytest.raises(ValueError, match=r"ranks=\(2, 2\)"):
        TTConv2d(4, 4, 3, (2, 2))
    with pytest.raises(ValueError, match="stride"):
        TuckerConv2d(4, 4, 3, 2, 2, stride=0)


LAYERS = {"cp": (CPConv2d, cp_conv2d), "tucker": (TuckerConv2d, tucker2_conv2d),
          "tt": (TTConv2d, tt_conv2d)}  # fmt: skip

geometry = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(sorted(LAYERS)),
        "n": st.integers(1, 2),
        "c": st.integers(1, 5),
        "k": st.integers(1, 5),
        "kernel": st.tuples(st.integers(1, 4), st.integers(1, 4)),
        "ranks": st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
        "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "padding": st.tuples(*(st.integers(0, 3) for _ in range(4))),
        "dilation": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "hw": st.tuples(st.integers(1, 10), st.integers(1, 10)),
        "bias": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def _fits(g) -> bool:
    t, b, l, r = g["padding"]
    (kh, kw), (dh, dw), (h, w) = g["kernel"], g["dilation"], g["hw"]
    return h + t + b >= dh * (kh - 1) + 1 and w + l + r >= dw * (kw - 1) + 1


def _build(g):
    gen = torch.Generator().manual_seed(g["seed"])
    kh, kw = g["kernel"]
    f = _factors(g["kind"], g["k"], g["c"], kh, kw, g["ranks"], gen)
    t, b, l, r = g["padding"]
    bias = _randn(gen, g["k"]) if g["bias"] else None
    cls, fn = LAYERS[g["kind"]]
    layer = cls.from_factors(f, bias, g["stride"], ((t, b), (l, r)), g["dilation"])
    x = _randn(gen, g["n"], g["c"], *g["hw"])
    return f, layer, fn, x, bias


@settings(max_examples=60, deadline=None)
@given(geometry.filter(_fits))
def test_factorised_equals_dense_conv(g):
    f, layer, fn, x, bias = _build(g)
    t, b, l, r = g["padding"]
    dense = f.to_dense()
    ref = F.conv2d(F.pad(x, (l, r, t, b)), dense, bias, g["stride"], 0, g["dilation"])
    y = layer(x)
    scale = ref.abs().max().item() + 1
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12 * scale)
    torch.testing.assert_close(
        fn(x, f, bias, g["stride"], ((t, b), (l, r)), g["dilation"]), y, rtol=0, atol=0
    )
    torch.testing.assert_close(layer.to_dense(), dense)
    torch.testing.assert_close(layer.to_conv2d()(x), ref, rtol=1e-12, atol=1e-12 * scale)


def _factor_specs(g) -> list[ConvSpec]:
    """The factor convolutions of each layer, written out from the papers' chains."""
    n, c, k, (kh, kw), (h, w) = g["n"], g["c"], g["k"], g["kernel"], g["hw"]
    (sh, sw), (dh, dw), (t, b, l, r) = g["stride"], g["dilation"], g["padding"]
    ranks, bias = g["ranks"], g["bias"]
    ho = (h + t + b - dh * (kh - 1) - 1) // sh + 1
    wo = (w + l + r - dw * (kw - 1) - 1) // sw + 1

    def spec(ci, co, kern, size, s=1, p=0, d=1, groups=1, has_bias=False):
        return ConvSpec(ci, co, kern, size, s, p, d, groups, bias=has_bias, batch=n, dtype=F64)

    if g["kind"] == "tucker":
        r_out, r_in = ranks[:2]
        return [spec(c, r_in, 1, (h, w)),
                spec(r_in, r_out, (kh, kw), (h, w), (sh, sw), ((t, b), (l, r)), (dh, dw)),
                spec(r_out, k, 1, (ho, wo), has_bias=bias)]  # fmt: skip
    r1, r2, r3 = (ranks[0],) * 3 if g["kind"] == "cp" else ranks
    groups = (r1, r2) if g["kind"] == "cp" else (1, 1)
    return [spec(c, r1, 1, (h, w)),
            spec(r1, r2, (kh, 1), (h, w), (sh, 1), ((t, b), (0, 0)), (dh, 1), groups[0]),
            spec(r2, r3, (1, kw), (ho, w), (1, sw), ((0, 0), (l, r)), (1, dw), groups[1]),
            spec(r3, k, 1, (ho, wo), has_bias=bias)]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(geometry.filter(_fits))
def test_count_equals_closed_form_of_factor_convs(g):
    _, layer, _, x, _ = _build(g)
    specs = _factor_specs(g)
    report = leanconv.count(layer, tuple(x.shape))
    assert report.total.macs == sum(conv_macs(s) for s in specs)
    assert [s.output_shape for s in layer.conv_specs(x.shape)] == [s.output_shape for s in specs]
    assert layer.cost(x.shape).macs == report.total.macs
    assert report.total.params == sum(p.numel() for p in layer.parameters())
    assert not report.uncounted
    assert layer(x).shape == specs[-1].output_shape


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_from_factors_like_conv_copies_geometry_and_bias(kind):
    gen = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)).double()
    f = _factors(kind, 6, 4, 3, 2, (2, 3, 2), gen)
    cls = LAYERS[kind][0]
    layer = cls.from_factors(f, like=conv)
    assert (layer.stride, layer.padding, layer.dilation) == ((2, 1), ((1, 1), (0, 0)), (1, 2))
    torch.testing.assert_close(layer.bias, conv.bias)
    assert layer.bias.data_ptr() != conv.bias.data_ptr()  # a copy, not the conv's parameter
    x = _randn(gen, 2, 4, 9, 8)
    with torch.no_grad():
        conv.weight.copy_(f.to_dense())
    torch.testing.assert_close(layer(x), conv(x))
    with pytest.raises(ValueError, match="groups=2"):
        cls.from_factors(f, like=nn.Conv2d(4, 6, (3, 2), groups=2))
    with pytest.raises(ValueError, match=r"like's weight \(6, 4, 3, 3\)"):
        cls.from_factors(f, like=nn.Conv2d(4, 6, 3))


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_random_init_meta_bfloat16_and_repr(kind):
    args = {"cp": (8,), "tucker": (4, 6), "tt": ((3, 4, 5),)}[kind]
    cls = LAYERS[kind][0]
    torch.manual_seed(0)
    layer = cls(8, 12, 3, *args, stride=2, padding="valid", dilation=1)
    x = torch.randn(2, 8, 11, 10)
    ref = layer.double()(x.double())
    ref_conv = nn.Conv2d(8, 12, 3, stride=2).double()
    with torch.no_grad():
        ref_conv.weight.copy_(layer.to_dense())
        ref_conv.bias.copy_(layer.bias)
    torch.testing.assert_close(ref, ref_conv(x.double()))
    y = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert (y.double() - ref).abs().max() <= 3e-2 * ref.abs().max()
    meta = cls(8, 12, 3, *args, stride=2, device="meta")
    assert meta(torch.empty(2, 8, 11, 10, device="meta")).shape == (2, 12, 5, 4)
    assert leanconv.count(meta, (2, 8, 11, 10)).total.macs == layer.cost((2, 8, 11, 10)).macs
    assert "8->12, k=3x3" in repr(layer) and "stride=(2, 2)" in repr(layer)


def test_torch_export_and_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(5)
    pad = ((1, 0), (2, 1))  # asymmetric: an explicit pad before the spatial factors
    model = nn.Sequential(
        CPConv2d(4, 6, 3, 3, stride=(2, 1), padding=pad),
        TuckerConv2d(6, 5, (3, 2), 2, 3, padding=pad, dilation=(1, 2)),
        TTConv2d(5, 4, 3, (2, 3, 2), padding=1, bias=False),
    ).eval()
    x = torch.randn(2, 4, 12, 10)
    ep = torch.export.export(model, (x,))
    torch.testing.assert_close(ep.module()(x), model(x))
    path = tmp_path / "factorised.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), model(x), rtol=1e-4, atol=1e-5)


def test_containers_take_tensorly_outputs_as_documented():
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import parafac, partial_tucker, tensor_train

    with tl.backend_context("pytorch"):  # restores the previous backend
        w = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(7), dtype=F64)
        cp = parafac(w, 4, n_iter_max=20, init="random", random_state=0)
        cp_f = CPFactors(*cp.factors, weights=cp.weights)
        torch.testing.assert_close(cp_f.to_dense(), tl.cp_to_tensor(cp))
        (core, (u_out, u_in)), _ = partial_tucker(
            w, rank=[3, 2], modes=[0, 1], init="random", random_state=0
        )
        tucker = Tucker2Factors(core, u_out, u_in)
        rebuilt = tl.tenalg.multi_mode_dot(core, [u_out, u_in], modes=[0, 1])
        torch.testing.assert_close(tucker.to_dense(), rebuilt)
        # full TT ranks of the (C, kh, kw, K)-ordered kernel: exact
        tt = TTFactors(tuple(tensor_train(w.permute(1, 2, 3, 0), rank=[1, 5, 15, 6, 1]).factors))
        torch.testing.assert_close(tt.to_dense(), w)
