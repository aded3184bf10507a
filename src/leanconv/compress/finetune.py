"""Fine-tuning with knowledge distillation (Hinton et al. 2015), resumable and distributable.

Loss, for a classifier (class logits, judged by accuracy):
``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)`` where ``s`` and
``t`` are the student's and the teacher's logits (the teacher is the original model); the user's
``loss(outputs, targets)``, when given, takes the place of the cross-entropy. For any other output
(tensors, tuples or dicts of them: segmentation, detection, regression) the distillation term is
the relative squared error of every output tensor (:func:`.outputs.distillation`), weighted
``alpha`` against ``loss`` when one is given and alone otherwise. Without a teacher the loss is
the cross-entropy (or the user's loss) alone.

- SGD with Nesterov momentum and a cosine learning rate (after an optional linear warm-up)
  computed from the global step, so a resumed run needs no scheduler state.
- The data order of epoch ``e`` is drawn from ``seed + e`` (:func:`leanconv.data.batches.epoch`: a
  permutation of a dataset, or a user's shuffling ``DataLoader`` with PyTorch's generator seeded);
  a run resumed from the checkpoint of epoch ``e`` therefore sees exactly the batches an
  uninterrupted run would, and ends at the same weights.
- A checkpoint (model, optimiser, history) is written atomically after every epoch; an
  interruption leaves the previous one intact.
- A step's gradient norm is cut to ``spike_clip`` times the median of the last 100 steps
  (:mod:`.grad_spikes`): one spike can otherwise throw a decomposed model off for good.
- Before each evaluation the BatchNorm layers' running statistics are recomputed for the
  current weights over ``bn_samples`` training inputs (:mod:`.precise_bn`): on a small training
  set the running averages lag the weights so far that a model evaluates at chance.
- The test split is never used for a choice: with ``validation`` (a fraction of the training
  images held out, fixed by ``seed``) the weights with the best validation metric are kept, the
  weights fine-tuning started from included (epoch 0: an epoch must beat or tie them), and
  ``patience`` stops after that many epochs without improvement; without it the last epoch's
  weights are kept (the cosine schedule ends at a learning rate near zero). The test metric is
  printed every epoch for monitoring only.
- Mixed precision (bfloat16 autocast) on CUDA; float32 on the CPU.
- Under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in
  DistributedDataParallel (gloo on CPU, nccl on GPU) and each rank takes every ``world``-th sample
  of the epoch's permutation (every ``world``-th batch of a loader); rank 0 evaluates, prints and
  writes checkpoints.
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

from ..data import batches as source
from ..data.bundle import DataBundle
from ..data.transforms import Augment
from ..errors import LeanconvError
from . import outputs, precise_bn
from .evaluate import ACCURACY, Metric, check_outputs, to_model
from .grad_spikes import FACTOR as SPIKE_FACTOR
from .grad_spikes import SpikeClip

#: Fine-tuning has diverged when a step's loss is not finite or exceeds DIVERGED times the run's
#: first loss (at least DIVERGED_FLOOR): a user's model without normalisation layers, decomposed at
#: low ranks, went 0.57, 1.19, 22.7, 224, 6.7e5, 1.6e35, NaN in its first steps at lr 0.01. It
#: then restarts from the weights it started with, at most RETRIES times, each time with the
#: learning rate divided by SLOWER and gradients clipped to norm CLIP.
DIVERGED = 100.0
DIVERGED_FLOOR = 0.1
RETRIES = 2
SLOWER = 4.0
CLIP = 1.0


@dataclass
class FinetuneConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.01  # as the command line's --lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.7
    patience: int | None = None  # needs validation > 0
    validation: float = 0.0  # fraction of the training images held out to choose the epoch
    warmup_epochs: float = 0.0  # linear learning-rate warm-up before the cosine decay
    seed: int = 0
    augment: bool = True  # random crops of 4-D image batches (the Python API turns it off)
    bn_samples: int = precise_bn.SAMPLES  # BatchNorm statistics recomputed from these; 0: not
    spike_clip: float = SPIKE_FACTOR  # gradient norms cut to this x the recent median; 0: not
    amp: bool | None = None  # None: bfloat16 autocast on CUDA only
    checkpoint: str | Path | None = None  # file written after every epoch
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        """Each setting checked, named as the command line spells it (and as the field is)."""
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{_flag(name)} {getattr(self, name)}: must be at least 1")
        for name in ("lr", "temperature"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{_flag(name)} {value}: must be a positive number")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum}: must be in [0, 1)")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay}: must be 0 or more")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha={self.alpha}: must be in [0, 1]")
        if not (self.spike_clip == 0 or self.spike_clip >= 1):
            raise ValueError(f"--spike-clip {self.spike_clip}: 0 (off) or at least 1")
        if self.bn_samples < 0:
            raise ValueError(f"--bn-samples {self.bn_samples}: must be 0 (off) or more")
        if not 0 <= self.validation < 1:
            raise ValueError(f"--validation {self.validation}: a fraction in [0, 1)")
        if self.patience is not None and self.validation == 0:
            raise ValueError(
                "--patience (early stopping) needs a validation split: set --validation, "
                "for example 0.1 (the test split is never used for choices)"
            )


def _flag(field_name: str) -> str:
    """How the command line names a fine-tuning setting (``lr`` -> ``--lr``)."""
    return {"batch_size": "batch_size="}.get(field_name, "--" + field_name.replace("_", "-"))


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    metric: float  # on the test data (monitoring only)
    lr: float
    seconds: float
    images_per_second: float
    validation_metric: float | None = None


@dataclass
class FinetuneResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_metric: float = 0.0  # test metric of the epoch kept
    best_epoch: int = -1  # the epoch kept: best on validation (0: the start), else the last
    start_metric: float | None = None  # test metric before fine-tuning (with a validation split)
    start_validation: float | None = None  # validation metric before fine-tuning
    stopped_early: bool = False
    resumed_from: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _best_validation(result: FinetuneResult) -> float:
    if result.best_epoch == 0:
        return result.start_validation
    return result.history[result.best_epoch - 1].validation_metric


def distillation_loss(
    student,
    teacher,
    labels,
    temperature: float,
    alpha: float,
    logits: bool = True,
    loss: Callable | None = None,
) -> torch.Tensor:
    """The training loss of one batch (see the module docstring): ``student`` and ``teacher``
    are model outputs (the teacher's ``None`` without distillation), ``labels`` the targets."""
    task = None
    if loss is not None:
        task = loss(student, labels)
    elif logits:
        task = F.cross_entropy(outputs.logits_of(student).float(), labels)
    if teacher is None or alpha == 0:
        if task is None:
            raise LeanconvError("nothing to train on: no teacher to distil from and no loss")
        return task
    distil = outputs.distillation(student, teacher, temperature, logits)
    return distil if task is None else alpha * distil + (1 - alpha) * task


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
    metric: Metric = ACCURACY,
    loss: Callable | None = None,
) -> FinetuneResult:
    """Train ``model`` in place on ``data.train``, distilling from ``teacher``; returns the history.

    ``metric`` (:mod:`.evaluate`) is reported per epoch and chooses the epoch with
    ``validation``; ``loss(outputs, targets)`` is the task loss (default: cross-entropy on class
    logits; none for other outputs, which are then only distilled). The model ends with the
    weights of the best epoch on the validation images, else of the last epoch; the test split is
    only reported.
    """
    cfg = config or FinetuneConfig()
    rank, world = _rank_world()
    device = next(model.parameters()).device
    check_outputs(model, data.test, metric, data.num_classes)
    train_set, val_set = data.train, None
    if cfg.validation > 0:
        split = data.holdout(cfg.validation, cfg.seed)
        train_set, val_set = split.train, split.test
    if teacher is not None:  # run under no_grad below; its parameters are left as they are
        teacher = teacher.to(device).eval()
    train_model = _distributed(model, device, world)
    optimizer = _optimizer(model, cfg)
    steps_per_epoch = source.num_batches(train_set, cfg.batch_size, world)
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    augment = Augment(pad=2) if cfg.augment else None

    result = FinetuneResult()
    best_state = copy.deepcopy(model.state_dict())
    start_epoch, lr_scale, grad_norms = 0, 1.0, []
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    if cfg.resume:
        best_state, start_epoch, lr_scale, grad_norms = _restore(ckpt, model, optimizer, result)
        if log and rank == 0:
            log(f"resumed from the checkpoint of epoch {start_epoch} in {ckpt}")
    progress = _Progress(cfg.progress and rank == 0 and sys.stderr.isatty(), steps_per_epoch)
    run = _Run(model, train_model, teacher, optimizer, cfg, metric, loss, augment, device, amp,
               steps_per_epoch * cfg.epochs, warmup_steps, steps_per_epoch, rank, world,
               progress, SpikeClip(cfg.spike_clip, norms=grad_norms), lr_scale)  # fmt: skip
    if val_set is not None and start_epoch == 0:
        best_state = _start(run, data, train_set, val_set, result)
        if log and rank == 0:
            log(_start_line(result, metric))
    initial = _snapshot(model, optimizer, result, best_state)
    epoch, restarts = start_epoch, 0
    while epoch < cfg.epochs:
        t0 = time.perf_counter()
        try:
            seen, total_loss, lr = run.epoch(epoch, train_set)
        except _Diverged as exc:
            restarts += 1
            best_state = run.restart(initial, result, restarts, f"epoch {epoch + 1}, {exc}")
            if log and rank == 0:
                log(f"fine-tuning diverged at epoch {epoch + 1}, {exc}: restarted from epoch "
                    f"{start_epoch + 1} with the learning rate {cfg.lr * run.lr_scale:.3g} "
                    f"and gradients clipped to norm {CLIP:g}")  # fmt: skip
            epoch = start_epoch
            continue
        record = _evaluated(run, data, train_set, val_set, epoch, seen, total_loss, lr,
                            time.perf_counter() - t0)  # fmt: skip
        best_state = _keep_best(result, record, model, best_state)
        if ckpt is not None and rank == 0:
            run.save(ckpt, best_state, epoch, result)
        if log and rank == 0:
            log(_epoch_line(record, cfg.epochs, metric))
        if cfg.patience is not None and epoch + 1 - result.best_epoch >= cfg.patience:
            result.stopped_early = epoch + 1 < cfg.epochs
            if log and rank == 0 and result.stopped_early:
                log(f"early stop: no improvement for {cfg.patience} epochs")
            break
        epoch += 1
    model.load_state_dict(best_state)
    return result


