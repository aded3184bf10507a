"""``leanconv.compress(model, train, test, ...)``: the Python door to the pipeline.

It takes what a PyTorch user already has — an ``nn.Module``, their ``DataLoader``s (or datasets,
or lists of batches) with their own transforms, a metric — and runs the same pipeline as
``leanconv compress`` (:func:`.pipeline.compress`): nothing is resized or re-normalised.

Options (``**options``) are the settings of :class:`.pipeline.CompressConfig` (``methods``,
``algorithms``, ``ratios``, ``plan_batch``, ``batch_sizes``, ``calibration``, ``prefer_capacity``,
``repeats``, ``search_epochs``, ``max_layer_error``, ``min_metric``, ``seed``, ``deployment``), of
:class:`.finetune.FinetuneConfig` (``lr``, ``batch_size``, ``validation``, ``patience``,
``bn_samples``, ``spike_clip``, ``temperature``, ``alpha``, ``warmup_epochs``, ``weight_decay``,
``momentum``, ``augment``), and ``force``, ``resume``, ``log`` (a function taking one line, or
``None`` for silence) and
``factory`` (``"package.module:function"`` or ``"file.py:function"``, with ``factory_kwargs``:
recorded in the saved model so that ``leanconv.load(out / "model")`` can rebuild the
architecture; without it, ``leanconv.load(path, factory=build)``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..data.batches import check_source, first_inputs
from ..data.bundle import DataBundle
from ..errors import LeanconvError
from .evaluate import resolve_metric, to_model
from .finetune import FinetuneConfig
from .outputs import logits_of
from .pipeline import CompressConfig, CompressResult
from .pipeline import compress as run_pipeline
from .planning import target_from

_CONFIG = {f.name for f in dataclasses.fields(CompressConfig)} - {
    "finetune", "target", "max_drop", "metric", "loss",
}  # fmt: skip
_FINETUNE = {f.name for f in dataclasses.fields(FinetuneConfig)} - {
    "epochs", "checkpoint", "resume", "progress",
}  # fmt: skip
_RUN = {"force", "resume", "log", "factory", "factory_kwargs"}


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """The number of class logits ``model`` returns for the inputs ``x``."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return int(logits_of(model(to_model(x, model))).shape[1])
    finally:
        model.train(was)


def compress(
    model: nn.Module,
    train,
    test,
    *,
    speedup: float | None = None,
    macs_ratio: float | None = None,
    max_drop: float | None = None,
    metric="accuracy",
    loss=None,
    epochs: int = 5,
    out: str | Path | None = None,
    **options,
) -> CompressResult:
    """Compress a trained ``model`` and return the :class:`CompressResult` (``result.model`` is
    the compressed model, ``result.as_dict()`` the report).

    ``train``, ``test``: a ``DataLoader``, a ``Dataset`` or a re-iterable of ``(inputs, targets)``
    batches. ``metric``: ``"accuracy"`` (top-1 of class logits), ``"top5"``, or a callable
    ``metric(model, loader) -> float`` (higher is better). ``loss(outputs, targets)``: added to
    the distillation while fine-tuning (default for class logits: cross-entropy). Target:
    ``speedup`` (measured), ``macs_ratio``, or ``max_drop`` alone; none: ``speedup=2``.
    ``out``: a directory to write the report, the model and ONNX into (nothing is written
    without it). Other settings: see the module docstring.
    """
    if not isinstance(model, nn.Module):
        raise LeanconvError(f"compress() needs an nn.Module, got {type(model).__name__}")
    check_source(train, "train")
    check_source(test, "test")
    unknown = sorted(set(options) - _CONFIG - _FINETUNE - _RUN)
    if unknown:
        raise LeanconvError(
            f"compress(): unknown option(s) {', '.join(unknown)}; known: "
            + ", ".join(sorted(_CONFIG | _FINETUNE | _RUN))
        )
    finetune = FinetuneConfig(
        epochs=epochs,
        augment=False,
        seed=options.get("seed", 0),
        **{k: v for k, v in options.items() if k in _FINETUNE - {"seed"}},
    )
    if speedup is not None and macs_ratio is not None:
        raise LeanconvError("compress(): give speedup or macs_ratio, not both")
    try:
        target, allowed_drop = target_from(speedup, macs_ratio, max_drop)
    except ValueError as e:
        raise LeanconvError(f"compress(): {e}") from None
    config = CompressConfig(
        target=target, max_drop=allowed_drop, metric=metric, loss=loss, finetune=finetune,
        **{k: v for k, v in options.items() if k in _CONFIG},
    )  # fmt: skip
    judged = resolve_metric(metric)
    x = first_inputs(test, 2, where="test data")  # read once: a loader may start workers
    classes = _num_classes(model, x) if judged.logits else None
    data = DataBundle("user data", train, test, classes, tuple(x.shape[1:]))
    base = {}
    if options.get("factory"):
        base = {"factory": str(options["factory"]), "kwargs": options.get("factory_kwargs") or {}}
    return run_pipeline(model, data, config, out, base, force=options.get("force", False),
                        resume=options.get("resume", False),
                        log=options.get("log", print))  # fmt: skip
