"""Re-time a compressed model saved by ``leanconv compress`` against its original, several times.

One measurement of a ~20 ms model on a shared VM can swing by 10-20 %; this repeats the
pipeline's own before/after harness (:func:`leanconv.compress.measure.measure_formats`: both
memory layouts, interleaved medians) ``--rounds`` times and prints each round's ratios and their
median: the speedup over the original as given, over the original in the same deployment form,
and both divided by the MACs reduction. Inputs are the test images of ``--data`` (as the pipeline
times them).

    .venv/bin/python benchmarks/bench_saved.py DIR [--rounds 5] [--batch 64]

DIR is a compress output directory (``report.json`` and ``model/``); the original is rebuilt
from the saved description with fresh weights (latency does not depend on their values): a zoo
model by name, a user's model by the factory recorded in ``model.json`` (its file found relative
to the model directory, as ``leanconv.load`` finds it). Running the benchmark on a directory runs
that factory's code: use it on your own runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import leanconv
from leanconv.bench.allocator import describe, retain_freed_memory
from leanconv.compress.deploy import Deployment
from leanconv.compress.evaluate import batches
from leanconv.compress.measure import ModelFigures, measure_formats
from leanconv.data import load_data
from leanconv.loading import load_model


def _factory_path(factory: str, model_dir: Path) -> str:
    """A recorded ``file.py:fn`` factory with its file resolved against the model directory
    (where ``leanconv compress`` records it relative to); a module path as it is."""
    file, _, fn = factory.rpartition(":")
    if not file.endswith(".py") or Path(file).is_absolute():
        return factory
    return f"{(model_dir / file).resolve()}:{fn}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default="digits", help="the data whose test images are timed")
    p.add_argument("--factory", help="file.py:fn building the original, where none was recorded")
    p.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's allocator as it is (page faults per call)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.default_allocator:
        retain_freed_memory()  # no page faults per forward pass (bench/allocator.py)
    report = json.loads((args.out / "report.json").read_text())
    meta = json.loads((args.out / "model" / "model.json").read_text())
    base = meta["base"]
    if args.factory:
        base = {"factory": args.factory, "kwargs": base.get("kwargs", {})}
    if not base.get("zoo") and not base.get("factory"):
        raise SystemExit(f"{args.out}: the run recorded no factory of the original (a model "
                         "passed to leanconv.compress as an object); give --factory "
                         "file.py:fn")  # fmt: skip
    source = base.get("zoo") or _factory_path(base["factory"], args.out / "model")
    build = lambda: load_model(source, **base.get("kwargs", {})).module  # noqa: E731
    original = build().eval()
    compressed = leanconv.load(args.out / "model", factory=build)
    data = load_data(args.data)
    images = next(batches(data.test, args.batch))[0]
    shape = tuple(data.input_shape)
    macs = report["before"]["macs"] / report["after"]["macs"]
    models = {"before": original, "baseline": Deployment().apply(original), "after": compressed}
    rows = []
    print(f"MACs reduction {macs:.2f}x; batch {args.batch}, {args.threads} threads, "
          f"allocator: {describe()}")  # fmt: skip
    print("round  before ms  baseline ms  after ms  speedup  /MACs  over baseline  /MACs")
    for r in range(args.rounds):
        figs = {k: ModelFigures(0, 0, 0) for k in models}
        measure_formats(models, figs, shape, (args.batch,), args.repeats, images)
        ms = {k: f.latency_ms[args.batch] for k, f in figs.items()}
        s, o = ms["before"] / ms["after"], ms["baseline"] / ms["after"]
        rows.append((s, o))
        print(f"{r + 1:>5}  {ms['before']:9.2f}  {ms['baseline']:11.2f}  {ms['after']:8.2f}  "
              f"{s:6.2f}x  {s / macs:5.2f}  {o:12.2f}x  {o / macs:5.2f}")  # fmt: skip
    s, o = (statistics.median(c) for c in zip(*rows, strict=True))
    print(f"median of {args.rounds}: speedup {s:.2f}x ({s / macs:.2f} of the MACs reduction), "
          f"over the original deployed alike {o:.2f}x ({o / macs:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
