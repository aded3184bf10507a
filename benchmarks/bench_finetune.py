"""Fine-tuning settings compared on one plan: same reference weights, same decomposition.

Trains the reference model as ``bench_compress.py`` does (same seed, so the same weights; saved
to ``--reference``, by default in the temporary directory, and reused), decomposes it by the plan
a compress run saved (``DIR/plan.json``), and fine-tunes a fresh copy with distillation once per
setting, printing the test accuracy of every epoch and of the weights kept. The test split of
the digits has 450 images: one image is 0.22 points, so compare settings over several seeds.

    .venv/bin/python benchmarks/bench_finetune.py DIR --model resnet18_cifar --train-lr 0.05 \\
        --train-epochs 6 --settings "epochs=6" "epochs=10" "epochs=6,seed=1" "epochs=6,lr=0.005"

A setting is ``name=value`` pairs of :class:`leanconv.compress.finetune.FinetuneConfig` fields,
comma-separated (defaults: lr 0.01 as in ``bench_compress.py``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from leanconv import zoo
from leanconv.bench.allocator import retain_freed_memory
from leanconv.compress.evaluate import accuracy, batches
from leanconv.compress.finetune import FinetuneConfig, finetune
from leanconv.compress.planning import Plan
from leanconv.compress.verify import decompose_model
from leanconv.data import digits


def _setting(text: str) -> dict:
    names = {f.name for f in fields(FinetuneConfig)}
    out: dict = {"lr": 0.01}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in names:
            raise SystemExit(f"unknown FinetuneConfig field {key!r} in setting {text!r}")
        out[key] = float(value) if "." in value or "e" in value else int(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "out", type=Path, help="a compress output (or .partial) directory with plan.json"
    )
    p.add_argument("--model", default="resnet18_cifar")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--train-lr", type=float, default=0.05)
    p.add_argument("--train-epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reference", type=Path, help="reference weights (trained and saved if absent)")
    p.add_argument("--settings", nargs="+", default=["epochs=6"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    torch.manual_seed(args.seed)
    data = digits(seed=args.seed)
    model = zoo.create(args.model, num_classes=10, width=args.width)
    name = f"leanconv-reference-{args.model}-w{args.width:g}-seed{args.seed}.safetensors"
    ref = args.reference or Path(tempfile.gettempdir()) / name
    if ref.exists():
        model.load_state_dict(load_file(ref))
    else:
        train = FinetuneConfig(epochs=args.train_epochs, lr=args.train_lr, warmup_epochs=1,
                               progress=False)  # fmt: skip
        finetune(model, data, None, train, log=None)
        save_file(model.state_dict(), str(ref))
    model.eval()
    print(f"reference {args.model}: test accuracy {accuracy(model, data.test):.2f}% ({ref})")
    rewrites = Plan.from_json((args.out / "plan.json").read_text()).rewrites()
    torch.manual_seed(args.seed)  # the calibration batch compress draws
    calibration = next(batches(data.train, 64))[0]
    for text in args.settings:
        compressed, _ = decompose_model(model, rewrites, calibration, max_error=0.9)
        t0 = time.perf_counter()
        cfg = FinetuneConfig(progress=False, **_setting(text))
        result = finetune(compressed, data, model, cfg, log=None)
        epochs = " ".join(f"{e.metric:.2f}" for e in result.history)
        print(f"{text:32s} kept {accuracy(compressed.eval(), data.test):.2f}%  "
              f"epochs [{epochs}]  {time.perf_counter() - t0:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
