"""accelerate(): correctness of whatever it picks, the cache, and the original left alone.

Which algorithm wins depends on the machine; the tests check what must hold whatever the timings.
"""

import pytest
import torch
from torch import nn

import leanconv
from leanconv.algorithms import native
from leanconv.nn.fast import FFTConv2d, NarrowConv2d, PackedConv2d, WinogradConv2d


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 16, 11, padding=5), nn.ReLU(),
        nn.Conv2d(16, 4, 1),
    ).eval()  # fmt: skip


def test_accelerate_is_exact_within_tolerance_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANCONV_CACHE_DIR", str(tmp_path))
    model = _model()
    x = torch.randn(2, 3, 24, 24)
    # the per-layer tuner alone (deploy=False); the inference form is tested below
    fast, report = leanconv.accelerate(model, x, tolerance=1e-4, repeats=3, deploy=False)
    assert all(type(m) is not WinogradConv2d for m in model.modules())  # original untouched
    names = [layer.name for layer in report.layers]
    assert names == ["0", "2", "4", "6"]
    big = report.layers[2]
    assert "fft" in big.errors and big.errors["fft"] < 1e-4  # an 11x11 kernel gets an FFT form
    narrow = {"narrow"} if native.available() else set()  # at most 64 output channels
    assert (
        set(report.layers[1].errors) == {"packed", "winograd2", "winograd4", "winograd6"} | narrow
    )
    assert set(report.layers[0].errors) == {"packed"} | narrow  # 3 input channels: direct forms
    for layer in report.layers:
        if layer.chosen != "native":
            assert layer.errors[layer.chosen] <= 1e-4
            assert layer.candidates[layer.chosen] < layer.native_ms
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert (out - ref).abs().max() / ref.abs().max() < 1e-3
    kinds = WinogradConv2d | FFTConv2d | PackedConv2d | NarrowConv2d
    replaced = [m for m in fast.modules() if isinstance(m, kinds)]
    assert len(replaced) == sum(layer.chosen != "native" for layer in report.layers)
    assert (tmp_path / "tuner.json").exists()
    _, again = leanconv.accelerate(model, x, tolerance=1e-4, repeats=3, deploy=False)
    assert again.cache_hits == 4  # every layer has a candidate; nothing re-timed


def test_a_tolerance_no_algorithm_meets_keeps_everything_native(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANCONV_CACHE_DIR", str(tmp_path))
    model = _model()
    fast, report = leanconv.accelerate(model, torch.randn(1, 3, 16, 16), tolerance=1e-12,
                                       repeats=2, use_cache=False, deploy=False)  # fmt: skip
    # only a bit-exact form may pass (oneDNN on a packed weight can be: same kernel); every
    # Winograd and FFT form is rejected
    for layer in report.layers:
        assert layer.chosen == "native" or layer.errors[layer.chosen] <= 1e-12
        assert not any(a.startswith(("winograd", "fft")) for a in layer.candidates)
    assert all(layer.rejected for layer in report.layers[1:3])
    kinds = (nn.Conv2d, nn.ReLU, nn.Sequential, PackedConv2d)
    assert all(type(m) in kinds for m in fast.modules())


def _conv_bn_relu_model():
    """Convolution, batch norm (trained statistics), ReLU, as the zoo builds its layers."""
    torch.manual_seed(1)
    layers = []
    for c_in, c_out in ((3, 16), (16, 32), (32, 32)):
        bn = nn.BatchNorm2d(c_out)
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
        layers.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), bn,
                                    nn.ReLU()))  # fmt: skip
    return nn.Sequential(*layers, nn.Conv2d(32, 4, 1)).eval()


