"""The deployment form: ReLUs fused into convolutions, convolutions packed (``rewrite.fuse``,
``compress.deploy``).

Reference: the model as given, in float64 (the fused model computes in float32).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leanconv import zoo
from leanconv.compress.deploy import Deployment
from leanconv.cost import count
from leanconv.nn import PackedConv2d, WinogradConv2d
from leanconv.rewrite import fold_batchnorm, fuse_activations


def _randomise_norms(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


def _relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize(
    ("name", "relus"),
    [("vgg16_cifar", 13), ("resnet18_cifar", 17), ("mobilenet_v2", None)],
)
def test_zoo_models_fuse_exactly(name, relus):
    kwargs = {"num_classes": 10, "width": 0.25}
    model = _randomise_norms(zoo.create(name, **kwargs))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model.double()(x.double())
    model.float()
    fused_model, fused = fuse_activations(fold_batchnorm(model)[0])
    if relus is not None:
        assert len(fused) == relus  # VGG: all 13; ResNet-18: stem, 8 blocks' first conv, 8 sums
    assert not any(type(m) is nn.Conv2d for m in fused_model.modules())
    with torch.no_grad():
        assert _relative_error(fused_model(x), ref) < 1e-5
    # counted as the convolutions they compute
    assert count(fused_model, (1, 3, 32, 32)).total.macs == count(model, (1, 3, 32, 32)).total.macs


def test_what_is_fused_and_what_is_not():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Identity(),  # a folded batch norm
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 4, 1, bias=False), nn.Conv2d(4, 8, 3, padding=1)),  # a chain
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),  # not packable
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.ReLU(),  # follows a pool
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
        nn.ReLU(),  # follows a linear layer
    ).eval()
    fused_model, fused = fuse_activations(model)
    assert fused == ["2", "4"]
    assert type(fused_model[0]) is PackedConv2d and fused_model[0].activation == "relu"
    assert fused_model[3][0].activation is None and fused_model[3][1].activation == "relu"
    assert type(fused_model[5]) is nn.Conv2d  # reflect padding: left as it is
    assert [type(fused_model[i]) for i in (6, 8, 11)] == [nn.ReLU] * 3
    assert type(model[0]) is nn.Conv2d  # the original is untouched
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused_model(x), model(x), rtol=1e-5, atol=1e-5)


def test_fast_layers_take_the_activation():
    conv = nn.Conv2d(16, 16, 3, padding=1)
    model = nn.Sequential(WinogradConv2d.from_conv(conv, tile=4), nn.ReLU()).eval()
    fused_model, fused = fuse_activations(model)
    assert fused == ["1"] and fused_model[0].activation == "relu"
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        ref = torch.relu(conv.double()(x.double()))
        assert _relative_error(fused_model(x), ref) < 1e-5


def test_deployment_applies_every_step():
    model = _randomise_norms(zoo.create("vgg16_cifar", num_classes=10, width=0.25))
    deployed = Deployment().apply(model, {"features.7": "winograd4"})
    kinds = {type(m) for m in deployed.modules()}
    assert nn.BatchNorm2d not in kinds and nn.Conv2d not in kinds
    assert type(deployed.features[7]) is WinogradConv2d and deployed.features[7].activation
    assert deployed.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = Deployment(fold_bn=False, fuse=False, memory_format="contiguous").apply(model)
    assert sum(type(m) is nn.BatchNorm2d for m in plain.modules()) == 13
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model.double()(x.double())
        model.float()
        assert _relative_error(deployed(x), ref) < 1e-5
    assert type(Deployment().layer(nn.Conv2d(4, 4, 3))) is PackedConv2d
    with pytest.raises(ValueError, match="memory_format"):
        Deployment(memory_format="diagonal")
