"""Reliability: what is refused changes nothing, what is interrupted resumes to the same result,
and one run at a time writes an output.

Every test takes a snapshot of its working directory (path -> size, mtime, sha256) before and
after, and checks that nothing outside the run's own ``OUT``, ``OUT.partial`` and ``OUT.lock`` was
created, changed or deleted (``__pycache__`` of an imported factory file is not counted).

The interrupted runs are stopped in-process by a ``log`` that raises at a stage's marker and are
then resumed. With a MACs-ratio target the plan does not depend on timings, so every resumed run
is compared with one uninterrupted run: the same plan and bit-identical saved weights. With a
speedup target (timed plans) the comparison is against a copy of the same staging directory
resumed without interruption, so that both share one plan.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import leanconv
import leanconv.cli.compress as cli_compress
from leanconv.cli.main import app
from leanconv.compress import serialize
from leanconv.compress.finetune import FinetuneConfig
from leanconv.compress.model_json import ModelFileError
from leanconv.compress.pipeline import CompressConfig, compress
from leanconv.compress.planning import MacsRatio, Speedup
from leanconv.compress.run_lock import RunLock, RunningError, lock_path
from leanconv.errors import LeanconvError
from leanconv.loading import load_model

from .compress.test_finetune import tiny_data
from .compress.test_pipeline import FACTORY as GRAY_FACTORY  # the 1-channel model

# ---------------------------------------------------------------------- helpers
RUN_SUFFIXES = ("", ".partial", ".lock")


def snapshot(root: Path, skip: set[Path] = frozenset()) -> dict[str, tuple]:
    """``{relative path: (size, mtime_ns, sha256)}`` of every file under ``root`` and
    ``("dir",)`` of every directory, leaving out ``skip`` (relative paths) and ``__pycache__``."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(
            d for d in dirnames if d != "__pycache__" and rel_dir / d not in skip
        )  # fmt: skip
        for d in dirnames:
            out[str(rel_dir / d)] = ("dir",)
        for f in filenames:
            rel = rel_dir / f
            if rel in skip:
                continue
            path = Path(dirpath) / f
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(rel)] = (st.st_size, st.st_mtime_ns, digest)
    return out


def run_paths(root: Path, out: Path) -> set[Path]:
    """The paths a run on ``out`` may write: OUT, OUT.partial, OUT.lock (relative to root)."""
    rel = out.relative_to(root)
    return {rel.with_name(rel.name + s) for s in RUN_SUFFIXES}


def changes(before: dict, after: dict) -> dict[str, list[str]]:
    """What differs between two snapshots; empty lists when nothing does."""
    return {
        "created": sorted(after.keys() - before.keys()),
        "deleted": sorted(before.keys() - after.keys()),
        "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
    }


NOTHING = {"created": [], "deleted": [], "changed": []}


def no_run_left(out: Path) -> None:
    for suffix in RUN_SUFFIXES:
        leftover = out.with_name(out.name + suffix)
        assert not leftover.exists(), f"{leftover} was left behind"


def complete(out: Path) -> None:
    """``out`` is a finished run's output, and nothing of the run is left beside it."""
    assert (out / "report.json").is_file() and (out / "report.md").is_file()
    assert (out / "model" / "model.json").is_file()
    assert (out / "model" / "model.safetensors").is_file()
    json.loads((out / "report.json").read_text())
    assert not out.with_name(out.name + ".partial").exists()
    assert not lock_path(out).exists()


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


class Stop(Exception):
    """Raised by a log at a stage's marker: an interruption."""


def stop_at(marker: str, said: list[str] | None = None):
    def log(message: str) -> None:
        if said is not None:
            said.append(message)
        if marker in message:
            raise Stop(marker)

    return log


# ---------------------------------------------------------------------- tiny model and data
#: An RGB model for the command line on a PNG folder.
RGB_FACTORY = """
import torch.nn as nn

def make(num_classes=3):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )
"""