def _snapshot(model: nn.Module, optimizer, result: FinetuneResult, best_state: dict) -> tuple:
    """What a divergence restarts from: the weights fine-tuning started with (known to be
    sound), the optimizer's state, and the history so far."""
    return (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
            len(result.history), copy.deepcopy(best_state), result.best_metric,
            result.best_epoch)  # fmt: skip


def _evaluated(run, data, train_set, val_set, epoch, seen, total_loss, lr, seconds) -> EpochRecord:
    """The record of an epoch: its loss and speed, the test metric (on rank 0) and the
    validation metric, with the BatchNorm statistics recomputed for the epoch's weights. Every
    rank evaluates the validation images (the same weights everywhere after the all-reduce), so
    that all take the same choice and stop at the same epoch."""
    acc, val = _metrics(run, data, train_set, val_set)
    return EpochRecord(epoch + 1, total_loss / max(1, seen), acc, lr, seconds,
                       seen * run.world / seconds, val)  # fmt: skip


def _metrics(run, data, train_set, val_set) -> tuple[float, float | None]:
    """The test metric (rank 0 only) and the validation metric of the model as it is now, its
    BatchNorm statistics first recomputed over ``cfg.bn_samples`` training inputs."""
    metric, model = run.metric, run.model
    precise_bn.recompute(model, train_set, run.cfg.batch_size, run.cfg.bn_samples)
    acc = metric(model, data.test) if run.rank == 0 else 0.0
    val = metric(model, val_set) if val_set is not None else None
    return acc, val


