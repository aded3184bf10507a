"""The path of a user's own model and data, as a practitioner takes it.

A model file of the user's own (not from the zoo: ``nn.ModuleDict`` stages, ``F.relu`` called in
``forward``, a residual sum, a grouped 5x5 convolution), PNG folders of three classes, trained
here with this file's own code (PIL, /255, ImageNet normalisation); then ``leanconv compress`` on
the command line with the right and the wrong flags, and ``leanconv.compress`` from Python with
the user's own ``DataLoader``s, a segmentation model with its own metric and loss, and the
refusals. Every figure leanconv reports is compared with this file's own evaluation.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from typer.testing import CliRunner

import leanconv
from leanconv.cli.main import app
from leanconv.decompose.rank import METHODS
from leanconv.errors import LeanconvError

MODEL_SOURCE = '''
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """A small classifier written the way people write them."""

    def __init__(self, num_classes=3, width=16):
        super().__init__()
        w = width
        self.stem = nn.Conv2d(3, w, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w)
        self.stages = nn.ModuleDict({
            "res": nn.ModuleDict({
                "conv1": nn.Conv2d(w, w, 3, padding=1, bias=False), "bn1": nn.BatchNorm2d(w),
                "conv2": nn.Conv2d(w, w, 3, padding=1, bias=False), "bn2": nn.BatchNorm2d(w),
            }),
            "down": nn.ModuleDict({
                "conv": nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False),
                "bn": nn.BatchNorm2d(2 * w),
                "grouped": nn.Conv2d(2 * w, 2 * w, 5, padding=2, groups=4),
            }),
        })
        self.head = nn.Linear(2 * w, num_classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        r = self.stages["res"]
        y = F.relu(r["bn1"](r["conv1"](x)))
        x = F.relu(x + r["bn2"](r["conv2"](y)))
        d = self.stages["down"]
        x = F.relu(d["bn"](d["conv"](x)))
        x = F.relu(d["grouped"](x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build(num_classes=3, width=16):
    return Net(num_classes=num_classes, width=width)
'''

CLASSES = ("circle", "square", "triangle")  # sorted: the order leanconv numbers them in
COLOURS = ((200, 40, 40), (40, 180, 40), (40, 60, 220))
SIZE = 48
N_TRAIN, N_TEST = 40, 15  # per class
MEAN = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
STD = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
CHANCE_BAR = 100 * 2 / 3  # min(2 * chance, (chance + 100) / 2) for three classes
FAST = ["--speedup", "1.2", "--epochs", "1", "--calibration", "16", "--batch", "8",
        "--algorithms", "none", "--workers", "0"]  # fmt: skip


# ------------------------------------------------------------------------ the user's project
def draw(rng: np.random.Generator, label: int) -> Image.Image:
    """A coloured shape of the class on a dark background of random colour, plus noise."""
    bg = tuple(int(v) for v in rng.integers(0, 90, size=3))
    img = Image.new("RGB", (SIZE, SIZE), bg)
    pen = ImageDraw.Draw(img)
    s = int(rng.integers(14, 24))
    x0, y0 = (int(v) for v in rng.integers(2, SIZE - 2 - s, size=2))
    colour = tuple(int(np.clip(v + rng.integers(-30, 31), 0, 255)) for v in COLOURS[label])
    if label == 0:
        pen.ellipse((x0, y0, x0 + s, y0 + s), fill=colour)
    elif label == 1:
        pen.rectangle((x0, y0, x0 + s, y0 + s), fill=colour)
    else:
        pen.polygon([(x0, y0 + s), (x0 + s, y0 + s), (x0 + s // 2, y0)], fill=colour)
    pixels = np.asarray(img).astype(np.int16) + rng.integers(-20, 21, size=(SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_folders(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                draw(rng, label).save(folder / f"{name}_{i:03d}.png")


def read_png(path: Path, normalize: bool = True) -> torch.Tensor:
    """The user's own reader: PIL, pixels / 255, then ImageNet mean and std."""
    with Image.open(path) as img:
        pixels = np.array(img.convert("RGB"))
    x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    return (x - MEAN) / STD if normalize else x


def split_files(root: Path, split: str) -> list[tuple[Path, int]]:
    return [(p, label) for label, name in enumerate(CLASSES)
            for p in sorted((root / split / name).glob("*.png"))]  # fmt: skip


