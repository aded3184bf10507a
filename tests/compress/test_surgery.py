"""Layer replacement, verification with rollback, fx lifting, saving without pickle, ONNX."""

import copy
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import leanconv
from leanconv import zoo
from leanconv.compress import serialize
from leanconv.compress.replace import UnsupportedLayerError, decompose_layer
from leanconv.compress.surgery import LayerNotFoundError, conv_layers, replace_modules
from leanconv.compress.verify import decompose_model
from leanconv.decompose._errors import InvalidRankError
from leanconv.decompose.tt import max_tt_ranks


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.blocks = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1)])
        self.heads = nn.ModuleDict({"a": nn.Conv2d(8, 4, 1)})

    def forward(self, x):
        return self.heads["a"](self.blocks[0](self.seq(x)))


def test_replace_reaches_every_container_and_keeps_the_rest():
    model = Custom()
    calls = []
    model.seq[0].register_forward_hook(lambda *a: calls.append("hook"))
    keys = set(model.state_dict())
    new = replace_modules(model, {"blocks.0": nn.Identity(), "heads.a": nn.Conv2d(8, 2, 1)})
    assert isinstance(new, Custom) and new is not model
    assert isinstance(new.blocks[0], nn.Identity) and new.heads["a"].out_channels == 2
    assert isinstance(model.blocks[0], nn.Conv2d)  # original untouched
    new(torch.randn(1, 3, 8, 8))
    assert calls == ["hook"]  # hooks of untouched layers survive
    assert {k for k in new.state_dict() if k.startswith("seq")} == {
        k for k in keys if k.startswith("seq")
    }
    with pytest.raises(LayerNotFoundError, match="no layer 'blocks.7'"):
        replace_modules(model, {"blocks.7": nn.Identity()})


def full_rank(method, k, c, kh, kw):
    return {
        "tucker2": (k, c),
        "svd": min(c * kh, k * kw),
        "tt": max_tt_ranks((k, c, kh, kw)),
        "low_rank": min(k, c * kh * kw),
        "depthwise": min(k, kh * kw),
    }[method]


@given(
    method=st.sampled_from(["tucker2", "svd", "tt", "low_rank", "depthwise"]),
    c=st.integers(1, 4), k=st.integers(1, 4), kh=st.integers(1, 3), kw=st.integers(1, 3),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    bias=st.booleans(), groups=st.sampled_from([1, 2]),
)  # fmt: skip
def test_full_rank_replacement_equals_the_layer(method, c, k, kh, kw, stride, padding, dilation,
                                                bias, groups):  # fmt: skip
    if method == "depthwise" and groups > 1:
        return
    conv = nn.Conv2d(c * groups, k * groups, (kh, kw), stride, padding, dilation, groups,
                     bias=bias).double()  # fmt: skip
    x = torch.randn(2, c * groups, 9, 10, dtype=torch.float64)
    rank = full_rank(method, k, c, kh, kw) if (kh, kw) != (1, 1) else min(k, c)
    d = decompose_layer(conv, method, rank)
    y, ref = d.module(x), conv(x)
    assert y.shape == ref.shape
    assert torch.allclose(y, ref, atol=1e-10, rtol=1e-9)
    assert d.weight_error < 1e-12


def test_exact_low_rank_kernel_is_recovered_by_cp():
    torch.manual_seed(0)
    k, c, r = 6, 5, 3
    a, b, h, w = (torch.randn(n, r, dtype=torch.float64) for n in (k, c, 3, 3))
    weight = torch.einsum("kr,cr,ir,jr->kcij", a, b, h, w)
    conv = nn.Conv2d(c, k, 3, padding=1, bias=False).double()
    conv.weight.data.copy_(weight)
    d = decompose_layer(conv, "cp", r)
    x = torch.randn(1, c, 7, 7, dtype=torch.float64)
    assert d.weight_error < 1e-5  # ALS converges linearly; the decomposition tests go further
    assert torch.allclose(d.module(x), conv(x), atol=1e-4)