def _start(run, data, train_set, val_set, result: FinetuneResult) -> dict:
    """Evaluate the weights fine-tuning starts from as epoch 0, the one to keep unless an epoch
    does as well on the validation images; returns them."""
    result.start_metric, result.start_validation = _metrics(run, data, train_set, val_set)
    result.best_metric, result.best_epoch = result.start_metric, 0
    return copy.deepcopy(run.model.state_dict())


def _start_line(result: FinetuneResult, metric: Metric) -> str:
    return (f"before fine-tuning: validation {result.start_validation:.2f}{metric.unit}, "
            f"test {metric.name} {result.start_metric:.2f}{metric.unit}")  # fmt: skip


def _epoch_line(record: EpochRecord, epochs: int, metric: Metric) -> str:
    val = record.validation_metric
    held = "" if val is None else f"validation {val:.2f}{metric.unit}, "
    return (f"epoch {record.epoch}/{epochs}: loss {record.loss:.4f}, {held}test "
            f"{metric.name} {record.metric:.2f}{metric.unit}, "
            f"{record.images_per_second:.0f} img/s, lr {record.lr:.4g}")  # fmt: skip


def _distributed(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """The model, wrapped in DistributedDataParallel when ``world`` processes train it."""
    if world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (plain SGD at momentum 0); weight decay on weights, none on
    biases and norms."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def _restore(
    ckpt: Path | None, model, optimizer, result: FinetuneResult
) -> tuple[dict, int, float, list[float]]:
    """Model, optimiser and history from the checkpoint; returns the best state kept so far, the
    epoch to start from, the learning-rate scale (lowered by divergences) and the recent
    gradient norms (:mod:`.grad_spikes`)."""
    if ckpt is None or not ckpt.exists():
        raise LeanconvError(f"--resume: no checkpoint at {str(ckpt)!r}")
    state = _load_checkpoint(ckpt)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start_epoch = int(state["epoch"]) + 1
    result.history = [EpochRecord(**r) for r in state["history"]]
    result.best_metric = float(state["best_metric"])
    result.best_epoch = int(state["best_epoch"])
    result.start_metric = state.get("start_metric")
    result.start_validation = state.get("start_validation")
    result.resumed_from = start_epoch - 1
    return (state["best_model"], start_epoch, float(state.get("lr_scale", 1.0)),
            [float(n) for n in state.get("grad_norms", [])])  # fmt: skip


