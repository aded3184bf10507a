"""``leanconv accelerate MODEL --input SHAPE`` on a user's own model file and weights."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from leanconv.cli.main import app

MODEL = """
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.body = nn.Conv2d(16, 32, 3, padding=1)
        self.down = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(self.body(x))
        x = F.relu(self.down(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build():
    return Net()
"""


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def project(tmp_path):
    (tmp_path / "net.py").write_text(MODEL)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(MODEL, namespace)  # the user's class, to make their weights
    net = namespace["build"]()
    with torch.no_grad():  # trained-looking statistics, so that folding the norm changes values
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}  # saved from DataParallel
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "net.pth")
    return tmp_path


def test_accelerate_reports_each_layer_of_the_users_model(project):
    spec = f"{project / 'net.py'}:build"
    r = cli("accelerate", spec, "--weights", project / "net.pth", "--input", "2,3,20,20",
            "--repeats", "1", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{") :])
    # every convolution and fully connected layer, named as in the user's model (the norm folded)
    assert [layer["name"] for layer in report["layers"]] == ["stem", "body", "down", "head"]
    if report["reverted"]:  # slower end to end on this tiny model this time: the original kept
        assert report["folded"] == [] and report["max_error"] == 0.0
        assert all(layer["chosen"] == "native" for layer in report["layers"])
        assert report["accelerated_ms"] > report["native_ms"]
    else:
        assert report["folded"] == ["bn"]
        assert report["speedup"] == pytest.approx(report["native_ms"] / report["accelerated_ms"])
        assert report["accelerated_ms"] <= report["native_ms"]
        assert 0 <= report["max_error"] <= 1e-4
    for layer in report["layers"]:
        chosen = layer["chosen"]
        if chosen != "native":
            assert layer["errors"][chosen] <= 1e-4
            assert layer["speedup"] == pytest.approx(
                layer["native_ms"] / layer["candidates"][chosen]
            )
            assert layer["speedup"] > 1.0

    r = cli("accelerate", spec, "--weights", project / "net.pth", "--input", "1,3,20,20",
            "--repeats", "1")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "read the state dict under the checkpoint key 'state_dict'" in r.output
    assert all(name in r.output for name in ("stem", "body", "down", "head"))
    assert "end to end: native" in r.output and "largest deviation" in r.output


def test_accelerate_refuses_what_it_cannot_do(project, tmp_path):
    spec = f"{project / 'net.py'}:build"
    for args, said in (
        ([spec], "needs --input"),
        ([spec, "--input", "1,1,20,20"], "fails on an input of shape (1, 1, 20, 20) (--input)"),
        ([spec, "--input", "1,3,20,20", "--tolerance", "0"], "--tolerance 0.0 must be positive"),
        ([spec, "--input", "1,3,20,20", "--repeats", "0"], "--repeats 0 must be at least 1"),
    ):
        r = cli("accelerate", *args)
        assert r.exit_code == 2 and said in r.output, r.output
    scripted = tmp_path / "net.ts"
    torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3))).save(str(scripted))
    r = cli("accelerate", scripted, "--input", "1,3,8,8")
    assert r.exit_code == 2 and "TorchScript program" in r.output, r.output
    assert "Traceback" not in r.output