def test_asymmetric_padding_keeps_shapes():
    conv = nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)).double()
    x = torch.randn(1, 4, 11, 12, dtype=torch.float64)
    for method, rank in (("svd", 2), ("cp", 3), ("tucker2", (3, 2))):
        assert decompose_layer(conv, method, rank).module(x).shape == conv(x).shape


def test_bad_ranks_and_layers_name_the_layer():
    conv = nn.Conv2d(4, 6, 3)
    with pytest.raises(InvalidRankError, match="layer 'features.0'"):
        decompose_layer(conv, "cp", 0, name="features.0")
    with pytest.raises(InvalidRankError, match="larger than possible"):
        decompose_layer(conv, "svd", 1000, name="features.0")
    with pytest.raises(InvalidRankError):
        decompose_layer(conv, "svd", 2.5, name="features.0")
    with pytest.raises(UnsupportedLayerError, match="BatchNorm2d"):
        decompose_layer(nn.BatchNorm2d(4), "tucker2", 2, name="bn")
    zero = nn.Conv2d(4, 6, 3)
    nn.init.zeros_(zero.weight)
    with pytest.raises(ValueError, match="zero"):
        decompose_layer(zero, "tucker2", (2, 2), name="z")
    nan = nn.Conv2d(4, 6, 3)
    nan.weight.data[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        decompose_layer(nan, "tucker2", (2, 2), name="n")


def test_public_entry_point_leaves_the_layer_untouched():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    before = conv.weight.clone()
    replacement = leanconv.decompose(conv, method="tucker2", rank=(4, 4))
    assert isinstance(replacement, nn.Module) and torch.equal(conv.weight, before)
    linear = nn.Linear(20, 10)
    approx = leanconv.decompose(linear, method="low_rank", rank=10)
    x = torch.randn(3, 20)
    assert torch.allclose(approx(x), linear(x), atol=1e-5)


def test_rollback_and_report():
    torch.manual_seed(0)
    model = zoo.create("vgg16_cifar", width=0.125).eval()
    names = conv_layers(model)
    full = model.get_submodule(names[2]).weight.shape[:2]  # (16, 8): exact
    plan = {names[1]: ("tucker2", (1, 1)), names[2]: ("tucker2", tuple(full)),
            "missing.conv": ("cp", 2)}  # fmt: skip
    x = torch.randn(4, 3, 32, 32)
    new, report = decompose_model(model, plan, x, max_error=0.2)
    status = {o.name: o.status for o in report.layers}
    assert status == {"missing.conv": "skipped", names[1]: "rolled back", names[2]: "replaced"}
    assert type(new.get_submodule(names[1])) is nn.Conv2d  # rolled back
    assert type(new.get_submodule(names[2])) is nn.Sequential
    assert type(model.get_submodule(names[2])) is nn.Conv2d  # the original is never modified
    assert 0 <= report.model_output_error < 1
    with pytest.raises(LayerNotFoundError):
        decompose_model(model, plan, x, strict=True)


# fx lifting: turning F.conv2d(x, <parameter>) calls into nn.Conv2d submodules so that the
# usual surgery applies. Only this test uses it, so it lives here rather than in the library.


@dataclass
class LiftResult:
    model: nn.Module
    lifted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def lift_functional_convs(model: nn.Module) -> LiftResult:
    """Turn ``F.conv2d(x, <parameter>, <parameter or None>, ...)`` calls into ``nn.Conv2d``
    submodules of an ``fx.GraphModule`` (a new model; ``model`` is untouched)."""
    try:
        gm = torch.fx.symbolic_trace(copy.deepcopy(model))
    except Exception as exc:  # tracing is best effort by nature
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return LiftResult(model, skipped={"(model)": f"torch.fx could not trace it: {msg}"})
    result = LiftResult(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in (F.conv2d, torch.conv2d):
            continue
        args = list(node.args) + [None] * (7 - len(node.args))
        kw = dict(node.kwargs)
        x, w, b = args[0], kw.get("weight", args[1]), kw.get("bias", args[2])
        stride = kw.get("stride", args[3] if args[3] is not None else 1)
        padding = kw.get("padding", args[4] if args[4] is not None else 0)
        dilation = kw.get("dilation", args[5] if args[5] is not None else 1)
        groups = kw.get("groups", args[6] if args[6] is not None else 1)
        where = node.name
        if getattr(w, "op", None) != "get_attr" or (
            b is not None and getattr(b, "op", None) != "get_attr"
        ):
            result.skipped[where] = "its weight is computed, not a parameter"
            continue
        if any(isinstance(v, torch.fx.Node) for v in (stride, padding, dilation, groups)):
            result.skipped[where] = "its geometry is computed at run time"
            continue
        weight = gm.get_parameter(w.target) if _is_param(gm, w.target) else None
        bias = gm.get_parameter(b.target) if b is not None and _is_param(gm, b.target) else None
        if weight is None or (b is not None and bias is None):
            result.skipped[where] = "its weight is a buffer or constant, not a parameter"
            continue
        k, c_g = weight.shape[:2]
        conv = nn.Conv2d(c_g * groups, k, tuple(weight.shape[2:]), stride, padding, dilation,
                         groups, bias=bias is not None, device=weight.device,
                         dtype=weight.dtype)  # fmt: skip
        conv.weight = weight
        if bias is not None:
            conv.bias = bias
        name = f"lifted_{w.target.replace('.', '_')}"
        gm.add_submodule(name, conv)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (x,))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        result.lifted.append(name)
    gm.graph.eliminate_dead_code()
    still_used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in result.lifted:  # drop the old attribute: the parameter now lives in the conv
        for attr in ("weight", "bias"):
            param = getattr(gm.get_submodule(name), attr)
            for target in [t for t, p in gm.named_parameters(remove_duplicate=False) if p is param]:
                if target.startswith(name + ".") or target in still_used:
                    continue
                owner, _, leaf = target.rpartition(".")
                delattr(gm.get_submodule(owner) if owner else gm, leaf)
    gm.graph.lint()
    gm.recompile()
    return result


def _is_param(gm: nn.Module, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


def test_lift_functional_convs_then_decompose():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 4, 3, 3))

        def forward(self, x):
            return F.conv2d(x, self.w, padding=1).relu()

    model = Functional()
    lifted = lift_functional_convs(model)
    x = torch.randn(2, 4, 8, 8)
    assert lifted.lifted == ["lifted_w"] and torch.allclose(lifted.model(x), model(x))
    new, report = decompose_model(lifted.model, {"lifted_w": ("tucker2", (6, 4))}, x)
    assert report.layers[0].status == "replaced" and torch.allclose(new(x), model(x), atol=1e-4)

    class Untraceable(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    assert "could not trace" in lift_functional_convs(Untraceable()).skipped["(model)"]


def test_save_load_roundtrip_and_onnx(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = zoo.create("resnet18_cifar", width=0.25).eval()
    names = conv_layers(model)
    plan = {names[1]: ("tucker2", (8, 8)), names[2]: ("cp", 12), names[3]: ("svd", 16),
            names[4]: ("depthwise", 2)}  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    new, report = decompose_model(model, plan, x, max_error=10)
    out = tmp_path / "m"
    serialize.save(new, out, {"zoo": "resnet18_cifar", "kwargs": {"width": 0.25}}, report.replaced)
    assert (out / "model.safetensors").exists() and (out / "model.json").exists()
    back = serialize.load(out)
    assert torch.allclose(back(x), new(x), atol=1e-5)
    with pytest.raises(leanconv.errors.OutputExistsError):
        serialize.save(new, out, {"zoo": "resnet18_cifar"}, report.replaced)
    path = tmp_path / "m.onnx"
    torch.onnx.export(new, (x,), str(path), dynamo=False, input_names=["x"])
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy()})[0]
    assert abs(got - new(x).detach().numpy()).max() < 1e-4
