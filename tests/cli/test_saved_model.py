"""A compressed model's directory as MODEL: `leanconv cost`, `profile` and `bench model` read
what `leanconv compress` wrote (its output folder or the model/ folder in it), in the
deployment form it was saved in. References: MACs counted by forward hooks on the plain
model's convolutions and linear layers, and the saved model's own outputs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import leanconv
from leanconv import zoo
from leanconv.algorithms import native
from leanconv.cli.main import app
from leanconv.compress import serialize
from leanconv.compress.replace import decompose_layer
from leanconv.loading import load_model

runner = CliRunner()
BASE = {"zoo": "resnet18_cifar", "kwargs": {"num_classes": 10, "width": 0.25}}
INPUT = {"shape": [3, 16, 16], "dtype": "float32"}
SPATIAL_SVD = "layer1.0.conv1.0"


def _hooked_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of every convolution and linear layer, from their weights and output shapes."""
    total = []

    def conv(m, _inputs, out):
        kh, kw = m.kernel_size
        total.append(out[0].numel() * m.in_channels // m.groups * kh * kw)

    def linear(m, _inputs, out):
        total.append(out[0].numel() * m.in_features)

    hooks = [m.register_forward_hook(conv if type(m) is nn.Conv2d else linear)
             for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sum(total)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An output folder as `leanconv compress` leaves it: out/model/ with one layer decomposed
    and, where the kernels are built, one kept 3x3 layer recorded to run by Winograd F(4x4)."""
    torch.manual_seed(0)
    model = zoo.create(BASE["zoo"], **BASE["kwargs"]).eval()
    chain = decompose_layer(model.get_submodule(SPATIAL_SVD), "spatial_svd", 4,
                            input_size=(16, 16)).module  # fmt: skip
    model.get_submodule("layer1.0.conv1")[0] = chain
    algorithms = {"layer3.1.conv2.0": "winograd4"} if native.available() else {}
    out = tmp_path_factory.mktemp("run") / "out"
    serialize.save(model, out / "model", BASE, {SPATIAL_SVD: chain}, extra={"input": INPUT},
                   algorithms=algorithms)  # fmt: skip
    return out, model


def test_load_model_reads_the_directory_and_its_input(saved):
    out, model = saved
    for path in (out, out / "model"):
        loaded = load_model(str(path))
        assert loaded.default_input == (1, 3, 16, 16)
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            ref = model.double()(x.double())
            model.float()
            y = loaded.module(x)
        assert (y.double() - ref).abs().max() <= 1e-4 * ref.abs().max()
    plain = load_model(str(out), deployed=False).module
    assert all(type(m) in (nn.Conv2d, nn.Linear) for m in plain.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))  # fmt: skip
    if native.available():
        deployed = load_model(str(out)).module.get_submodule("layer3.1.conv2.0")
        assert type(deployed).__name__ == "WinogradConv2d"


def test_cost_counts_the_compressed_model(saved):
    out, model = saved
    expected = _hooked_macs(model, torch.randn(1, 3, 16, 16))
    assert expected < _hooked_macs(zoo.create(BASE["zoo"], **BASE["kwargs"]).eval(),
                                   torch.randn(1, 3, 16, 16))  # fmt: skip
    for path in (out, out / "model"):  # no --input: the shape it was compressed with
        result = runner.invoke(app, ["cost", str(path), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["total"]["macs"] == expected
    table = runner.invoke(app, ["cost", str(out / "model"), "--input", "4,3,16,16"])
    assert table.exit_code == 0 and f"{4 * expected:,} MACs" in table.output


def test_profile_and_bench_model_run_on_it(saved):
    out, _ = saved
    result = runner.invoke(app, ["profile", str(out), "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    layers = {row["name"] for row in json.loads(result.stdout)["layers"]}
    assert {f"{SPATIAL_SVD}.0", f"{SPATIAL_SVD}.1", "layer3.1.conv2.0"} <= layers
    bench = runner.invoke(app, ["bench", "model", str(out), "--repeats", "1", "--json"])
    assert bench.exit_code == 0, bench.output
    assert {f"{SPATIAL_SVD}.0", f"{SPATIAL_SVD}.1"} <= set(json.loads(bench.stdout))


def test_directory_without_a_model_is_one_line_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    for command in (["cost", str(tmp_path)], ["profile", str(tmp_path)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert "without model.json" in result.output and str(tmp_path) in result.output
        assert "Traceback" not in result.output


def test_python_api_same_directory(saved):
    out, _ = saved
    model = leanconv.load(out / "model")
    assert model.expected_input == INPUT


USER_NET = """import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.a(x))
        x = F.relu(self.b(x))
        return self.head(x.mean((2, 3)))


def make():
    return Net()
"""


@pytest.fixture(scope="module")
def user_saved(tmp_path_factory):
    """A user's model (a factory file) with one layer decomposed, saved as compress saves it:
    the factory recorded by path and sha256, and a torch.export program beside the weights."""
    root = tmp_path_factory.mktemp("user")
    (root / "net.py").write_text(USER_NET)
    namespace: dict = {}
    exec(compile(USER_NET, str(root / "net.py"), "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["make"]().eval()
    model.b = decompose_layer(model.b, "spatial_svd", 4, input_size=(12, 12)).module
    out = root / "out"
    serialize.save(model, out / "model", {"factory": f"{root / 'net.py'}:make", "kwargs": {}},
                   {"b": model.b}, example=torch.randn(2, 3, 12, 12),
                   extra={"input": {"shape": [3, 12, 12], "dtype": "float32"}})  # fmt: skip
    return out, model


def test_user_model_directory_counted_by_layer_without_running_its_code(user_saved):
    out, model = user_saved
    result = runner.invoke(app, ["cost", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total"]["macs"] == _hooked_macs(model, torch.randn(1, 3, 12, 12))
    convs = {r["name"]: r["macs"] for r in data["layers"] if r["kind"] == "conv2d"}
    assert convs == {"a": 144 * 16 * 27, "b.0": 144 * 4 * 16 * 3, "b.1": 144 * 16 * 4 * 3}


def test_user_model_directory_profiled_per_layer_with_trust_code(user_saved):
    out, _ = user_saved
    graph = runner.invoke(app, ["profile", str(out), "--repeats", "1", "--json"])
    assert graph.exit_code == 0, graph.output
    data = json.loads(graph.stdout)
    assert data["layers"] == [] and data["total_ms"] > 0
    assert any("--trust-code" in note for note in data["notes"])
    trusted = runner.invoke(app, ["profile", str(out), "--repeats", "1", "--json",
                                  "--trust-code"])  # fmt: skip
    assert trusted.exit_code == 0, trusted.output
    assert {"a", "b.0", "b.1", "head"} <= {r["name"] for r in json.loads(trusted.stdout)["layers"]}
