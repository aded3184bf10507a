"""Weights files as training scripts save them: a state dict in ``.safetensors``, or in a
``.pt/.pth/.bin/.ckpt`` file read by ``torch.load(weights_only=True)`` (tensors and plain
containers only: no code runs), possibly nested in a checkpoint and prefixed by a wrapper."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from .errors import ModelLoadError, UnsafeFileError

__all__ = ["CHECKPOINT_KEYS", "PREFIXES", "WEIGHT_SUFFIXES", "check_finite", "load_weights",
           "read_state_dict"]  # fmt: skip


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: Keys under which training scripts commonly nest the model's state dict in a checkpoint.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
#: Prefixes that wrappers add to every key: DistributedDataParallel / DataParallel, torch.compile.
PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict in a weights file, and one line per transformation applied to find it.

    ``.safetensors`` is read as is; ``.pt/.pth/.bin/.ckpt`` through
    ``torch.load(weights_only=True)`` (tensors and plain containers only: no code runs), which
    may hold the state dict itself or a checkpoint nesting it under one of
    :data:`CHECKPOINT_KEYS`, or under any one key when it holds no other state dict. Key
    prefixes of :data:`PREFIXES` shared by every key are removed.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    said: list[str] = []
    if not path.is_file():
        raise ModelLoadError(f"weights file {str(path)!r} does not exist")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ModelLoadError(
            f"--weights {str(path)!r}: give a {', '.join(WEIGHT_SUFFIXES)} file holding a state "
            "dict"
        )
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"weights file {str(path)!r} cannot be read: {exc}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, AttributeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsafeFileError(
                f"--weights {str(path)!r} cannot be read safely (torch.load with "
                f"weights_only=True: {first[:200]}); it may hold a whole pickled model: save "
                "model.state_dict() instead, or give the file as MODEL with --trust-pickle if "
                "you trust it"
            ) from None
        except (OSError, RuntimeError, EOFError) as exc:
            raise ModelLoadError(f"weights file {str(path)!r} cannot be read: {exc}") from None
    state = _nested_state(state, path, said)
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
            said.append(f"removed the prefix {prefix!r} from every key")
    return state, said


def _is_state(d) -> bool:
    return (
        isinstance(d, dict)
        and bool(d)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())
    )


def _nested_state(obj, path: Path, said: list[str]) -> dict[str, torch.Tensor]:
    if _is_state(obj):
        return dict(obj)
    if isinstance(obj, dict):
        for key in CHECKPOINT_KEYS:
            if _is_state(obj.get(key)):
                said.append(f"read the state dict under the checkpoint key {key!r}")
                return dict(obj[key])
        found = [k for k, v in obj.items() if _is_state(v)]
        if len(found) == 1:  # a checkpoint's own name for it ("model_state", "weights", ...)
            said.append(f"read the state dict under the checkpoint key {found[0]!r} (the only "
                        "state dict in the checkpoint)")  # fmt: skip
            return dict(obj[found[0]])
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        which = (f"several state dicts ({', '.join(repr(k) for k in found)}) and none under "
                 if found else "a dict without a state dict under ")  # fmt: skip
        raise ModelLoadError(
            f"weights file {str(path)!r} holds {which}{', '.join(CHECKPOINT_KEYS)} (its keys: "
            f"{keys}); save the model's state dict alone, or under one of those keys"
        )
    raise ModelLoadError(
        f"weights file {str(path)!r} holds a {type(obj).__name__}, not a state dict"
    )


def load_weights(model: nn.Module, path: str | Path, log=None) -> None:
    """Load the state dict of ``path`` (:func:`read_state_dict`) into ``model`` strictly, naming
    what does not match; each transformation applied is said in one line through ``log``."""
    state, said = read_state_dict(path)
    for line in said:
        if log:
            log(f"weights {Path(path).name}: {line}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelLoadError(
            f"weights {str(path)!r} do not fit the model: {' '.join(first[:3])[:400]}"
        ) from None
    check_finite(state, f"weights {str(path)!r}")


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Raise :class:`ModelLoadError` naming the tensors of ``state`` that hold NaN or infinity."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelLoadError(f"{what} hold(s) NaN or infinite values in {bad[:3]}")