def load_split(root: Path, split: str, normalize: bool = True):
    files = split_files(root, split)
    x = torch.stack([read_png(p, normalize) for p, _ in files])
    return x, torch.tensor([label for _, label in files])


def import_file(path: Path, name: str):
    """The user's module, imported as they would (registered, so its classes pickle)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    was = model.training
    model.eval()
    try:
        return int((model(x).argmax(1) == y).sum())
    finally:
        model.train(was)


@dataclass
class Project:
    data: Path
    model_file: Path
    module: object
    weights: dict[str, Path]
    state: dict[str, torch.Tensor]
    test_x: torch.Tensor
    test_y: torch.Tensor
    raw_test_x: torch.Tensor  # pixels / 255, not normalised
    correct: int  # the trained model on the test folder, prepared as in training
    raw_correct: int  # ... and on pixels / 255 (the default when no flag is given)

    @property
    def spec(self) -> str:
        return f"{self.model_file}:build"

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / len(self.test_y)

    @property
    def raw_accuracy(self) -> float:
        return 100.0 * self.raw_correct / len(self.test_y)

    def model(self) -> nn.Module:
        net = self.module.build(num_classes=len(CLASSES))
        net.load_state_dict(self.state)
        return net.eval()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("user")
    data = root / "shapes"
    write_folders(data)
    model_file = root / "net.py"
    model_file.write_text(MODEL_SOURCE)
    module = import_file(model_file, "user_net_for_leanconv_tests")

    x, y = load_split(data, "train")
    torch.manual_seed(0)
    net = module.build(num_classes=3)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for epoch in range(5):
        net.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(order), 16):
            idx = order[i : i + 16]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    test_x, test_y = load_split(data, "test")
    raw_test_x, _ = load_split(data, "test", normalize=False)
    good = correct(net, test_x, test_y)
    assert 100.0 * good / len(test_y) > 80, "the user's own training did not learn the shapes"

    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    weights = {name: root / name for name in ("net.pth", "ckpt.pth", "ddp.pth")}
    torch.save(state, weights["net.pth"])
    torch.save({"epoch": 3, "state_dict": state, "optimizer": opt.state_dict()},
               weights["ckpt.pth"])  # fmt: skip
    torch.save({f"module.{k}": v for k, v in state.items()}, weights["ddp.pth"])
    return Project(data, model_file, module, weights, state, test_x, test_y, raw_test_x, good,
                   correct(net, raw_test_x, test_y))  # fmt: skip


def cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def compress_args(project: Project, out: Path, *flags) -> list:
    return ["compress", project.spec, "--data", f"folder:{project.data}", "--out", out, *flags]


def statistics(x: torch.Tensor) -> str:
    """Per-channel mean and standard deviation of images, as the guard's message prints them."""
    x = x.double()
    mean, std = x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()
    return (f"per-channel mean {', '.join(f'{v:.3f}' for v in mean)} and std "
            f"{', '.join(f'{v:.3f}' for v in std)}")  # fmt: skip


def scored(output: str) -> float:
    """The original's score as the guard's message states it."""
    found = re.search(r"the original model scores ([0-9.]+)% accuracy", output)
    assert found, output
    return float(found.group(1))