def write_images(root: Path, classes: int = 3, train: int = 12, test: int = 4) -> Path:
    """``root/{train,test}/c<k>/<i>.png``: 8x8 RGB images, class k brighter in channel k."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (8, 8, 3))
                pixels[2:6, 2:6, c % 3] += 150
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


class CliEnv:
    """A working directory with a factory file, its weights and a PNG folder, and a bystander
    file that no run may touch."""

    def __init__(self, root: Path):
        self.root = root
        self.factory = root / "net.py"
        self.factory.write_text(RGB_FACTORY)
        self.images = write_images(root / "images")
        torch.manual_seed(0)
        self.model = load_model(f"{self.factory}:make").module
        self.state = {
            k: v.detach().clone().contiguous() for k, v in self.model.state_dict().items()
        }
        self.weights = root / "w.safetensors"
        save_file(self.state, self.weights)
        (root / "notes.txt").write_text("a file of the user's: never touched")
        self.out = root / "out"

    def args(self, *extra: str, weights: Path | None | bool = True, out: Path | None = None):
        args = ["compress", f"{self.factory}:make", "--data", f"folder:{self.images}",
                "--out", str(out or self.out), "--workers", "0"]  # fmt: skip
        if weights is True:
            weights = self.weights
        if weights:
            args += ["--weights", str(weights)]
        return args + list(extra)

    def small(self, *extra: str, **kw):
        """The arguments of a small, fast, complete run."""
        return self.args("--calibration", "8", "--batch", "8", "--epochs", "2", "--speedup",
                         "1.2", "--algorithms", "none", "--min-metric", "0", *extra, **kw)  # fmt: skip

    def snapshot(self, out: Path | None = None) -> dict:
        return snapshot(self.root, run_paths(self.root, out or self.out))


@pytest.fixture
def env(tmp_path):
    return CliEnv(tmp_path)


runner = CliRunner()


def invoke(args: list[str]):
    t0 = time.perf_counter()
    result = runner.invoke(app, args)
    return result, time.perf_counter() - t0


# ---------------------------------------------------------------------- bad arguments
BAD_ARGUMENTS = [
    (["--speedup", "0"], "--speedup 0: must be a positive"),
    (["--speedup=-1"], "--speedup -1: must be a positive"),
    (["--macs-ratio", "0"], "--macs-ratio 0:"),
    (["--macs-ratio", "2"], "--macs-ratio 2:"),
    (["--batch", "0"], "--batch 0: must be at least 1"),
    (["--calibration", "1"], "--calibration 1: must be at least 2"),
    (["--methods", "nosuch"], "--methods"),
    (["--algorithms", "nosuch"], "--algorithms: unknown nosuch"),
    (["--speedup", "2", "--macs-ratio", "0.5"], "give --speedup or --macs-ratio, not both"),
    (["--patience", "2"], "patience"),
    (["NO-WEIGHTS"], "no --weights for"),
]


@pytest.mark.parametrize("bad, words", BAD_ARGUMENTS, ids=[" ".join(b) for b, _ in BAD_ARGUMENTS])
def test_bad_arguments_exit_2_at_once_and_write_nothing(env, monkeypatch, bad, words):
    read = []
    real = cli_compress.load_data
    monkeypatch.setattr(cli_compress, "load_data", lambda *a, **k: read.append(a) or real(*a, **k))
    before = env.snapshot()
    no_weights = bad == ["NO-WEIGHTS"]
    args = env.args(weights=not no_weights) + ([] if no_weights else bad)
    result, seconds = invoke(args)
    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert result.stderr.strip() == lines[0] and result.stdout == "", result.output
    assert seconds < 2.0, f"{seconds:.2f} s to refuse {bad}"
    assert read == [], "the data were read before the arguments were checked"
    assert changes(before, env.snapshot()) == NOTHING
    no_run_left(env.out)


@pytest.mark.parametrize(
    "bad",
    [["--lr", "nan"], ["--lr", "inf"], ["--speedup", "inf"]],
    ids=["lr nan", "lr inf", "speedup inf"],
)
def test_numbers_that_are_not_finite_are_refused_at_once(env, monkeypatch, bad):
    def read(*a, **k):
        raise ValueError("the data were read")

    monkeypatch.setattr(cli_compress, "load_data", read)
    before = env.snapshot()
    result, _ = invoke(env.args(*bad))
    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "the data were read" not in lines[0], result.stderr
    assert bad[0].lstrip("-") in lines[0] and bad[1] in lines[0]
    assert changes(before, env.snapshot()) == NOTHING


@pytest.mark.parametrize(
    "bad, words",
    [(["--speedup=-1"], "--speedup -1"), (["--macs-ratio", "2", "NO-WEIGHTS"], "--macs-ratio 2")],
    ids=["speedup=-1", "macs-ratio 2, no weights"],
)
def test_bad_arguments_in_a_real_process(env, bad, words):
    """The installed command: exit status 2, one ``error:`` line on stderr, nothing on stdout,
    nothing written (the time includes the interpreter importing torch)."""
    before = env.snapshot()
    no_weights = "NO-WEIGHTS" in bad
    args = env.args(weights=not no_weights) + [b for b in bad if b != "NO-WEIGHTS"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "leanconv.cli.main", *args], capture_output=True,
                          text=True, timeout=60, cwd=env.root)  # fmt: skip
    seconds = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and words in lines[0] and proc.stderr.strip() == lines[0], proc.stderr
    assert proc.stdout == ""
    assert seconds < 20, f"{seconds:.1f} s"
    assert changes(before, env.snapshot()) == NOTHING
    no_run_left(env.out)


# ---------------------------------------------------------------------- weights that are not finite
def _bad_weights(env: CliEnv, kind: str) -> tuple[Path, str]:
    state = {k: v.clone() for k, v in env.state.items()}
    if kind == "nan.safetensors":
        state["3.weight"][0, 0, 0, 0] = float("nan")
        path = env.root / "nan.safetensors"
        save_file(state, path)
        return path, "3.weight"
    if kind == "inf.pth":
        state["4.running_var"][1] = float("inf")
        path = env.root / "inf.pth"
        torch.save(state, path)
        return path, "4.running_var"
    # a training checkpoint nesting a DataParallel state dict
    state["0.weight"][0] = float("nan")
    path = env.root / "nan.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path, "0.weight"


@pytest.mark.parametrize("kind", ["nan.safetensors", "inf.pth", "nan.ckpt"])
def test_weights_that_are_not_finite_are_refused_naming_the_tensor(env, kind):
    weights, tensor = _bad_weights(env, kind)
    before = env.snapshot()
    result, seconds = invoke(env.small(weights=weights))
    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert tensor in lines[0] and weights.name in lines[0] and "NaN or infinite" in lines[0]
    assert seconds < 5.0, f"{seconds:.2f} s"
    assert changes(before, env.snapshot()) == NOTHING
    no_run_left(env.out)


def test_a_refused_run_creates_no_parent_directories_of_out(env):
    """(Fixed in 2805e93: the CLI's early lock probe used to make the parents of --out.)"""
    weights, _ = _bad_weights(env, "nan.safetensors")
    out = env.root / "new" / "deeper" / "out"
    before = env.snapshot(out)
    result, _ = invoke(env.small(weights=weights, out=out))
    assert result.exit_code == 2
    assert changes(before, env.snapshot(out)) == NOTHING


# ---------------------------------------------------------------------- loading a damaged model
#: A factory that leaves a mark when it is imported: tests assert it never is.
MARKED_FACTORY = """
import pathlib
import torch.nn as nn

pathlib.Path({marker!r}).write_text("imported")

def build(num_classes=3):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
"""


class Saved:
    def __init__(self, root: Path):
        self.root, self.marker = root, root / "marker"
        (root / "net.py").write_text(MARKED_FACTORY.format(marker=str(self.marker)))
        torch.manual_seed(0)
        self.model = load_model(f"{root / 'net.py'}:build").module.eval()
        # with its torch.export program (model.pt2), and a copy without it
        self.program = serialize.save(self.model, root / "m", {"factory": f"{root / 'net.py'}:build"},
                                      example=torch.randn(2, 3, 8, 8))  # fmt: skip
        self.bare = root / "bare"
        shutil.copytree(self.program, self.bare)
        (self.bare / "model.pt2").unlink()
        self.edit(self.bare, lambda m: m.update(program=None))
        self.marker.unlink()  # written when the model above was built

    @staticmethod
    def edit(path: Path, change) -> None:
        meta = json.loads((path / "model.json").read_text())
        change(meta)
        (path / "model.json").write_text(json.dumps(meta))

    def build(self):
        """The caller's own architecture (``factory=``): imports nothing."""
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(8, 3))  # fmt: skip


