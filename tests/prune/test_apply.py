"""Pruning a model's pairs: the whole model against its original in float64, the reported error
against ``F.conv2d``, and the errors a user gets."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leanconv import zoo
from leanconv.prune import prune_pairs


def block(c_in=3, mid=8, out=5):
    model = nn.Sequential(nn.Conv2d(c_in, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(),
                          nn.Conv2d(mid, out, 3, padding=1))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model[1].running_mean.copy_(torch.randn(mid, generator=g) * 0.1)
        model[1].running_var.copy_(torch.rand(mid, generator=g) + 0.5)
        model[1].weight.copy_(torch.rand(mid, generator=g) + 0.5)
        model[1].bias.copy_(torch.randn(mid, generator=g) * 0.1)
    return model.double().eval()


def test_keeping_every_channel_keeps_the_function():
    model = block()
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    result = prune_pairs(model, {"0": 8}, x)
    torch.testing.assert_close(result.model(x), model(x), rtol=1e-9, atol=1e-9)
    assert result.outcomes[0].output_error < 1e-6


def test_channels_that_repeat_others_are_removed_without_changing_the_output():
    model = block()
    with torch.no_grad():  # channels 4-7 compute twice channels 0-3 (ReLU keeps the factor)
        model[0].weight[4:] = 2 * model[0].weight[:4]
        model[0].bias[4:] = 2 * model[0].bias[:4]
        for name in ("running_mean", "running_var", "weight", "bias"):
            getattr(model[1], name)[4:] = 0 if name == "running_mean" else (
                1 if name in ("running_var", "weight") else 0)  # fmt: skip
            getattr(model[1], name)[:4] = 0 if name in ("running_mean", "bias") else 1
        model[3].weight[:, 4:] *= 0.01  # the copies carry little of the output: dropped
    x = torch.randn(6, 3, 10, 10, dtype=torch.float64)
    result = prune_pairs(model, {"0": 4}, x)
    assert result.outcomes[0].kept == (0, 1, 2, 3)
    assert result.model[0].out_channels == 4 and result.model[1].num_features == 4
    assert result.model[3].in_channels == 4
    torch.testing.assert_close(result.model(x), model(x), rtol=1e-8, atol=1e-8)


def test_the_reported_error_is_the_consumers_output_error():
    model = block().float()
    x = torch.randn(8, 3, 12, 12)
    result = prune_pairs(model, {"0": 3}, x)
    with torch.no_grad():
        inner = model[:3](x).double()
        pruned_inner = result.model[:3](x).double()
    w = model[3].weight.detach().double()
    v = result.model[3].weight.detach().double()
    want = F.conv2d(inner, w, padding=1)
    got = F.conv2d(pruned_inner, v, padding=1)
    error = float((want - got).norm() / want.norm())
    assert result.outcomes[0].output_error == pytest.approx(error, rel=1e-4)
    assert 0 < error < 1
    assert result.model[3].weight.dtype == torch.float32


def test_the_given_model_is_untouched_and_a_residual_network_still_runs():
    model = zoo.create("resnet18_cifar", num_classes=10, width=0.5).eval()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(8, 3, 32, 32)
    result = prune_pairs(model, {"layer1.0.conv1.0": 16, "layer3.1.conv1.0": 40}, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.model.layer1[0].conv2[0].in_channels == 16
    assert result.model.layer3[1].conv1[0].out_channels == 40
    assert result.model(x).shape == (8, 10)
    assert [o.pair.producer for o in result.outcomes] == ["layer1.0.conv1.0", "layer3.1.conv1.0"]


def test_a_layer_that_is_no_pair_or_a_bad_count_is_named():
    model = block()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"'3' is not the first convolution.*those of this model: 0"
    ):
        prune_pairs(model, {"3": 2}, x)
    with pytest.raises(ValueError, match=r"keep\['0'\]=9 must be between 1 and its 8 channels"):
        prune_pairs(model, {"0": 9}, x)
    with pytest.raises(TypeError, match=r"keep\['0'\]=2.5 must be an int"):
        prune_pairs(model, {"0": 2.5}, x)


def test_pairs_that_share_a_convolution_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(),
                          nn.Conv2d(16, 8, 3))  # fmt: skip
    x = torch.randn(2, 3, 12, 12)
    with pytest.raises(ValueError, match="'2' would be pruned twice"):
        prune_pairs(model, {"0": 8, "2": 8}, x)


def test_pruning_from_gathered_grams_is_the_same_and_needs_one_or_the_other():
    from leanconv.prune import find_pairs, pair_grams

    model = block()
    x = torch.randn(6, 3, 10, 10, dtype=torch.float64)
    grams = pair_grams(model, find_pairs(model), x)
    a = prune_pairs(model, {"0": 4}, grams=grams)
    b = prune_pairs(model, {"0": 4}, x)
    assert a.outcomes[0].kept == b.outcomes[0].kept
    torch.testing.assert_close(a.model(x), b.model(x))
    with pytest.raises(ValueError, match="calibration images or the pairs' grams"):
        prune_pairs(model, {"0": 4})
