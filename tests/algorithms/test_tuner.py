"""accelerate(): correctness of whatever it picks, the cache, and the original left alone.

Which algorithm wins depends on the machine; the tests check what must hold whatever the timings.
"""

import torch
from torch import nn

import leanconv
from leanconv.nn.fast import FFTConv2d, PackedConv2d, WinogradConv2d


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
    fast, report = leanconv.accelerate(model, x, tolerance=1e-4, repeats=3)
    assert all(type(m) is not WinogradConv2d for m in model.modules())  # original untouched
    names = [layer.name for layer in report.layers]
    assert names == ["0", "2", "4", "6"]
    big = report.layers[2]
    assert "fft" in big.errors and big.errors["fft"] < 1e-4  # an 11x11 kernel gets an FFT form
    assert set(report.layers[1].errors) == {"packed", "winograd2", "winograd4", "winograd6"}
    assert set(report.layers[0].errors) == {"packed"}  # 3 input channels: direct forms only
    for layer in report.layers:
        if layer.chosen != "native":
            assert layer.errors[layer.chosen] <= 1e-4
            assert layer.candidates[layer.chosen] < layer.native_ms
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert (out - ref).abs().max() / ref.abs().max() < 1e-3
    kinds = WinogradConv2d | FFTConv2d | PackedConv2d
    replaced = [m for m in fast.modules() if isinstance(m, kinds)]
    assert len(replaced) == sum(layer.chosen != "native" for layer in report.layers)
    assert (tmp_path / "tuner.json").exists()
    _, again = leanconv.accelerate(model, x, tolerance=1e-4, repeats=3)
    assert again.cache_hits == 4  # every layer has a candidate; nothing re-timed


def test_a_tolerance_no_algorithm_meets_keeps_everything_native(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANCONV_CACHE_DIR", str(tmp_path))
    model = _model()
    fast, report = leanconv.accelerate(model, torch.randn(1, 3, 16, 16), tolerance=1e-12,
                                       repeats=2, use_cache=False)  # fmt: skip
    # only a bit-exact form may pass (oneDNN on a packed weight can be: same kernel); every
    # Winograd and FFT form is rejected
    for layer in report.layers:
        assert layer.chosen == "native" or layer.errors[layer.chosen] <= 1e-12
        assert not any(a.startswith(("winograd", "fft")) for a in layer.candidates)
    assert all(layer.rejected for layer in report.layers[1:3])
    kinds = (nn.Conv2d, nn.ReLU, nn.Sequential, PackedConv2d)
    assert all(type(m) in kinds for m in fast.modules())