# ------------------------------------------------------------------------ the command line
def test_cli_with_the_training_preprocessing_reports_the_users_own_accuracy(tmp_path, project):
    out = tmp_path / "out"
    r = cli(*compress_args(project, out, "--weights", project.weights["ckpt.pth"],
                           "--normalize", "imagenet", *FAST))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "weights ckpt.pth: read the state dict under the checkpoint key 'state_dict'" in r.output
    assert "removed the prefix" not in r.output
    assert out.is_dir() and not (tmp_path / "out.partial").exists()

    report = json.loads((out / "report.json").read_text())
    assert report["metric"] == "accuracy"
    # the original, as leanconv read the folder and the checkpoint, scores exactly what the
    # user's own code measured on the same images
    assert report["before"]["accuracy"] == pytest.approx(project.accuracy, abs=1e-9)
    assert report["before"]["metric"] == report["before"]["accuracy"]
    assert report["after"]["metric"] == report["after"]["accuracy"]
    assert 0 <= report["after"]["accuracy"] <= 100
    assert report["accuracy_drop"] == pytest.approx(
        report["before"]["accuracy"] - report["after"]["accuracy"]
    )
    assert set(report["speedup_by_batch"]) == set(report["after"]["latency_ms"]) != set()
    for b, s in report["speedup_by_batch"].items():
        want = report["before"]["latency_ms"][b] / report["after"]["latency_ms"][b]
        assert s == pytest.approx(want)
    # the before/after table is printed with the same figure
    assert re.search(rf"test accuracy\s+│\s+{project.accuracy:.2f}%", r.output), r.output

    data = report["data"]["input"]
    assert (data["shape"], data["dtype"]) == ([3, SIZE, SIZE], "float32")
    assert data["normalize"] == "imagenet"
    assert data["mean"] == [0.485, 0.456, 0.406] and data["std"] == [0.229, 0.224, 0.225]
    assert data["input_size"] == [SIZE, SIZE]
    assert data["resize"] is None and data["crop"] is None
    assert data["classes"] == list(CLASSES)
    saved = json.loads((out / "model" / "model.json").read_text())
    assert saved["extra"]["input"] == data

    # the saved model rebuilds from the user's file and scores what the report says, on the
    # user's own tensors
    back = leanconv.load(out / "model", trust_code=True)
    after = correct(back, project.test_x, project.test_y)
    assert 100.0 * after / len(project.test_y) == pytest.approx(
        report["after"]["accuracy"], abs=1e-9
    )


@pytest.mark.parametrize(
    "name, said",
    [
        ("net.pth", None),
        ("ckpt.pth", "read the state dict under the checkpoint key 'state_dict'"),
        ("ddp.pth", "removed the prefix 'module.' from every key"),
    ],
)
def test_cli_reads_each_weights_layout(tmp_path, project, name, said):
    """Stopped cheaply right after the original is measured (--min-metric 101): what it scored
    is the user's own accuracy, whichever way the weights were saved."""
    out = tmp_path / "out"
    r = cli(*compress_args(project, out, "--weights", project.weights[name],
                           "--normalize", "imagenet", "--min-metric", "101", *FAST))  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.startswith(f"weights {name}:")]
    assert lines == ([f"weights {name}: {said}"] if said else [])
    assert f"      accuracy {project.accuracy:.2f}%" in r.output
    assert scored(r.output) == pytest.approx(project.accuracy, abs=0.005)
    assert "below --min-metric 101" in r.output
    # the inputs leanconv made from the folder have the statistics of the user's own tensors
    assert statistics(project.test_x) + " (normalize imagenet" in r.output
    assert "[2/6]" not in r.output
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_cli_without_the_training_normalisation_stops_before_planning(tmp_path, project):
    # the user's own code: the model on pixels / 255 (what no --normalize gives) is near chance
    assert project.raw_accuracy < CHANCE_BAR
    out = tmp_path / "out"
    r = cli(*compress_args(project, out, "--weights", project.weights["net.pth"], *FAST))
    assert r.exit_code == 2, r.output
    message = r.output[r.output.index("error: ") :]
    assert message.startswith(f"error: the original model scores {project.raw_accuracy:.2f}% ")
    assert scored(message) == pytest.approx(project.raw_accuracy, abs=0.005)
    assert "near chance (33.33% for 3 classes)" in message
    # the likely causes, with the numbers: the size, the inputs' statistics (the user's own
    # per-channel mean of the raw test images), the class order, the weights, and the flags
    assert f"the model gets 3x{SIZE}x{SIZE}" in message
    assert statistics(project.raw_test_x) + " (normalize none" in message
    assert "0=circle, 1=square, 2=triangle" in message
    assert "--weights" in message and "--normalize" in message and "--mean/--std" in message
    assert "[2/6]" not in r.output
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_cli_refuses_bad_settings(tmp_path, project):
    out = tmp_path / "out"
    good = ["--weights", project.weights["net.pth"], "--normalize", "imagenet", "--workers", "0"]
    r = cli(*compress_args(project, out, *good, "--methods", "nosuch"))
    assert r.exit_code == 2, r.output
    assert "'nosuch'" in r.output and all(m in r.output for m in METHODS)
    assert "[1/6]" not in r.output and "data:" not in r.output  # before any work
    r = cli(*compress_args(project, out, *good, "--speedup", "0"))
    assert r.exit_code == 2 and "--speedup 0: must be a positive factor" in r.output
    assert "[1/6]" not in r.output
    r = cli(*compress_args(project, out, *good, "--classes", "circle,square,cow"))
    assert r.exit_code == 2, r.output
    assert (
        "has classes ['triangle'] that --classes does not have and has no folder for " in r.output
    )
    assert "['cow'], which --classes names" in r.output
    assert "[1/6]" not in r.output
    r = cli("compress", project.spec, "--data", "digits", "--out", out, "--weights",
            project.weights["net.pth"], "--classes", "a,b")  # fmt: skip
    assert r.exit_code == 2 and "--classes: preprocessing applies to --data folder:PATH" in r.output
    whole = tmp_path / "whole.pth"
    torch.save(project.model(), whole)  # the whole pickled module, not its state dict
    r = cli(*compress_args(project, out, "--weights", whole, "--normalize", "imagenet",
                           "--workers", "0"))  # fmt: skip
    assert r.exit_code == 2 and "state_dict()" in r.output
    assert "[1/6]" not in r.output and "Traceback" not in r.output
    assert not out.exists() and not (tmp_path / "out.partial").exists()


