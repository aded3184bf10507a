"""Fine-tuning with knowledge distillation (Hinton et al. 2015), resumable and distributable.

Loss: ``alpha * T^2 * KL(softmax(s / T) || softmax(t / T)) + (1 - alpha) * CE(s, y)`` where ``s``
and ``t`` are the student's and the teacher's logits (the teacher is the original model). Without a
teacher the loss is the cross-entropy alone.

- SGD with Nesterov momentum and a cosine learning rate (after an optional linear warm-up)
  computed from the global step, so a resumed run needs no scheduler state.
- The data order of epoch ``e`` is a permutation drawn from ``seed + e``; a run resumed from the
  checkpoint of epoch ``e`` therefore sees exactly the batches an uninterrupted run would, and ends
  at the same weights.
- A checkpoint (model, optimiser, history) is written atomically after every epoch; an
  interruption leaves the previous one intact.
- The test split is never used for a choice: with ``validation`` (a fraction of the training
  images held out, fixed by ``seed``) the weights of the epoch with the best validation accuracy
  are kept and ``patience`` stops after that many epochs without improvement; without it the last
  epoch's weights are kept (the cosine schedule ends at a learning rate near zero). Test accuracy
  is printed every epoch for monitoring only.
- Mixed precision (bfloat16 autocast) on CUDA; float32 on the CPU.
- Under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in
  DistributedDataParallel (gloo on CPU, nccl on GPU) and each rank takes every ``world``-th sample
  of the epoch's permutation; rank 0 evaluates, prints and writes checkpoints.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data.bundle import DataBundle
from ..data.transforms import Augment
from ..errors import LeanconvError
from .evaluate import accuracy, batches, check_classes


@dataclass
class FinetuneConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.7
    patience: int | None = None  # needs validation > 0
    validation: float = 0.0  # fraction of the training images held out to choose the epoch
    warmup_epochs: float = 0.0  # linear learning-rate warm-up before the cosine decay
    seed: int = 0
    augment: bool = True
    amp: bool | None = None  # None: bfloat16 autocast on CUDA only
    checkpoint: str | Path | None = None  # file written after every epoch
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"finetune: {name}={getattr(self, name)} must be at least 1")
        if self.lr <= 0:
            raise ValueError(f"finetune: lr={self.lr} must be positive")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"finetune: alpha={self.alpha} must be in [0, 1]")
        if self.temperature <= 0:
            raise ValueError(f"finetune: temperature={self.temperature} must be positive")
        if not 0 <= self.validation < 1:
            raise ValueError(f"finetune: validation={self.validation} must be in [0, 1)")
        if self.patience is not None and self.validation == 0:
            raise ValueError(
                "finetune: patience (early stopping) needs a validation split: set validation, "
                "for example 0.1 (the test split is never used for choices)"
            )


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    accuracy: float
    lr: float
    seconds: float
    images_per_second: float
    validation_accuracy: float | None = None


@dataclass
class FinetuneResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_accuracy: float = 0.0  # test accuracy of the epoch kept
    best_epoch: int = -1  # the epoch kept: best on validation, else the last
    stopped_early: bool = False
    resumed_from: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _best_validation(result: FinetuneResult) -> float:
    return result.history[result.best_epoch - 1].validation_accuracy


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    ce = F.cross_entropy(student, labels)
    if teacher is None or alpha == 0:
        return ce
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
        reduction="batchmean", log_target=True,
    )  # fmt: skip
    return alpha * t * t * kl + (1 - alpha) * ce


def _cosine(base: float, step: int, total: int, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(t, 1.0)))


def _save_atomic(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LeanconvError(f"checkpoint {str(path)!r} cannot be read: {exc}") from None


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def finetune(
    model: nn.Module,
    data: DataBundle,
    teacher: nn.Module | None = None,
    config: FinetuneConfig | None = None,
    log: Callable[[str], None] | None = print,
) -> FinetuneResult:
    """Train ``model`` in place on ``data.train``, distilling from ``teacher``; returns the history.

    The model ends with the weights of the best epoch on the validation images (``validation``),
    else of the last epoch; the test split is only reported.
    """
    cfg = config or FinetuneConfig()
    rank, world = _rank_world()
    device = next(model.parameters()).device
    check_classes(model, data.test, data.num_classes)
    train_set, val_set = data.train, None
    if cfg.validation > 0:
        split = data.holdout(cfg.validation, cfg.seed)
        train_set, val_set = split.train, split.test
    if teacher is not None:  # run under no_grad below; its parameters are left as they are
        teacher = teacher.to(device).eval()
    train_model: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    n_train = len(train_set)
    per_rank = math.ceil(n_train / world)
    steps_per_epoch = math.ceil(per_rank / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    augment = Augment(pad=2) if cfg.augment else None

    result = FinetuneResult()
    best_state = copy.deepcopy(model.state_dict())
    start_epoch = 0
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    if cfg.resume:
        if ckpt is None or not ckpt.exists():
            raise LeanconvError(f"--resume: no checkpoint at {str(ckpt)!r}")
        state = _load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best_state = state["best_model"]
        start_epoch = int(state["epoch"]) + 1
        result.history = [EpochRecord(**r) for r in state["history"]]
        result.best_accuracy = float(state["best_accuracy"])
        result.best_epoch = int(state["best_epoch"])
        result.resumed_from = start_epoch - 1
        if log and rank == 0:
            log(f"resumed from the checkpoint of epoch {start_epoch} in {ckpt}")
    progress = _Progress(cfg.progress and rank == 0 and sys.stderr.isatty(), steps_per_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout and other global draws
        order = torch.randperm(n_train, generator=g)[rank::world]
        t0, seen, total_loss = time.perf_counter(), 0, 0.0
        progress.start(epoch, cfg.epochs)
        for i, (x, y) in enumerate(batches(train_set, cfg.batch_size, order)):
            step = epoch * steps_per_epoch + i
            lr = _cosine(cfg.lr, step, total_steps, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if augment is not None:
                x = augment(x, g)
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = train_model(x)
                with torch.no_grad():
                    t_out = teacher(x) if teacher is not None else None
                loss = distillation_loss(out.float(), None if t_out is None else t_out.float(),
                                         y, cfg.temperature, cfg.alpha)  # fmt: skip
            if not torch.isfinite(loss):
                raise LeanconvError(
                    f"fine-tuning diverged at epoch {epoch + 1}, step {i}: loss {loss}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
            total_loss += loss.item() * len(y)
            progress.advance(seen / (time.perf_counter() - t0), loss.item())
        progress.stop()
        seconds = time.perf_counter() - t0
        acc = accuracy(model, data.test) if rank == 0 else 0.0
        # every rank evaluates the validation images (the same weights everywhere after the
        # all-reduce), so that all take the same choice and stop at the same epoch
        val = accuracy(model, val_set) if val_set is not None else None
        record = EpochRecord(epoch + 1, total_loss / max(1, seen), acc, lr, seconds,
                             seen * world / seconds, val)  # fmt: skip
        result.history.append(record)
        if val_set is None:  # no choice to make: the last epoch is kept
            result.best_accuracy, result.best_epoch = acc, epoch + 1
            best_state = model.state_dict()
        elif result.best_epoch < 0 or val > _best_validation(result):
            result.best_accuracy, result.best_epoch = acc, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        if ckpt is not None and rank == 0:
            _save_atomic(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "best_model": best_state, "epoch": epoch,
                 "history": [asdict(r) for r in result.history],
                 "best_accuracy": result.best_accuracy, "best_epoch": result.best_epoch},
                ckpt,
            )  # fmt: skip
        if log and rank == 0:
            held = "" if val is None else f"validation {val:.2f}%, "
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record.loss:.4f}, {held}test accuracy "
                f"{acc:.2f}%, {record.images_per_second:.0f} img/s, lr {lr:.4g}")  # fmt: skip
        if cfg.patience is not None and epoch + 1 - result.best_epoch >= cfg.patience:
            result.stopped_early = epoch + 1 < cfg.epochs
            if log and rank == 0 and result.stopped_early:
                log(f"early stop: no improvement for {cfg.patience} epochs")
            break
    model.load_state_dict(best_state)
    return result


class _Progress:
    """A rich progress bar with throughput and ETA, or nothing when not wanted."""

    def __init__(self, enabled: bool, steps: int):
        self.enabled, self.steps, self.bar, self.task = enabled, steps, None, None

    def start(self, epoch: int, epochs: int) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(),
            TextColumn("{task.fields[speed]:>6.0f} img/s  loss {task.fields[loss]:.3f}"),
            TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task("train", total=self.steps, speed=0.0, loss=0.0)

    def advance(self, speed: float, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, speed=speed, loss=loss)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
