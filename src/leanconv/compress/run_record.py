"""What a run was started with, kept in its staging directory so that ``--resume`` continues the
same run or refuses, naming what differs.

``run.json`` holds the settings (as the command line spells them), a fingerprint of the model (its
architecture and the sha256 of its weights' values), and the data's description. ``--resume``
recomputes the same record and compares: a changed ``--epochs`` would otherwise be spliced into
the learning-rate schedule, a different model would fail on the checkpoint's state dict. The
later stages add what they decided (``candidates.json``: the candidates of each layer measured so
far; ``surgery.json``: which layers were replaced and which rolled back), so that a resumed run
takes the same decisions instead of recomputing them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ..atomic import write_text_atomic
from ..errors import LeanconvError

RUN_FILE, CANDIDATES_FILE, SURGERY_FILE = "run.json", "candidates.json", "surgery.json"

#: The settings of a run as the command line names them (CompressConfig / FinetuneConfig field ->
#: flag); settings without a flag keep their field name.
FLAGS = {
    "speedup": "--speedup", "macs_ratio": "--macs-ratio", "max_drop": "--max-drop",
    "search_epochs": "--search-epochs", "methods": "--methods", "algorithms": "--algorithms",
    "plan_batch": "--batch", "calibration": "--calibration", "prefer_capacity": "--most-accurate",
    "seed": "--seed", "min_metric": "--min-metric", "fuse": "--fuse/--no-fuse",
    "epochs": "--epochs", "lr": "--lr", "validation": "--validation", "patience": "--patience",
}  # fmt: skip


class ResumeMismatchError(LeanconvError):
    """``--resume`` with settings, model or data other than the interrupted run's."""


def _plain(value):
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return getattr(value, "__name__", type(value).__name__)  # a metric or loss function


def settings(config) -> dict:
    """The settings of ``config`` (a CompressConfig) that decide what the run does."""
    out = {}
    for f in dataclasses.fields(config):
        if f.name in ("finetune", "deployment", "target"):
            continue
        out[f.name] = _plain(getattr(config, f.name))
    out.update(config.target.settings())  # as --speedup, --macs-ratio or --max-drop
    for f in dataclasses.fields(config.finetune):
        if f.name not in ("checkpoint", "resume", "progress"):
            out[f.name] = _plain(getattr(config.finetune, f.name))
    out["fuse"] = config.deployment.fuse
    out["memory_format"] = config.deployment.memory_format
    return out


def fingerprint(model: nn.Module) -> dict:
    """The model's architecture (module types by name) and the sha256 of its weights' values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    layers = [f"{n}:{type(m).__name__}" for n, m in model.named_modules()]
    return {"architecture": hashlib.sha256("\n".join(layers).encode()).hexdigest(),
            "weights": digest.hexdigest(), "parameters": sum(p.numel() for p in
                                                              model.parameters())}  # fmt: skip


def _tensor_digest(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def record(config, model: nn.Module, data, samples: tuple[torch.Tensor, ...] = ()) -> dict:
    """The record of a run: settings, model, data (``samples``: tensors read from the data, the
    calibration and test inputs, whose digest tells other data from the same description)."""
    return {
        "settings": settings(config),
        "model": fingerprint(model),
        "data": {"name": data.name, "classes": data.num_classes,
                 "input_shape": list(data.input_shape),
                 "preprocessing": _plain(data.preprocessing),
                 "samples": _tensor_digest(*samples)},
    }  # fmt: skip


def _differences(saved: dict, now: dict) -> list[str]:
    out = []
    for key in sorted(set(saved["settings"]) | set(now["settings"])):
        a, b = saved["settings"].get(key), now["settings"].get(key)
        if a != b:
            out.append(f"{FLAGS.get(key, key)} was {a!r}, now {b!r}")
    if saved["model"]["architecture"] != now["model"]["architecture"]:
        out.append("the model's architecture differs")
    elif saved["model"]["weights"] != now["model"]["weights"]:
        out.append("the model's weights differ (--weights)")
    if saved["data"] != now["data"]:
        keys = [k for k in saved["data"] if saved["data"].get(k) != now["data"].get(k)]
        out.append(f"the data differ ({', '.join(keys)}; --data and its preprocessing)")
    return out


def write(staging: Path, name: str, content) -> None:
    write_text_atomic(staging / name, json.dumps(content), force=True)


def read(staging: Path, name: str):
    path = staging / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LeanconvError(f"--resume: {str(path)!r} is damaged ({exc})") from None


def check_resume(staging: Path, now: dict) -> None:
    """Raise :class:`ResumeMismatchError` unless ``now`` is the record the run was started with."""
    saved = read(staging, RUN_FILE)
    if saved is None:
        raise ResumeMismatchError(
            f"--resume: {str(staging)!r} records no run (started by an older leanconv?); "
            "start again without --resume"
        )
    diff = _differences(saved, now)
    if diff:
        raise ResumeMismatchError(
            "--resume continues the interrupted run with the settings it was started with, but "
            + "; ".join(diff)
            + ". Resume with the same settings, or start again with --force"
        )
