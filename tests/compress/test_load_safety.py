"""Loading a saved model runs no code the caller did not ask for, and checks every field first."""

import json
import shutil

import pytest
import torch
from torch import nn

import leanconv
from leanconv.compress import serialize
from leanconv.compress.model_json import ModelFileError
from leanconv.errors import LeanconvError

FACTORY = """
import torch.nn as nn

def build(num_classes=3):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, num_classes))
"""
#: A factory that leaves a mark when it is imported or called: the tests assert it never is.
EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")

def build(**kwargs):
    pathlib.Path({marker!r}).write_text("called")
    raise SystemExit("must never run")

def system(command=""):
    pathlib.Path({marker!r}).write_text("system " + command)
"""


@pytest.fixture
def saved(tmp_path):
    """A model saved from a factory file, with its program (``model.pt2``), and a second copy
    without the program."""
    (tmp_path / "net.py").write_text(FACTORY)
    from leanconv.loading import load_model

    torch.manual_seed(0)
    model = load_model(f"{tmp_path / 'net.py'}:build").module.eval()
    path = serialize.save(model, tmp_path / "m", {"factory": f"{tmp_path / 'net.py'}:build"},
                          example=torch.randn(2, 1, 8, 8))  # fmt: skip
    bare = tmp_path / "bare"
    shutil.copytree(path, bare)
    (bare / "model.pt2").unlink()
    meta = json.loads((bare / "model.json").read_text())
    meta["program"] = None
    (bare / "model.json").write_text(json.dumps(meta))
    return model, path, bare


def _edit(path, change):
    meta = json.loads((path / "model.json").read_text())
    change(meta)
    (path / "model.json").write_text(json.dumps(meta))


def test_factory_saved_relative_with_its_hash(saved):
    model, path, _ = saved
    base = json.loads((path / "model.json").read_text())["base"]
    assert base["factory"] == "../net.py:build" and len(base["sha256"]) == 64
    x = torch.randn(3, 1, 8, 8)
    for back in (leanconv.load(path, trust_code=True), leanconv.load(path)):  # factory, program
        with torch.no_grad():
            torch.testing.assert_close(back(x), model(x))


def test_a_recorded_factory_never_runs_untrusted(saved, tmp_path, monkeypatch):
    _, path, bare = saved
    marker = tmp_path / "marker"
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    for target in (path, bare):
        _edit(target, lambda m: m["base"].update(factory="../evil.py:build"))
    leanconv.load(path)  # the program serves; the factory is not touched
    with pytest.raises(LeanconvError, match="trust_code=True"):
        leanconv.load(bare)
    # trusted, but the file is not the one saved: refused before importing
    with pytest.raises(LeanconvError, match="changed since the model was saved"):
        leanconv.load(bare, trust_code=True)
    # an absolute path is not a path relative to the model directory: refused as it is read
    _edit(bare, lambda m: m["base"].update(factory=f"{tmp_path / 'evil.py'}:build"))
    for trust in (False, True):
        with pytest.raises(ModelFileError, match="relative to the model directory"):
            leanconv.load(bare, trust_code=trust)
    # a relative name is looked for beside model.json, never in the current directory
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models.py").write_text(EVIL.format(marker=str(marker)))
    _edit(bare, lambda m: m["base"].update(factory="models.py:build"))
    with pytest.raises(LeanconvError, match="not there"):
        leanconv.load(bare, trust_code=True)
    # a standard-library function named as a factory, with a command as its argument
    _edit(bare, lambda m: m["base"].update(factory="../os.py:system",
                                           kwargs={"command": "touch pwned"}))  # fmt: skip
    with pytest.raises(LeanconvError, match="trust_code=True"):
        leanconv.load(bare)
    _edit(bare, lambda m: m["base"].update(factory="os:system", sha256=None))
    with pytest.raises(LeanconvError, match="trust_code=True"):
        leanconv.load(bare)
    assert not marker.exists() and not (tmp_path / "pwned").exists()


def test_a_changed_factory_file_is_refused(saved, tmp_path):
    model, _, bare = saved
    assert isinstance(leanconv.load(bare, trust_code=True), nn.Sequential)
    marker = tmp_path / "marker"
    (tmp_path / "net.py").write_text(FACTORY + f"\nopen({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(LeanconvError, match="changed since the model was saved"):
        leanconv.load(bare, trust_code=True)
    assert not marker.exists()
    back = leanconv.load(bare, factory=lambda: model)  # the caller's own architecture
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.update(code="import os"), "unknown keys ['code']"),
        (lambda m: m.update(format="leanconv-model/9"), "format must be"),
        (lambda m: m["base"].update(pickle="x.pkl"), "base has unknown keys ['pickle']"),
        (lambda m: m.update(base={"zoo": "nosuch"}), "base.zoo 'nosuch' is not a reference"),
        (lambda m: m["base"].update(factory="x.py:build; rm -rf /"), "base.factory"),
        (lambda m: m["base"].update(sha256="abc"), "base.sha256"),
        (lambda m: m["base"].update(kwargs={"a": {"b": 1}}), "base.kwargs.a"),
        (lambda m: m["base"].update(kwargs={"not a name": 1}), "base.kwargs has a key"),
        (lambda m: m.update(replaced={"0": {"type": "Evil"}}), "unknown module type 'Evil'"),
        (
            lambda m: m.update(replaced={"0": {"type": "Conv2d", "args": {"device": "cuda"}}}),
            "arguments ['device']",
        ),
        (
            lambda m: m.update(replaced={"0": {"type": "Conv2d", "args": {"in_channels": "1"}}}),
            "in_channels must be an integer",
        ),
        (
            lambda m: m.update(
                replaced={"0": {"type": "Conv2d", "args": {"in_channels": 1 << 40}}}
            ),
            "in_channels must be an integer",
        ),
        (
            lambda m: m.update(replaced={"0": {"type": "Conv2d", "args": {"padding_mode": "x"}}}),
            "padding_mode must be one of",
        ),
        (
            lambda m: m.update(replaced={"0": {"type": "BatchNorm2d", "args": {"momentum": 2}}}),
            "momentum must be a number in [0, 1] or null",
        ),
        (lambda m: m.update(replaced={"../x": {"type": "Identity"}}), "not a module path"),
        (lambda m: m.update(replaced={"0": {"type": "Identity", "code": 1}}), "unknown keys"),
        (lambda m: m.update(algorithms={"0": "fastest"}), "unknown algorithm 'fastest'"),
        (lambda m: m.update(algorithms={"0; x": "winograd4"}), "not a module path"),
        (lambda m: m.update(memory_format="diagonal"), "unknown memory format"),
        (lambda m: m.update(fused="yes"), "fused must be true or false"),
        (lambda m: m.update(extra=[1]), "extra must be an object"),
        (lambda m: m.update(program="../../evil.pt2"), "program must be 'model.pt2'"),
    ],
)
def test_every_field_is_checked_before_anything_is_built(saved, change, words):
    _, path, _ = saved
    _edit(path, change)
    with pytest.raises(ModelFileError, match=words.replace("[", r"\[").replace("(", r"\(")):
        leanconv.load(path, trust_code=True)


def test_files_that_do_not_fit_are_refused_before_allocating(saved):
    _, path, bare = saved
    # a description much larger than the weights: refused by shape, nothing allocated
    _edit(bare, lambda m: m.update(replaced={"0": {"type": "Conv2d", "args": {
        "in_channels": 1 << 19, "out_channels": 1 << 19, "kernel_size": [3, 3]}}}))  # fmt: skip
    with pytest.raises(LeanconvError, match="does not match the described model"):
        leanconv.load(bare, trust_code=True)
    (path / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        leanconv.load(path)