@pytest.fixture
def saved(tmp_path):
    return Saved(tmp_path)


def _conv(**args):
    return lambda m: m.update(replaced={"0": {"type": "Conv2d", "args": args}})


# fields not covered by tests/compress/test_load_safety.py
TAMPERED = [
    ("unknown top-level key", lambda m: m.update(init="os.system"), "unknown keys ['init']"),
    ("format missing", lambda m: m.pop("format"), "format must be 'leanconv-model/1', not None"),
    ("base a string", lambda m: m.update(base="../net.py:build"), "base must be an object"),
    ("zoo and factory", lambda m: m["base"].update(zoo="resnet18_cifar"), "names both a zoo"),
    ("factory a list", lambda m: m["base"].update(factory=["x.py:build"]), "base.factory"),
    ("factory shell", lambda m: m["base"].update(factory="x.py:build $(touch y)"), "base.factory"),
    ("kwargs a list", lambda m: m["base"].update(kwargs=[1]), "base.kwargs must be an object"),
    ("kwargs too deep", lambda m: m["base"].update(kwargs={"a": [[[[[[1]]]]]]}), "nests too deep"),
    ("replaced a list", lambda m: m.update(replaced=[]), "replaced must be an object"),
    ("replaced key empty", lambda m: m.update(replaced={"": {"type": "Identity"}}), "not a module path"),
    ("sequential too deep",
     lambda m: m.update(replaced={"0": json.loads('{"type": "Sequential", "children": [' * 10
                                                  + "]}" * 10)}),
     "nests deeper than 8 levels"),
    ("children an object",
     lambda m: m.update(replaced={"0": {"type": "Sequential", "children": {"a": 1}}}),
     "children must be a list"),
    ("sequential extra key",
     lambda m: m.update(replaced={"0": {"type": "Sequential", "children": [], "init": "x"}}),
     "unknown keys ['init']"),
    ("args a list", lambda m: m.update(replaced={"0": {"type": "Conv2d", "args": [3]}}), ".args must be an object"),
    ("kernel of one", _conv(kernel_size=[3]), "kernel_size must be a list of 2 integers"),
    ("kernel zero", _conv(kernel_size=[0, 3]), "kernel_size[0] must be an integer in 1.."),
    ("stride negative", _conv(stride=[-1, 1]), "stride[0] must be an integer in 1.."),
    ("bias an integer", _conv(bias=1), "bias must be true or false"),
    ("channels a bool", _conv(in_channels=True), "in_channels must be an integer"),
    ("channels a float", _conv(in_channels=3.0), "in_channels must be an integer"),
    ("padding a word", _conv(padding="full"), "padding must be 'same', 'valid' or two integers"),
    ("padding three pairs", _conv(padding=[[1, 1], [1, 1], [1, 1]]), "two (before, after) pairs"),
    ("flatten dim", lambda m: m.update(replaced={"5": {"type": "Flatten", "args": {"start_dim": 99}}}),
     "start_dim must be a dimension"),
    ("tt ranks", lambda m: m.update(replaced={"0": {"type": "TTConv2d", "args": {"ranks": [1, 2]}}}),
     "ranks must be a list of 3 integers"),
    ("tucker rank zero",
     lambda m: m.update(replaced={"0": {"type": "TuckerConv2d", "args": {"in_rank": 0}}}),
     "in_rank must be an integer in 1.."),
    ("zero pad of two", lambda m: m.update(replaced={"0": {"type": "ZeroPad2d", "args": {"padding": [1, 1]}}}),
     "padding must be a list of 4 integers"),
    ("algorithms a list", lambda m: m.update(algorithms=["winograd4"]), "algorithms must be an object"),
    ("algorithm key dots", lambda m: m.update(algorithms={"0..1": "winograd4"}), "not a module path"),
    ("fused an integer", lambda m: m.update(fused=1), "fused must be true or false"),
    ("memory format null", lambda m: m.update(memory_format=None), "unknown memory format"),
    ("program absolute", lambda m: m.update(program="/tmp/model.pt2"), "program must be 'model.pt2'"),
]  # fmt: skip


