"""The built-in default run (``leanconv demo``, ``make demo``).

Trains a reference CNN on scikit-learn's handwritten digits (real data, shipped with the
package), then compresses it with :func:`leanconv.compress.pipeline.compress` and prints a
before/after table: test accuracy, parameters, MACs, measured latency at batch 1 and 64, speedup.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from . import zoo
from .compress.finetune import FinetuneConfig, finetune
from .compress.pipeline import CompressConfig, CompressResult, compress
from .compress.planning import Speedup
from .data import digits
from .errors import OutputExistsError

MODEL = "resnet18_cifar"
WIDTH = 0.5
#: Epochs of the reference training and of the fine-tuning: with them the demo finishes in
#: about 4 minutes on the 2-core test machine (236 s measured; 6 fine-tuning epochs cost 63 s of
#: it, 10 would cost 105 s; on a saved ResNet-18 plan 6 and 10 epochs ended 98.67-99.33 % for
#: the seeds tried, docs/benchmarks.md, "Fine-tuning length").
TRAIN_EPOCHS = 5
FINETUNE_EPOCHS = 6


def run_demo(
    out: str | Path = "demo-out",
    force: bool = False,
    train_epochs: int = TRAIN_EPOCHS,
    finetune_epochs: int = FINETUNE_EPOCHS,
    speedup: float = 2.5,
    seed: int = 0,
    log=print,
) -> CompressResult:
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"output directory {str(out)!r} exists; pass --force")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    data = digits(seed=seed)
    log(f"data: {data.describe()}")
    model = zoo.create(MODEL, num_classes=data.num_classes, width=WIDTH)
    log(f"[0/6] training the reference {MODEL} (width {WIDTH}) for {train_epochs} epochs")
    train = FinetuneConfig(epochs=train_epochs, lr=0.05, warmup_epochs=1, seed=seed)
    finetune(model, data, None, train, log=lambda m: log("      " + m))
    config = CompressConfig(
        target=Speedup(speedup),
        ratios=(0.05, 0.1, 0.2, 0.35, 0.6),
        calibration=64,
        repeats=8,
        finetune=FinetuneConfig(epochs=finetune_epochs, lr=0.01, seed=seed),
        seed=seed,
    )
    base = {"zoo": MODEL, "kwargs": {"num_classes": data.num_classes, "width": WIDTH}}
    result = compress(model, data, config, out, base, force=force, log=log)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(out / "reference.safetensors"))  # fmt: skip
    log(f"done in {time.perf_counter() - t0:.0f} s; artefacts in {out}/")
    return result