GRAY_MODEL = """
from torch import nn


def build(num_classes=2):
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )
"""


def test_cli_grayscale_model(tmp_path):
    # a one-channel model trained on gray PNGs read the user's way (PIL "L", (x - 0.5) / 0.25)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:24, 0:24]
    files = []
    for split, n in (("train", 24), ("test", 10)):
        for label, name in enumerate(("across", "down")):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                wave = np.sin((yy if label else xx) * rng.uniform(0.5, 1.0) + rng.uniform(0, 6))
                pixels = np.clip(128 + 90 * wave + rng.normal(0, 20, wave.shape), 0, 255)
                path = tmp_path / "data" / split / name / f"{i}.png"
                Image.fromarray(pixels.astype(np.uint8)).convert("RGB").save(path)  # saved RGB
                files.append((split, path, label))
    (tmp_path / "gray.py").write_text(GRAY_MODEL)
    module = import_file(tmp_path / "gray.py", "user_gray_net_for_leanconv_tests")

    def read(split):
        chosen = [(p, label) for s, p, label in files if s == split]
        x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("L"))).float()[None]
                         for p, _ in chosen]) / 255  # fmt: skip
        return (x - 0.5) / 0.25, torch.tensor([label for _, label in chosen])

    torch.manual_seed(0)
    net = module.build()
    x, y = read("train")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_x, test_y = read("test")
    accuracy = 100.0 * correct(net, test_x, test_y) / len(test_y)
    assert accuracy > 80, "the user's own training did not learn the stripes"
    torch.save(net.state_dict(), tmp_path / "gray.pth")

    out = tmp_path / "out"
    args = ["compress", f"{tmp_path / 'gray.py'}:build", "--data", f"folder:{tmp_path / 'data'}",
            "--out", out, "--weights", tmp_path / "gray.pth", *FAST]  # fmt: skip
    r = cli(*args, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")  # the RGB default
    assert r.exit_code == 2 and "to have 1 channels, but got 3" in r.output, r.output
    assert "read the images as grayscale (--grayscale)" in r.output
    r = cli(*args, "--grayscale", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")
    assert r.exit_code == 2 and "--mean '0.5,0.5,0.5': give 1 number(s)" in r.output, r.output
    r = cli(*args, "--grayscale", "--mean", "0.5", "--std", "0.25")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["before"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert report["data"]["input"]["shape"] == [1, 24, 24]
    assert report["data"]["input"]["grayscale"] is True
    back = leanconv.load(out / "model", trust_code=True)
    assert 100.0 * correct(back, test_x, test_y) / len(test_y) == pytest.approx(
        report["after"]["accuracy"], abs=1e-9
    )


# ------------------------------------------------------------------------ Python, own loaders
class PngFolder(Dataset):
    """The user's own dataset: reads one PNG per sample, ImageNet-normalised."""

    def __init__(self, root: Path, split: str):
        self.files = split_files(root, split)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path, label = self.files[i]
        return read_png(path), label


def test_api_with_the_users_own_loaders(tmp_path, project):
    train = DataLoader(PngFolder(project.data, "train"), batch_size=16, shuffle=True)
    test = DataLoader(PngFolder(project.data, "test"), batch_size=16)
    model = project.model()
    out = tmp_path / "o"
    result = leanconv.compress(model, train, test, speedup=1.2, epochs=1, calibration=16,
                               plan_batch=8, batch_sizes=(1, 8), repeats=2, ratios=(0.15, 0.4),
                               methods=("svd",), algorithms=(), log=None, out=out)  # fmt: skip
    # the user's model is left as it was
    for k, v in model.state_dict().items():
        assert torch.equal(v, project.state[k]), k
    assert result.before.accuracy == pytest.approx(project.accuracy, abs=1e-9)
    assert result.before.metric == result.before.accuracy
    # the alias is planned under its canonical name
    planned = {c.method for cs in result.plan.candidates.values() for c in cs}
    assert planned == {"keep", "spatial_svd"}
    assert {c.method for c in result.plan.choices.values()} <= planned
    with torch.no_grad():
        logits = result.model(project.test_x[:5])
    assert logits.shape == (5, len(CLASSES))
    after = correct(result.model, project.test_x, project.test_y)
    assert result.after.accuracy == pytest.approx(100.0 * after / len(project.test_y), abs=1e-9)

    report = result.as_dict()
    assert report["metric"] == "accuracy"
    assert report["data"]["input"] == {"shape": [3, SIZE, SIZE], "dtype": "float32"}
    written = json.loads((out / "report.json").read_text())
    expected = json.loads(json.dumps(report))
    for key in ("before", "after", "metric"):
        assert written[key] == expected[key], key
    assert not (tmp_path / "o.partial").exists()


# ------------------------------------------------------------------------ segmentation
class SegNet(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.classifier = nn.Conv2d(32, classes, 1)

    def forward(self, x):
        return {"out": self.classifier(self.body(x))}


def segmentation_data(n: int, seed: int) -> TensorDataset:
    """Per-pixel classes from the input: the channel with the largest local (3x3) mean."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    target = F.avg_pool2d(x, 3, stride=1, padding=1).argmax(1)
    return TensorDataset(x, target)


def pixel_accuracy(model: nn.Module, loader) -> float:
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((model(x)["out"].argmax(1) == y).sum())
            total += y.numel()
    return right / total


def test_api_segmentation_with_own_metric_and_loss(tmp_path, monkeypatch):
    train = DataLoader(segmentation_data(192, 0), batch_size=32, shuffle=True)
    test = DataLoader(segmentation_data(64, 1), batch_size=32)
    torch.manual_seed(0)
    model = SegNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(4):
        for x, y in train:
            loss = F.cross_entropy(model(x)["out"], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    before = pixel_accuracy(model, test)
    assert before > 0.6  # learned (chance: 1/3)

    calls = []

    def seg_loss(outputs, targets):
        calls.append((type(outputs), tuple(outputs["out"].shape), targets.dtype))
        return F.cross_entropy(outputs["out"], targets)

    monkeypatch.chdir(tmp_path)
    result = leanconv.compress(model, train, test, metric=pixel_accuracy, loss=seg_loss,
                               macs_ratio=0.6, epochs=1, calibration=16, plan_batch=8,
                               batch_sizes=(1, 8), repeats=2, ratios=(0.15, 0.4), log=None)  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # out=None: nothing written
    report = result.as_dict()
    assert report["metric"] == "pixel_accuracy"
    assert result.before.metric == before
    assert result.before.accuracy is None and "accuracy_drop" not in report
    assert result.after.metric == pytest.approx(pixel_accuracy(result.model, test), abs=1e-9)
    assert result.after.macs < result.before.macs
    # the user's loss was used for every fine-tuning batch, on the model's dict and the maps
    assert len(calls) == len(train)
    assert all(c == (dict, (32, 3, 16, 16), torch.int64) for c in calls)
    with torch.no_grad():
        assert result.model(torch.randn(2, 3, 16, 16))["out"].shape == (2, 3, 16, 16)


# ------------------------------------------------------------------------ refusals
def test_api_refusals():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 2))  # fmt: skip
    batches = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))] * 2
    once = ((x, y) for x, y in batches)
    with pytest.raises(LeanconvError, match="read only once"):
        leanconv.compress(model, once, batches, log=None)
    with pytest.raises(LeanconvError, match="unknown option.*speeed"):
        leanconv.compress(model, batches, batches, speeed=2, log=None)
    with pytest.raises(LeanconvError, match="unknown decomposition method 'nosuch'") as info:
        leanconv.compress(model, batches, batches, methods=("nosuch",), log=None)
    assert all(m in str(info.value) for m in METHODS)
