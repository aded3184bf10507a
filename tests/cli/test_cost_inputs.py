"""``leanconv cost`` with several inputs, dtypes, keyword arguments, and archives of every kind."""

import json

import pytest
import torch
from typer.testing import CliRunner

from leanconv.cli.main import app

MODELS = """
import torch
import torch.nn as nn


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 4), nn.Linear(6, 4)

    def forward(self, x, y, scale: float = 1.0):
        return self.a(x) * scale + self.b(y)


class Vad(nn.Module):
    '''forward(x, sr): a sample rate as a second argument, as shipped voice detectors take.'''

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 16, 5, stride=2)

    def forward(self, x, sr: int):
        if sr != 16000:
            raise ValueError("sr must be 16000")
        return self.conv(x.unsqueeze(1))


class Text(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.conv = nn.Embedding(100, 16), nn.Conv1d(16, 32, 3)

    def forward(self, ids):
        return self.conv(self.emb(ids).transpose(1, 2))


def two():
    return Two()


def vad():
    return Vad()


def text():
    return Text()
"""


def _macs(args):
    r = CliRunner().invoke(app, ["cost", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


@pytest.fixture
def models(tmp_path, monkeypatch):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    mod = importlib.import_module("models")
    importlib.reload(mod)
    return path, mod


def test_several_inputs_dtypes_and_keyword_arguments(models, tmp_path):
    path, mod = models
    two = _macs([f"{path}:two", "--input", "3,8", "--input", "3,6", "--arg", "scale=2.0"])
    assert two["total"]["macs"] == 3 * 8 * 4 + 3 * 6 * 4 and two["method"] == "on meta"
    vad = _macs([f"{path}:vad", "--input", "1,512", "--arg", "sr=16000"])
    assert vad["total"]["macs"] == 16 * 1 * 5 * ((512 - 5) // 2 + 1)
    text = _macs([f"{path}:text", "--input", "2,20:int64"])
    assert text["total"]["macs"] == 2 * 32 * 16 * 3 * 18
    # the same models as TorchScript archives (loaded onto meta, or onto the CPU when their
    # forward needs constants' values) and as torch.export programs
    torch.jit.script(mod.Vad()).save(str(tmp_path / "vad.pt"))
    assert _macs([str(tmp_path / "vad.pt"), "--input", "1,512", "--arg", "sr=16000"])[
        "total"]["macs"] == vad["total"]["macs"]  # fmt: skip
    traced = torch.jit.trace(mod.Two(), (torch.randn(3, 8), torch.randn(3, 6)))
    traced.save(str(tmp_path / "two.pt"))
    got = _macs([str(tmp_path / "two.pt"), "--input", "3,8", "--input", "3,6"])
    assert got["total"]["macs"] == two["total"]["macs"]
    assert got["total"]["params"] == 8 * 4 + 4 + 6 * 4 + 4
    ids = torch.randint(0, 100, (2, 20))
    torch.export.save(torch.export.export(mod.Text(), (ids,)), str(tmp_path / "text.pt2"))
    got = _macs([str(tmp_path / "text.pt2"), "--input", "2,20:int64"])
    assert got["total"]["macs"] == text["total"]["macs"]
    assert not [row for row in got["layers"] if row["kind"] == "unused"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--input", "2,20:int65"], "unknown dtype 'int65'"),
        (["--input", "2,x"], "is not a list of integers"),
        (["--input", "1,512", "--arg", "sr"], "give NAME=VALUE"),
        (["--input", "1,512", "--arg", "sr=1", "--arg", "sr=2"], "'sr' given twice"),
        (["--input", "1,512", "--arg", "sr=8000"], "sr must be 16000"),
        (["--input", "1,512"], "missing 1 required positional argument: 'sr'"),
    ],
)
def test_bad_combinations_get_one_line(models, args, words):
    path, _ = models
    r = CliRunner().invoke(app, ["cost", f"{path}:vad", *args])
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output
    assert r.output.count("error:") == 1