def _keep_best(result: FinetuneResult, record: EpochRecord, model, best_state: dict) -> dict:
    """Add the epoch to the history; the weights to keep: the last epoch's without a validation
    split, else those of the best epoch on it (an epoch that ties the start replaces it)."""
    result.history.append(record)
    if record.validation_metric is None:  # no choice to make: the last epoch is kept
        result.best_metric, result.best_epoch = record.metric, record.epoch
        return model.state_dict()
    best = None if result.best_epoch < 0 else _best_validation(result)
    if (
        best is None
        or record.validation_metric > best
        or (result.best_epoch == 0 and record.validation_metric == best)
    ):
        result.best_metric, result.best_epoch = record.metric, record.epoch
        return copy.deepcopy(model.state_dict())
    return best_state


class _Diverged(Exception):
    """The loss of a training step was not finite."""


@dataclass
class _Run:
    """One fine-tuning run's fixed parts, and how it trains an epoch."""

    model: nn.Module
    train_model: nn.Module  # the model, or its DistributedDataParallel wrapper
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    cfg: FinetuneConfig
    metric: Metric
    loss: Callable | None
    augment: Augment | None
    device: torch.device
    amp: bool
    total_steps: int
    warmup_steps: int
    steps_per_epoch: int
    rank: int
    world: int
    progress: _Progress
    spikes: SpikeClip  # gradient spikes cut to a multiple of the recent median norm
    lr_scale: float = 1.0  # lowered after a divergence (RETRIES), for the rest of the run
    clip: float | None = None  # gradient norm bound, set after a divergence
    reference_loss: float | None = None  # the run's first loss (see DIVERGED)

    def restart(self, initial: tuple, result: FinetuneResult, restarts: int, where: str) -> dict:
        """After a divergence: the model, optimiser and history as they were when fine-tuning
        started, the learning rate divided by :data:`SLOWER` and gradients clipped (an error
        after :data:`RETRIES` restarts); returns the best state to keep."""
        self.progress.stop()
        if restarts > RETRIES:
            raise LeanconvError(
                f"fine-tuning diverged at {where}, after {RETRIES} restarts with the learning "
                f"rate down to {self.cfg.lr * self.lr_scale:.3g}: give a smaller --lr"
            )
        model_state, optimizer_state, n_history, best_state, best_metric, best_epoch = initial
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optimizer_state)
        del result.history[n_history:]
        result.best_metric, result.best_epoch = best_metric, best_epoch
        self.lr_scale, self.clip, self.reference_loss = self.lr_scale / SLOWER, CLIP, None
        self.spikes.norms.clear()
        return copy.deepcopy(best_state)

    def save(self, ckpt: Path, best_state: dict, epoch: int, result: FinetuneResult) -> None:
        """The checkpoint of ``epoch``: enough to continue exactly (written atomically)."""
        _save_atomic(
            {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
             "best_model": best_state, "epoch": epoch,
             "history": [asdict(r) for r in result.history],
             "best_metric": result.best_metric, "best_epoch": result.best_epoch,
             "start_metric": result.start_metric, "start_validation": result.start_validation,
             "lr_scale": self.lr_scale, "grad_norms": self.spikes.state()},
            ckpt,
        )  # fmt: skip

    def epoch(self, epoch: int, train_set) -> tuple[int, float, float]:
        cfg, model = self.cfg, self.model
        model.train()
        epoch_seed = cfg.seed * 1_000_003 + epoch
        g = torch.Generator().manual_seed(epoch_seed)  # a dataset's order, then augmentation
        t0, seen, total_loss, lr = time.perf_counter(), 0, 0.0, cfg.lr
        self.progress.start(epoch, cfg.epochs)
        # the order, and dropout and other global draws, follow from epoch_seed
        train_batches = source.epoch(train_set, cfg.batch_size, epoch_seed, self.rank,
                                     self.world, where="training data", generator=g)  # fmt: skip
        for i, (x, y) in enumerate(train_batches):
            step = epoch * self.steps_per_epoch + i
            lr = _cosine(cfg.lr * self.lr_scale, step, self.total_steps, self.warmup_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.augment is not None and x.dim() == 4 and x.is_floating_point():
                x = self.augment(x, g)
            x = to_model(x, model)
            y = y.to(self.device) if isinstance(y, torch.Tensor) else y
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.train_model(x)
                with torch.no_grad():
                    t_out = self.teacher(x) if self.teacher is not None else None
                value = distillation_loss(out, t_out, y, cfg.temperature, cfg.alpha,
                                          self.metric.logits, self.loss)  # fmt: skip
            current = value.item()
            if self.reference_loss is None:
                self.reference_loss = max(current, DIVERGED_FLOOR)
            if not math.isfinite(current) or current > DIVERGED * self.reference_loss:
                raise _Diverged(f"step {i}: loss {current:.4g} (first {self.reference_loss:.4g})")
            self.optimizer.zero_grad(set_to_none=True)
            value.backward()
            norm = self.spikes(model.parameters(), self.clip)
            if not math.isfinite(norm):
                raise _Diverged(f"step {i}: gradient norm {norm}")
            self.optimizer.step()
            seen += len(x)
            total_loss += current * len(x)
            self.progress.advance(seen / (time.perf_counter() - t0), current)
        self.progress.stop()
        return seen, total_loss, lr


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
