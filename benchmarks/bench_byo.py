"""Bring your own model: the practitioner's path through ``leanconv compress`` on a model file and
an image folder that this script writes itself (not the zoo, not the digits).

In a temporary folder it writes ``net.py`` (a CNN as a user writes one: stages in an
``nn.ModuleDict``, ``F.relu`` and a residual sum in ``forward``, a grouped 5x5 convolution, 3x3
convolutions of 32-128 channels, global average pool and a Linear layer; factory
``build(num_classes=...)``), an RGB PNG folder at 64x64 (``data/train/<class>``,
``data/test/<class>``: shapes of class-dependent form and hue on noisy, shaded backgrounds),
trains the model with plain PyTorch (PIL -> /255 -> ImageNet mean/std), evaluates it, saves
``net.pth`` (``state_dict()``) and ``ddp.ckpt`` (``{"epoch", "state_dict": {"module." + k}}``),
then runs, as a separate process and timed,

    leanconv compress net.py:build --weights net.pth --data folder:DATA --normalize imagenet
        --speedup 2 --epochs 5 --out OUT

and prints the user's accuracy against leanconv's, the accuracy after, the measured speedups, the
predicted one, the MACs ratio, wall time, peak memory and the machine, and whether the issue's
targets are met: speedup at batch 64 within 2.0-2.5x, drop at most 1 point, the original's
accuracy as the user measured it.

    .venv/bin/python benchmarks/bench_byo.py
    .venv/bin/python benchmarks/bench_byo.py --weights-file ddp --keep /tmp/byo
    .venv/bin/python benchmarks/bench_byo.py --extra "--batch 1 --validation 0.1"

``--extra`` takes one string (shell-split); a single flag needs ``--extra=--most-accurate``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

NET_PY = '''\
"""A small CNN for 64x64 RGB images, written as a user would."""

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stages = nn.ModuleDict(
            {
                "stem": conv_bn(3, 32),
                "stem2": conv_bn(32, 32),
                "down1": conv_bn(32, 64, stride=2),
                "grouped": conv_bn(64, 64, k=5, groups=4),
                "res_a": conv_bn(64, 64),
                "res_b": conv_bn(64, 64),
                "down2": conv_bn(64, 128, stride=2),
                "top": conv_bn(128, 128),
            }
        )
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        s = self.stages
        x = F.relu(s["stem"](x))
        x = F.relu(s["stem2"](x))
        x = F.relu(s["down1"](x))
        x = F.relu(s["grouped"](x))
        y = F.relu(s["res_a"](x))
        x = F.relu(x + s["res_b"](y))
        x = F.relu(s["down2"](x))
        x = F.relu(s["top"](x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))


def build(num_classes=10):
    return Net(num_classes=num_classes)
'''

CLASSES = ("disc", "square", "triangle", "cross", "ring", "bar")
SIZE = 64
MEAN = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
STD = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _polygon(cx, cy, r, n, angle):
    return [(cx + r * math.cos(angle + 2 * math.pi * i / n),
             cy + r * math.sin(angle + 2 * math.pi * i / n)) for i in range(n)]  # fmt: skip


def _mask(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A binary mask of one shape of ``kind``, random size, place and angle."""
    img = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(img)
    r = rng.uniform(10, 18)
    cx, cy = rng.uniform(r + 2, SIZE - r - 2, size=2)
    a = rng.uniform(0, 2 * math.pi)
    if kind == "disc":
        rx, ry = r, r * rng.uniform(0.75, 1.0)
        d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    elif kind == "square":
        d.polygon(_polygon(cx, cy, r * 1.1, 4, a), fill=255)
    elif kind == "triangle":
        d.polygon(_polygon(cx, cy, r * 1.2, 3, a), fill=255)
    elif kind == "cross":
        w = r * 0.35
        for t in (a, a + math.pi / 2):
            dx, dy = math.cos(t), math.sin(t)
            px, py = -dy * w, dx * w
            ends = [(cx - dx * r, cy - dy * r), (cx + dx * r, cy + dy * r)]
            d.polygon([(ends[0][0] + px, ends[0][1] + py), (ends[1][0] + px, ends[1][1] + py),
                       (ends[1][0] - px, ends[1][1] - py), (ends[0][0] - px, ends[0][1] - py)],
                      fill=255)  # fmt: skip
    elif kind == "ring":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        q = r * rng.uniform(0.45, 0.6)
        d.ellipse((cx - q, cy - q, cx + q, cy + q), fill=0)
    else:  # "bar": a long thin rectangle
        dx, dy = math.cos(a) * r * 1.3, math.sin(a) * r * 1.3
        px, py = -math.sin(a) * r * 0.3, math.cos(a) * r * 0.3
        corners = [(cx - dx + px, cy - dy + py), (cx + dx + px, cy + dy + py),
                   (cx + dx - px, cy + dy - py), (cx - dx - px, cy - dy - py)]  # fmt: skip
        d.polygon(corners, fill=255)
    return np.asarray(img, dtype=np.float32) / 255.0