def test_accelerate_deploys_folded_fused_and_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANCONV_CACHE_DIR", str(tmp_path))
    model = _conv_bn_relu_model()
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        ref = model(x)
    fast, report = leanconv.accelerate(model, x, tolerance=1e-4, repeats=2)
    # the original is left as it was
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    assert torch.equal(model(x), ref)
    if report.reverted:  # slower end to end on this machine: the original comes back
        assert fast is not model and torch.equal(fast(x), ref)
        return
    # every batch norm folded, every ReLU computed by the convolution before it
    assert report.folded == ["0.1", "1.1", "2.1"] and report.fused == ["0.2", "1.2", "2.2"]
    assert not any(isinstance(m, nn.BatchNorm2d | nn.ReLU) for m in fast.modules())
    assert all(getattr(fast.get_submodule(f"{i}.0"), "activation", None) == "relu"
               for i in range(3))  # fmt: skip
    assert report.memory_format in ("contiguous", "channels_last")
    # tuned in both layouts: the report holds the kept layout's choices, one per layer
    assert [layer.name for layer in report.layers] == ["0.0", "1.0", "2.0", "3"]
    layouts = next(n for n in report.notes if n.startswith("tuned in each layout"))
    assert "contiguous" in layouts and "channels_last" in layouts
    # the same function: against float64, as close as the original itself
    with torch.no_grad():
        out = fast(x)
        exact = model.double()(x.double()).float()
    scale = exact.abs().max()
    assert (out - exact).abs().max() / scale < 1e-4
    assert report.max_error == pytest.approx(float((out - ref).abs().max() / ref.abs().max()),
                                             rel=1e-3, abs=1e-9)  # fmt: skip
    assert out.dtype == x.dtype and out.shape == ref.shape


def test_the_timing_cache_tells_layouts_and_bias_apart():
    from leanconv.selection.tuner import _key

    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 8, 6, 6)
    nchw, cl = _key(conv, x, "c"), _key(conv, x.contiguous(memory_format=torch.channels_last), "c")
    assert nchw != cl
    assert _key(nn.Conv2d(8, 8, 3, padding=1), x, "c") != nchw  # a folded norm adds a bias


def test_a_reverted_model_is_reported_as_returned(tmp_path, monkeypatch):
    from leanconv.bench.timing import Timing
    from leanconv.selection import tuner

    monkeypatch.setenv("LEANCONV_CACHE_DIR", str(tmp_path))
    real = tuner.compare

    def slower_end_to_end(fns, **kwargs):
        if set(fns) == {"native", "fast"} and "fast" in fns and len(fns) == 2:
            return {"native": Timing(1.0, 1.0, 1.0, 1), "fast": Timing(2.0, 2.0, 2.0, 1)}
        return real(fns, **kwargs)

    monkeypatch.setattr(tuner, "compare", slower_end_to_end)
    model = _conv_bn_relu_model()
    fast, report = leanconv.accelerate(model, torch.randn(2, 3, 12, 12), repeats=1)
    assert report.reverted and fast is not model
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # the original returned
    assert (report.memory_format, report.folded, report.fused) == ("contiguous", [], [])


def test_close_contenders_are_timed_again_and_averaged(monkeypatch):
    from leanconv.bench.timing import Timing
    from leanconv.selection import tuner

    seen = []

    def second_round(fns, **kwargs):
        seen.append(set(fns))
        ms = {"native": 12.0, "winograd2": 7.0, "winograd4": 5.0}
        return {a: Timing(ms[a] / 1e3, 0, 0, 1) for a in fns}

    monkeypatch.setattr(tuner, "compare", second_round)
    fns = dict.fromkeys(["native", "winograd2", "winograd4", "winograd6"], lambda: None)
    first = {"native": 10.0, "winograd2": 5.0, "winograd4": 6.0, "winograd6": 9.0}
    again = tuner._runoff(first, fns, {})
    # F(2x2) and F(4x4) within 25 %: both and the native layer measured again; F(6x6) is not
    assert seen == [{"native", "winograd2", "winograd4"}]
    assert again == pytest.approx(
        {"native": 11.0, "winograd2": 6.0, "winograd4": 5.5, "winograd6": 9.0}
    )
    # one clear winner: nothing re-timed
    assert tuner._runoff({"native": 10.0, "winograd2": 5.0, "winograd4": 7.0}, fns, {}) == {
        "native": 10.0, "winograd2": 5.0, "winograd4": 7.0}  # fmt: skip
    assert len(seen) == 1
