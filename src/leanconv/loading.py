"""Finding a model from what a user typed: a zoo name, ``file.py:factory``, a TorchScript archive,
a ``torch.export`` file or a model directory that ``leanconv compress`` (``leanconv.save``) wrote.
Nothing here unpickles untrusted data."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ModelLoadError, UnsafeFileError


@dataclass
class LoadedModel:
    module: nn.Module
    name: str
    default_input: tuple[int, ...] | None


def _factory(path: Path, factory: str):
    """The callable ``factory`` of the Python file ``path`` (imported, not called)."""
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    module_name = f"_leanconv_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{str(path)!r} is not a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        raise ModelLoadError(
            f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    fn = getattr(mod, factory, None)
    if fn is None or not callable(fn):
        raise ModelLoadError(f"{str(path)!r} has no callable {factory!r}")
    return fn


def _from_factory(path: Path, factory: str, kwargs: dict) -> nn.Module:
    fn = _factory(path, factory)
    try:
        model = fn(**kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"factory {path.name}:{factory} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"factory {path.name}:{factory} returned {type(model).__name__}, not an nn.Module"
        )
    return model


_MODULE_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w.]*$")


def is_module_factory(text: str) -> bool:
    """``package.module:function`` (an importable module, not a file path)."""
    return bool(_MODULE_FACTORY.match(text)) and not text.rsplit(":", 1)[0].endswith(".py")


def _module_callable(text: str):
    module_name, _, attr = text.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            f"model {text!r}: module {module_name!r} cannot be imported ({exc}); is it installed "
            "in this environment?"
        ) from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelLoadError(f"model {text!r}: {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise ModelLoadError(f"model {text!r}: {attr!r} is not callable")
    return obj


def _from_module_factory(text: str, kwargs: dict) -> nn.Module:
    fn = _module_callable(text)
    try:
        model = fn(**kwargs)
    except Exception as exc:
        raise ModelLoadError(f"factory {text} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"factory {text} returned {type(model).__name__}, not an nn.Module")
    return model


def archive_kind(path: Path) -> str:
    """``"torchscript"``, ``"export"`` (a ``torch.export`` .pt2) or ``"pickle"`` (anything else:
    a plain pickle, or ``torch.save``'s zip holding ``data.pkl``), read from the file's entries."""
    if not zipfile.is_zipfile(path):
        return "pickle"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if path.suffix == ".pt2" or any(n.endswith("serialized_exported_program.json") for n in names):
        return "export"
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    return "pickle"


def _check_file(path: Path, what: str = "model file") -> None:
    """Raise naming what is wrong with ``path`` as a file to read: missing, a directory, empty."""
    if path.is_dir():
        raise ModelLoadError(f"{what} {str(path)!r} is a directory, not a file")
    if not path.exists():
        raise ModelLoadError(f"{what} {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{what} {str(path)!r} is empty (0 bytes)")


def _from_archive(path: Path, device: str) -> nn.Module:
    """A TorchScript archive (loaded straight onto ``device``, ``meta`` included) or a
    ``torch.export`` program; anything else is refused, saying what it is."""
    _check_file(path)
    zipped = zipfile.is_zipfile(path)
    if not zipped and path.suffix in (".pt2", ".jit", ".ts"):
        kind = "torch.export" if path.suffix == ".pt2" else "TorchScript"
        raise ModelLoadError(
            f"{str(path)!r} is not a zip archive, so not a {kind} file (those are zip archives); "
            "is it truncated or another format?"
        )
    kind = archive_kind(path)
    try:
        if kind == "export":
            module = torch.export.load(str(path)).module()
            return module.to(device) if device != "meta" else module
        if kind == "torchscript":
            return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ModelLoadError(f"loading {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    raise UnsafeFileError(
        f"{str(path)!r} holds a pickled state dict or module, not TorchScript or torch.export; "
        "leanconv does not unpickle model files (save weights with safetensors instead)"
    )


def _from_saved(
    path: Path, device: str, algorithms: bool = True, trust_code: bool = False
) -> LoadedModel:
    """A model directory written by ``leanconv compress`` (its ``model/`` folder, or the output
    folder holding it) or ``leanconv.save``: rebuilt by ``leanconv.load`` (no code from the
    directory runs unless ``trust_code``: see ``leanconv.load``), in its deployment form unless
    ``algorithms`` is false; its example input is the shape it was compressed with, at batch 1.
    Its weights are real, so ``meta`` loads on the CPU."""
    from .compress.serialize import load

    if not (path / "model.json").is_file() and (path / "model" / "model.json").is_file():
        path = path / "model"
    if not (path / "model.json").is_file():
        raise ModelLoadError(
            f"{str(path)!r} is a directory without model.json: give a model directory written "
            "by `leanconv compress` (its output folder or the model/ folder in it) or "
            "leanconv.save"
        )
    device = "cpu" if device == "meta" else device
    model = load(path, device=device, algorithms=algorithms, trust_code=trust_code)
    shape = (getattr(model, "expected_input", None) or {}).get("shape")
    return LoadedModel(model, path.name, (1, *shape) if shape else None)


def load_model(
    spec: str, device: str = "cpu", *, deployed: bool = True, trust_code: bool = False, **kwargs
) -> LoadedModel:
    """Resolve ``spec``: a registered zoo name, ``path/to/file.py:factory``, a TorchScript file
    (``.pt``, ``.pth``, ``.ts``), a ``torch.export`` file (``.pt2``) or a compressed model's
    directory (``model.json`` + ``model.safetensors``).

    Zoo models are built on ``device`` (``"meta"`` builds them instantly, without memory). A
    compressed model runs its recorded algorithms unless ``deployed`` is false (plain
    convolutions, as decomposed); ``trust_code`` lets it import the factory its model.json
    records (else a user model comes back as its ``torch.export`` program, one flat graph).
    """
    from . import zoo

    text = spec.strip()
    if not text:
        raise ModelLoadError("no model given")
    if text in zoo.names():
        with torch.device(device):
            model = zoo.create(text, **kwargs)
        return LoadedModel(model, text, zoo.default_input(text))
    if ":" in text and text.rsplit(":", 1)[0].endswith(".py"):
        file, factory = text.rsplit(":", 1)
        return LoadedModel(_from_factory(Path(file), factory, kwargs), text, None)
    if is_module_factory(text):
        return LoadedModel(_from_module_factory(text, kwargs), text, None)
    path = Path(text)
    if path.is_dir():
        return _from_saved(path, device, algorithms=deployed, trust_code=trust_code)
    if path.suffix in (".pt", ".pth", ".ts", ".pt2", ".jit"):
        return LoadedModel(_from_archive(path, device), path.name, None)
    if path.suffix == ".py":
        raise ModelLoadError(f"{text!r}: name the factory too, as {text}:make_model")
    raise ModelLoadError(
        f"unknown model {text!r}: give a zoo name ({', '.join(zoo.names())}), "
        "path/to/file.py:factory, a TorchScript file, a torch.export .pt2 file or a compressed "
        "model's directory"
    )


def load_trainable(
    spec: str,
    num_classes: int | None,
    weights: str | None = None,
    trust_pickle: bool = False,
    width: float | None = None,
    model_args: dict | None = None,
    log=None,
) -> tuple[nn.Module, dict]:
    """A model that can be rewritten and fine-tuned, and how to rebuild it (for saving).

    ``spec``: a zoo name (built with ``num_classes``; ``width`` if given), ``file.py:factory`` or
    ``package.module:factory`` (called with ``model_args``, plus ``num_classes`` when it takes
    that keyword and ``model_args`` does not set it), or — only with ``trust_pickle`` — a pickled
    ``nn.Module`` file. ``weights``: a state dict to load strictly (:func:`load_weights`).
    """
    from . import zoo

    text = spec.strip()
    model_args = dict(model_args or {})
    if text in zoo.names():
        kwargs = ({"num_classes": num_classes} if num_classes else {}) | model_args
        kwargs |= {"width": width} if width else {}
        model = load_model(text, **kwargs).module
        base = {"zoo": text, "kwargs": kwargs}
    elif (":" in text and text.rsplit(":", 1)[0].endswith(".py")) or is_module_factory(text):
        if ":" in text and text.rsplit(":", 1)[0].endswith(".py"):
            file, name = text.rsplit(":", 1)
            fn = _factory(Path(file), name)
        else:
            fn = _module_callable(text)
        kwargs = dict(model_args)
        if num_classes and "num_classes" not in kwargs and _accepts(fn):
            kwargs["num_classes"] = num_classes
        model = load_model(text, **kwargs).module
        base = {"factory": text, "kwargs": kwargs}
    elif Path(text).suffix in (".pt", ".pth") and trust_pickle:
        try:
            model = torch.load(text, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelLoadError(f"loading {text!r} failed: {exc}") from None
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"{text!r} holds a {type(model).__name__}, not an nn.Module")
        base = {"pickle": text}
    elif Path(text).suffix in (".pt", ".pth", ".ts", ".pt2", ".jit"):
        if Path(text).is_file() and archive_kind(Path(text)) == "pickle":
            raise UnsafeFileError(
                f"{text!r} is a pickle; loading it runs code from the file. Pass --trust-pickle "
                "if you trust it, or give file.py:factory (or package.module:factory) with "
                "--weights holding the state dict"
            )
        raise ModelLoadError(
            f"{text!r}: compressing needs a trainable model, a zoo name, file.py:factory or "
            "package.module:factory (with --weights); TorchScript and torch.export files are "
            "frozen"
        )
    else:
        model = load_model(text).module  # raises the usual clear error
        base = {"factory": text, "kwargs": {}}
    if weights:
        load_weights(model, weights, log=log)
    return model, base


def _accepts(factory, arg: str = "num_classes") -> bool:
    """Whether ``factory`` takes the keyword ``arg``."""
    import inspect

    try:
        return arg in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


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