def make_image(label: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """An ``H x W x 3`` uint8 image: a shaded, noisy background, a distractor blob, and the
    class's shape in a hue that leans towards the class's own (but overlaps the others')."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    base = _hsv(rng.uniform(), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8))
    slope = rng.normal(0, 0.15, size=(2, 3))
    bg = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
    # a faint texture: a random sinusoidal grating
    f, t = rng.uniform(3, 10), rng.uniform(0, math.pi)
    bg += 0.04 * np.sin(2 * math.pi * f * (xx * math.cos(t) + yy * math.sin(t)))[..., None]
    # a distractor: a small blob of any colour
    blob = Image.new("L", (SIZE, SIZE), 0)
    bx, by, br = *rng.uniform(4, SIZE - 4, size=2), rng.uniform(3, 6)
    ImageDraw.Draw(blob).ellipse((bx - br, by - br, bx + br, by + br), fill=255)
    m = np.asarray(blob, dtype=np.float32)[..., None] / 255.0
    bg = bg * (1 - m) + _hsv(rng.uniform(), rng.uniform(0.3, 1), rng.uniform(0.3, 1)) * m
    hue = (label / num_classes + rng.normal(0, 0.06)) % 1.0
    colour = _hsv(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
    m = _mask(CLASSES[label], rng)[..., None]
    img = bg * (1 - m) + colour * m + rng.normal(0, 0.05, size=(SIZE, SIZE, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_images(root: Path, classes: int, train: int, test: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for label in range(classes):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(make_image(label, classes, rng)).save(folder / f"{i:04d}.png")


# --- the user's own training code: nothing from leanconv below ---


def read_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every image of ``root/<class>/*.png``, sorted, as ImageNet-normalised tensors."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    xs, ys = [], []
    for label, name in enumerate(names):
        for path in sorted((root / name).glob("*.png")):
            with Image.open(path) as img:
                a = np.asarray(img.convert("RGB"), dtype=np.uint8)
            x = torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0
            xs.append((x - MEAN) / STD)
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys), names


def train_model(model, x, y, epochs: int, lr: float, seed: int, log=print) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total = correct = 0
        loss_sum = 0.0
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            xb, yb = x[idx], y[idx]
            flip = torch.rand(len(xb), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            out = model(xb)
            loss = torch.nn.functional.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(xb)
            correct += (out.argmax(1) == yb).sum().item()
            total += len(xb)
        log(f"  epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.3f}, "
            f"train accuracy {100 * correct / total:.1f}%")  # fmt: skip


@torch.no_grad()
def evaluate(model, x, y) -> tuple[int, int]:
    model.eval()
    correct = 0
    for i in range(0, len(x), 64):
        correct += (model(x[i : i + 64]).argmax(1) == y[i : i + 64]).sum().item()
    return correct, len(x)


# --- the run ---


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def leanconv_command() -> str:
    exe = Path(sys.executable).parent / "leanconv"
    return str(exe) if exe.exists() else (shutil.which("leanconv") or str(exe))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--speedup", type=float, default=2.0, help="leanconv's --speedup")
    p.add_argument("--epochs", type=int, default=5, help="leanconv's fine-tuning --epochs")
    p.add_argument("--train-epochs", type=int, default=12, help="the user's training epochs")
    p.add_argument("--train-lr", type=float, default=3e-3)
    p.add_argument("--classes", type=int, default=5, choices=range(2, len(CLASSES) + 1),
                   metavar=f"2..{len(CLASSES)}")  # fmt: skip
    p.add_argument("--images-per-class", type=int, default=200, help="training images per class")
    p.add_argument("--test-per-class", type=int, default=40, help="test images per class")
    p.add_argument(
        "--weights-file",
        choices=("pth", "ddp"),
        default="pth",
        help="net.pth (state_dict) or ddp.ckpt (checkpoint, 'module.' keys)",
    )
    p.add_argument("--keep", type=Path, help="work in this folder and keep it")
    p.add_argument("--extra", default="", help="more leanconv compress arguments (one string)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)

    if args.keep:
        work = args.keep.resolve()
        work.mkdir(parents=True, exist_ok=True)
        for stale in ("data", "out", "out.partial"):
            shutil.rmtree(work / stale, ignore_errors=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-byo-"))
    data, out = work / "data", work / "out"
    try:
        (work / "net.py").write_text(NET_PY)
        t0 = time.perf_counter()
        write_images(data, args.classes, args.images_per_class, args.test_per_class, args.seed)
        print(f"wrote {args.classes} classes x ({args.images_per_class} train + "
              f"{args.test_per_class} test) PNGs at {SIZE}x{SIZE} to {data} "
              f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip

        # the user's side: import their own file, train, evaluate, save
        sys.path.insert(0, str(work))
        import net as user_net  # the file written above

        sys.path.pop(0)
        model = user_net.build(num_classes=args.classes)
        x_tr, y_tr, names = read_folder(data / "train")
        x_te, y_te, test_names = read_folder(data / "test")
        assert names == test_names, (names, test_names)
        t0 = time.perf_counter()
        print(f"training net.py:build on {len(x_tr)} images, {args.train_epochs} epochs")
        train_model(model, x_tr, y_tr, args.train_epochs, args.train_lr, args.seed)
        correct, total = evaluate(model, x_te, y_te)
        user_acc = 100.0 * correct / total
        train_s = time.perf_counter() - t0
        print(f"user's test accuracy: {user_acc:.2f}% ({correct}/{total}), trained in "
              f"{train_s:.0f} s")  # fmt: skip
        state = model.state_dict()
        torch.save(state, work / "net.pth")
        torch.save({"epoch": args.train_epochs, "state_dict": {"module." + k: v for k, v in
                    state.items()}}, work / "ddp.ckpt")  # fmt: skip
        weights = work / ("net.pth" if args.weights_file == "pth" else "ddp.ckpt")

        # leanconv's side: the command line, in its own process
        cmd = [leanconv_command(), "compress", f"{work / 'net.py'}:build",
               "--weights", str(weights), "--data", f"folder:{data}", "--normalize", "imagenet",
               "--speedup", f"{args.speedup:g}", "--epochs", str(args.epochs),
               "--out", str(out), *shlex.split(args.extra)]  # fmt: skip
        print("\n$ " + shlex.join(cmd), flush=True)
        rss_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=work).returncode
        wall = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        if rc != 0:
            print(f"\nleanconv compress failed (exit status {rc}) after {wall:.0f} s")
            sys.exit(rc)
        r = json.loads((out / "report.json").read_text())

        b, a = r["before"], r["after"]
        lean_acc = b["accuracy"]
        match = lean_acc == user_acc
        drop = r["accuracy_drop"]
        by = {int(k): v for k, v in r["speedup_by_batch"].items()}
        sp64 = by.get(64)
        measured = r.get("measured_with") or {}
        print("\n=== bring your own model: summary ===")
        print(f"model: net.py:build ({sum(w.numel() for w in model.parameters()):,} parameters), "
              f"{args.classes} classes, {total} test images, weights {weights.name}")  # fmt: skip
        print(f"user's own accuracy:          {user_acc:.2f}%")
        print(
            f"leanconv's original accuracy: {lean_acc:.2f}% "
            f"({'matches exactly' if match else f'DIFFERS by {lean_acc - user_acc:+.4f}'})"
        )
        print(f"accuracy after:               {a['accuracy']:.2f}% (drop {drop:+.2f} points)")
        for bs in sorted(by):
            print(
                f"measured speedup at batch {bs:>2}: {by[bs]:.2f}x "
                f"({b['latency_ms'][str(bs)]:.2f} ms -> {a['latency_ms'][str(bs)]:.2f} ms)"
            )
        over = r.get("speedup_over_baseline") or {}
        if over:
            pairs = sorted((int(k), v) for k, v in over.items())
            print("over the original deployed alike: "
                  + ", ".join(f"batch {k} {v:.2f}x" for k, v in pairs))  # fmt: skip
        print(f"predicted speedup: {r['predicted_speedup']:.2f}x")
        print(f"MACs ratio (after / before): {r['macs_ratio']:.3f} "
              f"({b['macs'] / 1e6:.1f}M -> {a['macs'] / 1e6:.1f}M, "
              f"{1 / r['macs_ratio']:.2f}x fewer)")  # fmt: skip
        print(
            f"leanconv wall time: {wall:.0f} s (report's own: {r.get('seconds', 0):.0f} s); "
            f"peak RSS of the largest child process: {rss / 1024:.0f} MiB"
            + (" (not above an earlier child's)" if rss == rss_before and rss else "")
        )
        print(f"machine: {cpu_model()}, {cpus()} CPUs, leanconv measured with "
              f"{measured.get('threads', '?')} threads ({measured.get('allocator', '?')}); "
              f"torch {torch.__version__}, Python {platform.python_version()}")  # fmt: skip
        for note in r.get("notes") or []:
            print(f"note: {note}")
        ok_speed = sp64 is not None and 2.0 <= sp64 <= 2.5
        ok_drop = drop <= 1.0
        print("targets:")
        print(
            f"  speedup at batch 64 within 2.0-2.5x: {'yes' if ok_speed else 'NO'} ({sp64:.2f}x)"
            if sp64 is not None
            else "  speedup at batch 64: not measured"
        )
        print(f"  accuracy drop at most 1 point: {'yes' if ok_drop else 'NO'} ({drop:+.2f})")
        print(f"  original accuracy matches the user's: {'yes' if match else 'NO'}")
        print(f"total {time.perf_counter() - t_start:.0f} s; "
              + (f"kept {work}" if args.keep else "temporary folder removed"))  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