@pytest.mark.parametrize("change, words", [t[1:] for t in TAMPERED], ids=[t[0] for t in TAMPERED])
def test_tampered_fields_are_refused_before_any_import(saved, change, words):
    saved.edit(saved.bare, change)
    before = snapshot(saved.root)
    with pytest.raises(ModelFileError) as info:
        leanconv.load(saved.bare, trust_code=True)  # trusted: only the checks stand in the way
    assert words in str(info.value) and "model.json" in str(info.value)
    assert not saved.marker.exists(), "the recorded factory was imported"
    assert changes(before, snapshot(saved.root)) == NOTHING


@pytest.mark.parametrize("value", [[1, 2], "abc", 5])
def test_extra_input_that_is_not_an_object_is_a_model_file_error(saved, value):
    """(Fixed in 2805e93: load() did dict(extra["input"]), a plain TypeError/ValueError.)"""
    saved.edit(saved.program, lambda m: m["extra"].update(input=value))
    with pytest.raises(ModelFileError, match="extra.input must be an object"):
        leanconv.load(saved.program)  # the program path, untrusted
    with pytest.raises(ModelFileError, match="extra.input must be an object"):
        leanconv.load(saved.program, trust_code=True)
    assert not saved.marker.exists()


@pytest.mark.parametrize(
    "args",
    [
        {"in_channels": 3, "out_channels": 8, "kernel_size": [3, 3], "groups": 2},
        {"in_channels": 3, "out_channels": 8, "kernel_size": [3, 3], "padding": "same",
         "stride": [2, 2]},
        {},
    ],
    ids=["groups", "same-strided", "no-args"],
)  # fmt: skip
def test_arguments_a_module_refuses_are_a_model_file_error_before_import(saved, args):
    """Arguments that pass the allow-list but that the module's constructor refuses. (Fixed in
    2805e93: a plain ValueError/TypeError from model_json.build, after the trusted factory was
    imported.)"""
    saved.edit(saved.bare, _conv(**args))
    with pytest.raises(ModelFileError, match=r"replaced\['0'\] does not build a Conv2d"):
        leanconv.load(saved.bare, trust_code=True)
    assert not saved.marker.exists(), "the recorded factory was imported before the refusal"


