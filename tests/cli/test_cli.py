"""The command line: real output, JSON shape, and one-line errors with exit code 2."""

import json

import pytest
import torch
from typer.testing import CliRunner

from leanconv.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_cost_json_resnet18():
    result = run("cost", "resnet18", "--input", "1,3,224,224", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total"]["macs"] == 1_814_073_344
    assert data["total"]["params"] == 11_689_512
    assert data["total"]["flops"] == 2 * data["total"]["macs"]
    assert {"convention", "total", "layers"} <= set(data)


def test_cost_table_and_csv(tmp_path):
    out = tmp_path / "rows.csv"
    result = run("cost", "vgg16_cifar", "--csv", str(out), "--depth", "1")
    assert result.exit_code == 0, result.output
    assert "features" in result.stdout and out.read_text().startswith("name,kind")
    again = run("cost", "vgg16_cifar", "--csv", str(out))
    assert again.exit_code == 2 and "--force" in again.output


def test_cost_factory_file(tmp_path):
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\ndef make():\n    return nn.Conv2d(3, 4, 3)\n"
                   "def broken():\n    raise RuntimeError('boom')\n")  # fmt: skip
    ok = run("cost", f"{src}:make", "--input", "1,3,8,8", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["total"]["macs"] == 36 * 4 * 27
    bad = run("cost", f"{src}:broken", "--input", "1,3,8,8")
    assert bad.exit_code == 2 and "boom" in bad.output and "Traceback" not in bad.output
    missing = run("cost", f"{src}:nothing", "--input", "1,3,8,8")
    assert missing.exit_code == 2 and "nothing" in missing.output


def test_cost_torchscript_and_pickle(tmp_path):
    scripted = torch.jit.script(torch.nn.Conv2d(3, 4, 3))
    path = tmp_path / "m.pt"
    scripted.save(str(path))
    ok = run("cost", str(path), "--input", "1,3,8,8", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["total"]["macs"] == 36 * 4 * 27
    pickled = tmp_path / "p.pth"
    with open(pickled, "wb") as f:
        import pickle

        pickle.dump({"a": 1}, f)
    refused = run("cost", str(pickled), "--input", "1,3,8,8")
    assert refused.exit_code == 2 and "pickle" in refused.output


@pytest.mark.parametrize(
    "args, message",
    [
        (("cost", "resnet18", "--input", "1,3,x"), "not a list of integers"),
        (("cost", "nosuchmodel"), "resnet18"),
        (("cost", "resnet18", "--input", "1,3"), "forward pass failed"),
        (("cost", "missing.py:make", "--input", "1,3,8,8"), "does not exist"),
        (("whatif", "3", "8", "3", "--groups", "2"), "divisible by groups=2"),
        (("whatif", "1", "1", "9", "--size", "4,4", "--padding", "0"), "larger than the padded"),
        (("bench", "conv", "8", "8", "3", "--groups", "0"), "--groups 0: must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_whatif_json_figures():
    result = run("whatif", "256", "256", "3", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["original"]["params"] == 589_824
    assert rows["bottleneck_1x1 (squeeze 4)"]["params"] == 69_632


def test_cost_torch_export_file(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    program = torch.export.export(model, (torch.randn(1, 3, 8, 8),))
    path = tmp_path / "m.pt2"
    torch.export.save(program, str(path))
    result = run("cost", str(path), "--input", "1,3,8,8", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"]["macs"] == 36 * 4 * 27


def test_torch_export_rows_are_named_by_layer(tmp_path):
    """A program is one flat graph; its rows take the layer each node was traced in."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 1, bias=False)
    )
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 8, 8),)), str(path))
    result = run("cost", str(path), "--input", "1,3,8,8", "--json")
    assert result.exit_code == 0, result.output
    convs = {r["name"]: r for r in json.loads(result.stdout)["layers"] if r["kind"] == "conv2d"}
    assert convs["0"]["macs"] == 36 * 4 * 27 and convs["0"]["params"] == 4 * 27 + 4
    assert convs["2"]["macs"] == 36 * 6 * 4 and convs["2"]["params"] == 6 * 4
    assert "Warning" not in result.output


@pytest.fixture
def lstm_file(tmp_path):
    src = tmp_path / "rnn.py"
    src.write_text("import torch.nn as nn\ndef make():\n    return nn.LSTM(8, 16, num_layers=2)\n")
    return f"{src}:make"


def _totals_line(text):
    return next(line for line in text.splitlines() if "exact totals" in line).strip()


def test_cost_folds_many_rows_and_all_prints_them(lstm_file, tmp_path):
    args = ("cost", lstm_file, "--input", "100,1,8")
    rows = json.loads(run(*args, "--json").stdout)["layers"]
    assert len(rows) > 2000  # 100 steps x 2 layers of LSTM cells: thousands of op rows
    folded = run(*args)
    assert folded.exit_code == 0, folded.output
    assert len(folded.stdout.splitlines()) < 250
    assert f"{len(rows):,} rows folded" in folded.stdout and "--all" in folded.stdout
    assert "linear x400" in folded.stdout  # grouped by module and kind, with the count
    every = run(*args, "--all")
    assert every.exit_code == 0, every.output
    assert len(every.stdout.splitlines()) > len(rows) and "folded" not in every.stdout
    assert _totals_line(folded.stdout) == _totals_line(every.stdout)
    assert "358,400 MACs" in _totals_line(folded.stdout)
    out = tmp_path / "rows.csv"
    assert run(*args, "--csv", str(out)).exit_code == 0
    assert len(out.read_text().splitlines()) == len(rows) + 1  # CSV keeps every row
    merged = run(*args, "--depth", "0")
    assert merged.exit_code == 0 and "folded" not in merged.stdout


def test_cost_small_models_are_not_folded():
    result = run("cost", "resnet18", "--input", "1,3,224,224")
    assert result.exit_code == 0 and "folded" not in result.stdout
    assert "layer4.1.conv2" in result.stdout
