"""Whole-model counting at the dispatcher: agreement with FlopCounterMode, attribution, honesty
about unknown ops, and the published ResNet figures."""

import resource

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import leanconv
from leanconv import zoo
from leanconv.cost import Convention, conv_cost
from leanconv.errors import ForwardError

from .test_spec import conv_geometries


def flop_counter_total(model, x):
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def _conv_module(kw):
    ndim = len(kw["input_size"])
    cls = (
        [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d]
        if kw["transposed"]
        else [nn.Conv1d, nn.Conv2d, nn.Conv3d]
    )[ndim - 1]
    extra = {"output_padding": kw["output_padding"]} if kw["transposed"] else {}
    return cls(kw["in_channels"], kw["out_channels"], kw["kernel_size"], kw["stride"],
               kw["padding"], dilation=kw["dilation"], groups=kw["groups"], **extra)  # fmt: skip


@given(conv_geometries())
def test_agrees_with_flop_counter_on_convolutions(kw):
    try:
        spec = leanconv.ConvSpec(**kw)
    except ValueError:
        return
    conv = _conv_module(kw)
    x = torch.randn(spec.input_shape)
    report = leanconv.count(conv, spec.input_shape)
    assert report.total.flops == flop_counter_total(conv, x)
    assert report.total.macs == conv_cost(spec).macs
    assert report.total.params == sum(p.numel() for p in conv.parameters())


@given(conv_geometries(transposed=True))
def test_agrees_with_flop_counter_on_transposed(kw):
    try:
        spec = leanconv.ConvSpec(**kw)
    except ValueError:
        return
    conv = _conv_module(kw)
    report = leanconv.count(conv, spec.input_shape)
    assert report.total.flops == flop_counter_total(conv, torch.randn(spec.input_shape))


class Functional(nn.Module):
    """Convolutions and products called as functions: module hooks miss these, we must not."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 4, 3, 3))
        self.proj = nn.Parameter(torch.randn(8, 6))

    def forward(self, x):
        y = F.conv2d(x, self.weight, padding=1)
        z = torch.einsum("nchw,cd->ndhw", y, self.proj)
        return z.flatten(1) @ torch.ones(z[0].numel(), 5)


def test_functional_calls_are_counted_and_attributed():
    model = Functional()
    x = torch.randn(2, 4, 8, 8)
    report = leanconv.count(model, x.shape)
    conv_macs = 2 * 8 * 8 * 8 * 4 * 9
    einsum_macs = 2 * 8 * 8 * 8 * 6
    mm_macs = 2 * (6 * 8 * 8) * 5
    assert report.total.macs == conv_macs + einsum_macs + mm_macs
    assert report.total.flops == flop_counter_total(model, x)
    assert report.total.params == 8 * 4 * 9 + 8 * 6
    kinds = [r.kind for r in report.rows if r.macs]
    assert kinds == ["conv2d", "matmul", "matmul"]


class Unknown(nn.Module):
    def forward(self, x):
        return torch.linalg.matrix_exp(x)


def test_unknown_ops_are_explicit_not_zero():
    report = leanconv.count(nn.Sequential(nn.Linear(4, 4), Unknown()), (2, 4, 4))
    assert report.uncounted, "an op without a rule must show up as uncounted"
    row = report.uncounted[0]
    assert row.name == "1" and not row.counted and "matrix_exp" in row.detail
    assert "matrix_exp" in " ".join(report.as_dict()["uncounted"])


def test_model_is_untouched_and_nothing_is_computed():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).train()
    before = [p.detach().clone() for p in model.parameters()]
    leanconv.count(model, (1, 3, 16, 16))
    assert model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_resnet18_published_figures():
    """He et al. 2015: 1.8 G mult-adds; torchvision: 11,689,512 parameters."""
    with torch.device("meta"):
        model = zoo.create("resnet18")
    report = leanconv.count(model, (1, 3, 224, 224))
    assert report.total.macs == 1_814_073_344
    assert report.total.params == 11_689_512
    assert not report.uncounted


def test_resnet50_is_fast_and_materialises_nothing():
    with torch.device("meta"):
        model = zoo.create("resnet50")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = leanconv.count(model, (64, 3, 224, 224))  # activations would be ~20 GiB if real
    assert report.total.macs == 64 * 4_089_184_256
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # KiB


def test_real_weights_are_counted_on_a_meta_copy():
    model = zoo.create("resnet18_cifar", num_classes=10)
    report = leanconv.count(model, torch.randn(1, 3, 32, 32))
    assert report.total.params == sum(p.numel() for p in model.parameters())
    assert next(model.parameters()).device.type == "cpu"


def test_convention_switches_add_the_named_flops():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU())
    plain = leanconv.count(model, (1, 3, 10, 10))
    full = leanconv.count(model, (1, 3, 10, 10), Convention(count_bias=True, count_norm=True,
                                                            count_activations=True))  # fmt: skip
    outputs = 8 * 8 * 8
    assert plain.total.flops == 2 * plain.total.macs
    assert full.total.flops == plain.total.flops + outputs + 2 * outputs + outputs
    assert full.as_dict()["convention"]["count_norm"] is True


def test_valid_taps_differ_from_flop_counter_on_small_maps():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    honest = leanconv.count(conv, (1, 1, 2, 2), Convention(valid_taps=True))
    assert honest.total.macs == 16  # every 3x3 window on a 2x2 map sees only the 4 real pixels
    assert flop_counter_total(conv, torch.randn(1, 1, 2, 2)) == 2 * 36


def test_forward_failure_names_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(10, 2))
    with pytest.raises(ForwardError, match="layer '2'"):
        leanconv.count(model, (1, 3, 8, 8))


def test_depth_aggregation_keeps_totals():
    with torch.device("meta"):
        model = zoo.create("resnet18")
    report = leanconv.count(model, (1, 3, 224, 224))
    for depth in (0, 1, 2):
        agg = report.aggregate(depth)
        assert agg.total == report.total
    assert [r.name for r in report.aggregate(1).rows][:2] == ["stem", "layer1"]


def test_json_and_csv_renderings():
    report = leanconv.count(nn.Conv2d(3, 4, 3), (1, 3, 8, 8))
    data = report.as_dict()
    assert set(data["total"]) == {"params", "macs", "flops", "bytes"}
    assert all(isinstance(v, int) for v in data["total"].values())
    lines = report.to_csv().strip().splitlines()
    assert lines[0].startswith("name,kind") and len(lines) == 1 + len(report.rows)


class WithParameterList(nn.Module):
    def __init__(self):
        super().__init__()
        self.kernels = nn.ParameterList([nn.Parameter(torch.randn(4, 3, 3, 3))])

    def forward(self, x):
        return F.conv2d(x, self.kernels[0])


def test_parameter_list_belongs_to_its_module():
    report = leanconv.count(WithParameterList(), (1, 3, 8, 8))
    assert [r.kind for r in report.rows] == ["conv2d"]
    assert report.rows[0].params == 4 * 3 * 9 == report.total.params


def test_module_rules_apply_to_subclasses():
    from leanconv.cost.formulas import OpCost
    from leanconv.cost.trace import MODULE_RULES, register_module_rule

    class Opaque(nn.Module):
        def forward(self, x):
            return x * 2

    class Child(Opaque):
        pass

    register_module_rule(Opaque)(lambda m, a, o, c: ("opaque", OpCost(0, 7, 14, 0)))
    try:
        assert leanconv.count(Child(), (1, 2)).total.macs == 7
    finally:
        MODULE_RULES.pop(Opaque)