def test_a_deeply_nested_model_json_is_a_model_file_error(saved):
    """(Fixed in 2805e93: json.loads' RecursionError escaped.)"""
    (saved.bare / "model.json").write_text(
        '{"extra": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    )
    with pytest.raises(ModelFileError, match="not valid JSON"):
        leanconv.load(saved.bare, trust_code=True)
    assert not saved.marker.exists()


@pytest.mark.parametrize("text", ["[]", "null", '"model"', "3"])
def test_a_model_json_that_is_not_an_object_is_refused(saved, text):
    (saved.bare / "model.json").write_text(text)
    with pytest.raises(ModelFileError, match="must hold a JSON object"):
        leanconv.load(saved.bare, trust_code=True)
    assert not saved.marker.exists()


def _cut(path: Path, how: str) -> None:
    data = path.read_bytes()
    size = {"half": len(data) // 2, "empty": 0, "header": 8, "last byte": len(data) - 1}[how]
    path.write_bytes(data[:size])


@pytest.mark.parametrize("how", ["half", "empty", "header", "last byte"])
def test_truncated_weights_are_a_leanconv_error_and_import_nothing(saved, how):
    _cut(saved.bare / "model.safetensors", how)
    before = snapshot(saved.root)
    with pytest.raises(LeanconvError, match="model.safetensors") as info:
        leanconv.load(saved.bare, factory=saved.build)  # the caller's architecture
    assert "truncated" in str(info.value) or "cannot be read" in str(info.value)
    with pytest.raises(LeanconvError, match="trust_code=True"):
        leanconv.load(saved.bare)  # untrusted: refused before the weights are even read
    assert not saved.marker.exists()
    assert changes(before, snapshot(saved.root)) == NOTHING
    # trusted, the factory is imported (as asked) and the weights are refused after it
    with pytest.raises(LeanconvError, match="model.safetensors"):
        leanconv.load(saved.bare, trust_code=True)


@pytest.mark.parametrize("how", ["half", "empty"])
def test_truncated_weights_beside_a_program_are_a_leanconv_error(saved, how):
    """(Fixed in 2805e93: the program path never read model.safetensors.)"""
    _cut(saved.program / "model.safetensors", how)
    with pytest.raises(LeanconvError, match="model.safetensors' cannot be read"):
        leanconv.load(saved.program)
    assert not saved.marker.exists()


@pytest.mark.parametrize("tensor, value", [("0.weight", float("nan")), ("2.bias", float("inf"))])
def test_weights_that_are_not_finite_beside_a_program_are_refused(saved, tensor, value):
    path = saved.program / "model.safetensors"
    state = load_file(path)
    state[tensor].view(-1)[0] = value
    save_file(state, path)
    with pytest.raises(LeanconvError, match="NaN or infinite"):
        leanconv.load(saved.program, trust_code=True)  # the factory path refuses them
    with pytest.raises(LeanconvError, match="NaN or infinite"):
        leanconv.load(saved.program)  # and so should the program path


@pytest.mark.parametrize("how", ["half", "empty", "last byte"])
def test_truncated_model_json_is_a_model_file_error(saved, how):
    _cut(saved.bare / "model.json", how)
    with pytest.raises(ModelFileError, match="not valid JSON|must hold a JSON object"):
        leanconv.load(saved.bare, trust_code=True)
    assert not saved.marker.exists()


@pytest.mark.parametrize("how", ["half", "empty"])
def test_truncated_program_is_a_leanconv_error(saved, how):
    _cut(saved.program / "model.pt2", how)
    with pytest.raises(LeanconvError, match=r"model\.pt2' cannot be read"):
        leanconv.load(saved.program)
    assert not saved.marker.exists()


# ---------------------------------------------------------------------- interrupted, then resumed
STAGES = {
    # marker -> what the staging directory holds when the run stops there
    "planned 1/": {"run.json", "candidates.json"},
    "[3/6]": {"run.json", "candidates.json", "plan.json"},
    "epoch 1/": {"run.json", "plan.json", "surgery.json", "checkpoint.pt"},
    "[5/6]": {"run.json", "plan.json", "surgery.json", "checkpoint.pt"},
    "[6/6]": {"run.json", "plan.json", "surgery.json", "checkpoint.pt"},
}


def _gray_model(factory: Path):
    torch.manual_seed(0)
    return load_model(f"{factory}:make").module


def _config(epochs: int = 2, **target) -> CompressConfig:
    """MACs ratio 0.5 by default: a plan chosen by MACs and sensitivity, not by timings."""
    target = {"target": Speedup(target["speedup"])} if target else {"target": MacsRatio(0.5)}
    return CompressConfig(**target, ratios=(0.15, 0.4), calibration=32, repeats=2, plan_batch=8,
                          batch_sizes=(1, 8), min_metric=0, algorithms=(),
                          finetune=FinetuneConfig(epochs=epochs, batch_size=16,
                                                  progress=False))  # fmt: skip


def _choices(out: Path) -> dict:
    plan = json.loads((out / "report.json").read_text())["plan"]["layers"]
    return {n: (c["method"], c["rank"], c.get("algorithm")) for n, c in plan.items()}


def _same_weights(a: Path, b: Path) -> list[str]:
    """The tensors that differ between two saved models (an empty list: bit-identical)."""
    x, y = (
        load_file(a / "model" / "model.safetensors"),
        load_file(b / "model" / "model.safetensors"),
    )
    assert sorted(x) == sorted(y)
    return [k for k in x if not torch.equal(x[k], y[k])]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run on the MACs-ratio config: its output directory."""
    root = tmp_path_factory.mktemp("reference")
    (root / "net.py").write_text(GRAY_FACTORY)
    out = root / "out"
    compress(_gray_model(root / "net.py"), tiny_data(n=128), _config(), out,
             {"factory": f"{root / 'net.py'}:make"}, log=None)  # fmt: skip
    complete(out)
    assert any(m != "keep" for m, _, _ in _choices(out).values()), "the plan rewrites nothing"
    return out


@pytest.mark.parametrize("marker", list(STAGES))
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, reference, marker):
    factory = tmp_path / "net.py"
    factory.write_text(GRAY_FACTORY)
    (tmp_path / "notes.txt").write_text("keep")
    data, out, base = tiny_data(n=128), tmp_path / "out", {"factory": f"{factory}:make"}
    _gray_model(factory)  # imported once before the snapshot
    before = snapshot(tmp_path, run_paths(tmp_path, out))

    with pytest.raises(Stop):
        compress(_gray_model(factory), data, _config(), out, base, log=stop_at(marker))
    staging = tmp_path / "out.partial"
    assert not out.exists() and not lock_path(out).exists(), "the lock outlived the run"
    held = {p.name for p in staging.iterdir()}
    assert STAGES[marker] <= held, held
    if marker == "planned 1/":
        assert len(json.loads((staging / "candidates.json").read_text())) == 1
    recorded = json.loads((staging / "plan.json").read_text()) if "plan.json" in held else None

    said: list[str] = []
    compress(_gray_model(factory), data, _config(), out, base, resume=True, log=said.append)
    complete(out)
    assert changes(before, snapshot(tmp_path, run_paths(tmp_path, out))) == NOTHING
    if recorded is not None:  # the plan was read back, not made again
        assert any("plan read back" in m for m in said)
        assert {n: (c["method"], c["rank"], c.get("algorithm")) for n, c in recorded["layers"].items()} == _choices(out)  # fmt: skip
    if marker in ("epoch 1/", "[5/6]", "[6/6]"):
        epoch = 1 if marker == "epoch 1/" else 2
        assert any(f"resumed from the checkpoint of epoch {epoch}" in m for m in said), said
    # the same plan as an uninterrupted run (MACs ratio: no timings decide), the same weights
    assert _choices(out) == _choices(reference)
    assert _same_weights(out, reference) == []
    history = json.loads((out / "report.json").read_text())["finetune"]
    ref_history = json.loads((reference / "report.json").read_text())["finetune"]
    assert [h["loss"] for h in history] == [h["loss"] for h in ref_history]
    # and the saved model loads (its program, no code run) and computes what the reference does
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            leanconv.load(out / "model")(x), leanconv.load(reference / "model")(x)
        )


def test_a_timed_plan_interrupted_in_fine_tuning_ends_as_its_own_uninterrupted_resume(tmp_path):
    """With a speedup target the plan depends on timings, so two runs may plan differently; both
    sides here share one plan: the staging directory of a run stopped after planning is copied,
    and the copy is resumed without interruption while the original is interrupted again in
    fine-tuning and resumed. The final weights must be bit-identical."""
    factory = tmp_path / "net.py"
    factory.write_text(GRAY_FACTORY)
    data, base = tiny_data(n=128), {"factory": f"{factory}:make"}
    out, twin = tmp_path / "out", tmp_path / "twin"
    config = lambda: _config(epochs=3, speedup=1.5)  # noqa: E731
    with pytest.raises(Stop):
        compress(_gray_model(factory), data, config(), out, base, log=stop_at("[3/6]"))
    shutil.copytree(tmp_path / "out.partial", tmp_path / "twin.partial")
    compress(_gray_model(factory), data, config(), twin, base, resume=True, log=None)
    with pytest.raises(Stop):
        compress(_gray_model(factory), data, config(), out, base, resume=True,
                 log=stop_at("epoch 2/"))  # fmt: skip
    said: list[str] = []
    compress(_gray_model(factory), data, config(), out, base, resume=True, log=said.append)
    assert any("resumed from the checkpoint of epoch 2" in m for m in said), said
    complete(out)
    complete(twin)
    assert _choices(out) == _choices(twin)
    assert _same_weights(out, twin) == []


# ---------------------------------------------------------------------- one run per output
def _fake_staging(out: Path) -> Path:
    staging = out.with_name(out.name + ".partial")
    staging.mkdir()
    (staging / "run.json").write_text(json.dumps({"settings": {}, "model": {}, "data": {}}))
    (staging / "checkpoint.pt").write_bytes(b"\x00" * 1000)
    return staging


def test_a_second_cli_run_on_a_running_output_stops_at_once(env, monkeypatch):
    read = []
    real = cli_compress.load_data
    monkeypatch.setattr(cli_compress, "load_data", lambda *a, **k: read.append(a) or real(*a, **k))
    staging = _fake_staging(env.out)
    with RunLock(env.out):  # the first run, working in its staging directory
        owner = lock_path(env.out).read_text()
        everything = snapshot(env.root)
        for extra in ((), ("--resume",), ("--force",)):
            result, seconds = invoke(env.small(*extra))
            assert result.exit_code == 2, result.output
            lines = error_lines(result.stderr)
            assert len(lines) == 1 and f"pid {os.getpid()} on " in lines[0], result.stderr
            assert "another leanconv run is writing" in lines[0] and "started " in lines[0]
            assert seconds < 2.0, f"{seconds:.2f} s"
            assert read == []
            # the first run's staging, lock and everything else: untouched
            assert changes(everything, snapshot(env.root)) == NOTHING
            assert lock_path(env.out).read_text() == owner
    assert staging.is_dir() and not lock_path(env.out).exists()


def test_a_second_process_on_a_running_output_exits_2_naming_the_first(env):
    staging = _fake_staging(env.out)
    with RunLock(env.out):
        everything = snapshot(env.root)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "leanconv.cli.main", *env.small()],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        seconds = time.perf_counter() - t0
        assert proc.returncode == 2, proc.stderr
        assert f"(pid {os.getpid()} on " in proc.stderr and proc.stdout == ""
        assert seconds < 20, f"{seconds:.1f} s"
        assert changes(everything, snapshot(env.root)) == NOTHING
    assert (staging / "checkpoint.pt").read_bytes() == b"\x00" * 1000


def test_a_second_python_run_on_a_running_output_stops_before_touching_its_staging(tmp_path):
    factory = tmp_path / "net.py"
    factory.write_text(GRAY_FACTORY)
    out = tmp_path / "out"
    _fake_staging(out)
    model = _gray_model(factory)
    with RunLock(out):
        everything = snapshot(tmp_path)
        for kw in ({"resume": True}, {"force": True}, {}):
            with pytest.raises(RunningError, match=rf"pid {os.getpid()} on "):
                compress(model, tiny_data(n=64), _config(), out, {}, log=None, **kw)
            assert changes(everything, snapshot(tmp_path)) == NOTHING


# ---------------------------------------------------------------------- the command line, resumed
class _InterruptingConsole:
    """The CLI's console, raising ``KeyboardInterrupt`` (Ctrl-C) when a line holds ``marker``."""

    def __init__(self, real, marker: str):
        self.real, self.marker = real, marker

    def print(self, *args, **kwargs):
        if any(self.marker in str(a) for a in args):
            raise KeyboardInterrupt
        return self.real.print(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_cli_interrupted_in_fine_tuning_says_resume_and_resume_refuses_other_settings(env, monkeypatch):  # fmt: skip
    before = env.snapshot()
    with monkeypatch.context() as m:
        m.setattr(cli_compress, "console", _InterruptingConsole(cli_compress.console, "epoch 1/"))
        result, _ = invoke(env.small())
    assert result.exit_code == 130, result.output
    assert "rerun with --resume" in result.stdout and "out.partial" in result.stdout
    staging = env.root / "out.partial"
    assert (staging / "checkpoint.pt").is_file() and not lock_path(env.out).exists()
    kept = snapshot(staging)

    changed = env.small("--resume")
    changed[changed.index("--epochs") + 1] = "3"
    result, _ = invoke(changed)
    assert result.exit_code == 2 and "--epochs was 2, now 3" in result.stderr, result.output
    result, _ = invoke(env.small())  # without --resume: refused, the staging kept
    assert result.exit_code == 2
    assert "--resume continues it, --force discards it" in result.stderr, result.output
    assert snapshot(staging) == kept

    result, _ = invoke(env.small("--resume"))
    assert result.exit_code == 0, result.output
    assert "resumed from the checkpoint of epoch 1" in result.stdout
    complete(env.out)
    assert changes(before, env.snapshot()) == NOTHING


def test_cli_interrupted_before_anything_is_staged_says_so(env, monkeypatch):
    """(Fixed in 2805e93: the hint said --resume, which then refused: 'no interrupted run'.)"""
    before = env.snapshot()
    with monkeypatch.context() as m:
        m.setattr(cli_compress, "console", _InterruptingConsole(cli_compress.console, "[1/6]"))
        result, _ = invoke(env.small())
    assert result.exit_code == 130, result.output
    assert "nothing to resume" in result.stdout and "--resume" not in result.stdout
    assert changes(before, env.snapshot()) == NOTHING
    no_run_left(env.out)
    again, _ = invoke(env.small())  # a plain rerun
    assert again.exit_code == 0, again.output
    complete(env.out)


def test_cli_says_a_stale_lock_was_taken_over(env):
    """A lock file left by a dead process (kill -9): taken over and said in one line. (Fixed in
    2805e93: the CLI's early lock check took it over silently.)"""
    dead = {"pid": 2**22 + 12345, "host": "elsewhere", "started": 1.0e9}
    lock_path(env.out).write_text(json.dumps(dead))
    result, _ = invoke(env.small())
    assert result.exit_code == 0, result.output
    complete(env.out)
    said = [line for line in result.stdout.splitlines() if "stale lock" in line]
    assert len(said) == 1 and str(dead["pid"]) in said[0], result.stdout
