"""Local sensitivities (large models): one whole-model divergence per method and layer, the
other rewrites scaled by the square of their output error relative to it."""

import pytest
import torch
from torch import nn

from leanconv.compress.pipeline import CompressConfig
from leanconv.compress.planning.sensitivity import local_divergences, measured_candidates
from leanconv.compress.replace import decompose_layer


def test_local_measures_one_anchor_per_method_and_scales_the_rest():
    errors = {("svd", 4, "direct"): 0.4, ("svd", 8, "direct"): 0.2, ("svd", 16, "direct"): 0.1,
              ("tucker2", (4, 4), "direct"): 0.3}  # fmt: skip
    measured = []

    def measure(key):
        measured.append(key)
        return (0.02, 0.004, (0.01, 0.03))

    out = local_divergences(errors, measure)
    assert measured == [("svd", 8, "direct"), ("tucker2", (4, 4), "direct")]  # the medians
    assert out[("svd", 8, "direct")] == (0.02, 0.004, (0.01, 0.03))
    mean, se, samples = out[("svd", 4, "direct")]  # twice the error: four times the divergence
    assert mean == pytest.approx(0.08) and se == pytest.approx(0.016)
    assert samples == pytest.approx((0.04, 0.12))
    assert out[("svd", 16, "direct")][0] == pytest.approx(0.005)


def test_local_candidates_agree_with_whole_model_at_the_anchor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 5)).eval()  # fmt: skip
    calibration = torch.randn(16, 3, 8, 8)
    layer = model[2]
    with torch.no_grad():
        x = model[1](model[0](calibration))
        reference = torch.log_softmax(model(calibration).double(), 1)
    modules = {("keep", None, "direct"): layer}
    for r in (2, 4, 8):
        modules[("spatial_svd", r, "direct")] = decompose_layer(layer, "spatial_svd", r).module
    errors = dict.fromkeys(modules, 0.0)
    timings = dict.fromkeys(modules, 1.0)
    args = (model, "2", layer, x, modules, errors, timings, calibration, reference, True)
    full = {c.key: c for c in measured_candidates(*args)}
    local = {c.key: c for c in measured_candidates(*args, local=True)}
    anchor = ("spatial_svd", 4, "direct")  # the median output error of the three
    assert local[anchor].sensitivity == pytest.approx(full[anchor].sensitivity)
    assert local[("keep", None, "direct")].sensitivity == 0.0
    # output errors fall with rank, so do the scaled sensitivities, as the measured ones do
    ranks = (2, 4, 8)
    for got in (local, full):
        values = [got[("spatial_svd", r, "direct")].sensitivity for r in ranks]
        assert values == sorted(values, reverse=True)


def test_config_refuses_an_unknown_sensitivity_mode():
    with pytest.raises(ValueError, match="sensitivity='global'"):
        CompressConfig(sensitivity="global")


def test_exact_or_broken_rewrites_are_measured_not_scaled():
    errors = {("tucker2", (8, 8), "direct"): 2e-7, ("tucker2", (2, 2), "direct"): 0.5,
              ("tucker2", (4, 4), "direct"): 0.25, ("cp", 4, "direct"): float("nan")}  # fmt: skip
    measured = []

    def measure(key):
        measured.append(key)
        return (0.1 if key[1] == (2, 2) else 0.001, 0.0, (0.0,))

    out = local_divergences(errors, measure)
    # the full-rank rewrite (float rounding only) and the NaN one are measured on their own;
    # the two lossy ones share one anchor
    assert ("tucker2", (8, 8), "direct") in measured and ("cp", 4, "direct") in measured
    assert len(measured) == 3 and out[("tucker2", (8, 8), "direct")][0] == 0.001
    anchor = next(k for k in measured if k[1] in ((2, 2), (4, 4)))
    other = ({("tucker2", (2, 2), "direct"), ("tucker2", (4, 4), "direct")} - {anchor}).pop()
    expected = out[anchor][0] * (errors[other] / errors[anchor]) ** 2
    assert out[other][0] == pytest.approx(expected)


@pytest.mark.parametrize("n, size, expected", [(64, 4, 64), (32, 56, 8), (32, 28, 21), (4, 56, 4)])
def test_output_errors_are_measured_on_enough_images_to_cover_the_positions(n, size, expected):
    from leanconv.compress.planning.sensitivity import ERROR_POSITIONS, error_inputs

    xs = error_inputs(torch.randn(n, 2, size, size))
    assert xs.shape[0] == expected
    assert xs.shape[0] == n or xs.shape[0] * size * size >= ERROR_POSITIONS


def test_rewrites_that_surgery_would_roll_back_are_not_planned_with():
    from leanconv.compress.planning import within_error
    from leanconv.compress.planning.plan import Candidate

    def cand(method, error):
        return Candidate("conv", method, None if method == "keep" else 4, 10, 10, 1.0, 0.0,
                         output_error=error)  # fmt: skip

    cands = {"conv": [cand("keep", 0.0), cand("tucker2", 0.5), cand("low_rank", 0.95),
                      cand("spatial_svd", float("nan")), cand("cp", 0.9)]}  # fmt: skip
    kept = within_error(cands, 0.9)["conv"]
    assert [c.method for c in kept] == ["keep", "tucker2", "cp"]  # 0.95 and NaN would roll back
