"""Finding a model from what a user typed: a zoo name, ``file.py:factory``, a TorchScript archive
or a ``torch.export`` file. Nothing here unpickles untrusted data."""

from __future__ import annotations

import importlib.util
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


def _from_archive(path: Path, device: str) -> nn.Module:
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    kind = archive_kind(path)
    try:
        if kind == "export":
            return torch.export.load(str(path)).module()
        if kind == "torchscript":
            return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ModelLoadError(f"loading {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    raise UnsafeFileError(
        f"{str(path)!r} holds a pickled state dict or module, not TorchScript or torch.export; "
        "leanconv does not unpickle model files (save weights with safetensors instead)"
    )


def load_model(spec: str, device: str = "cpu", **kwargs) -> LoadedModel:
    """Resolve ``spec``: a registered zoo name, ``path/to/file.py:factory``, a TorchScript file
    (``.pt``, ``.pth``, ``.ts``) or a ``torch.export`` file (``.pt2``).

    Zoo models are built on ``device`` (``"meta"`` builds them instantly, without memory).
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
    path = Path(text)
    if path.suffix in (".pt", ".pth", ".ts", ".pt2", ".jit"):
        return LoadedModel(
            _from_archive(path, device if device != "meta" else "cpu"), path.name, None
        )
    if path.suffix == ".py":
        raise ModelLoadError(f"{text!r}: name the factory too, as {text}:make_model")
    raise ModelLoadError(
        f"unknown model {text!r}: give a zoo name ({', '.join(zoo.names())}), "
        "path/to/file.py:factory, a TorchScript file or a torch.export .pt2 file"
    )


def load_trainable(
    spec: str,
    num_classes: int,
    weights: str | None = None,
    trust_pickle: bool = False,
    width: float | None = None,
) -> tuple[nn.Module, dict]:
    """A model that can be rewritten and fine-tuned, and how to rebuild it (for saving).

    ``spec``: a zoo name (built with ``num_classes``; ``width`` if given), ``file.py:factory``, or —
    only with ``trust_pickle`` — a pickled ``nn.Module`` file. ``weights``: a ``.safetensors``
    state dict to load (strictly).
    """
    from . import zoo

    text = spec.strip()
    if text in zoo.names():
        kwargs = {"num_classes": num_classes} | ({"width": width} if width else {})
        model = load_model(text, **kwargs).module
        base = {"zoo": text, "kwargs": kwargs}
    elif ":" in text and text.rsplit(":", 1)[0].endswith(".py"):
        file, name = text.rsplit(":", 1)
        kwargs = {"num_classes": num_classes} if _accepts(_factory(Path(file), name)) else {}
        model = load_model(text, **kwargs).module
        base = {"factory": text, "kwargs": kwargs}
    elif Path(text).suffix in (".pt", ".pth") and trust_pickle:
        try:
            model = torch.load(text, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelLoadError(f"loading {text!r} failed: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"{text!r} holds a {type(model).__name__}, not an nn.Module")
        base = {"pickle": text}
    elif Path(text).suffix in (".pt", ".pth", ".ts", ".pt2", ".jit"):
        if Path(text).is_file() and archive_kind(Path(text)) == "pickle":
            raise UnsafeFileError(
                f"{text!r} is a pickle; loading it runs code from the file. Pass --trust-pickle "
                "if you trust it, or give a zoo name or file.py:factory with --weights "
                "file.safetensors"
            )
        raise ModelLoadError(
            f"{text!r}: compressing needs a trainable model, a zoo name or file.py:factory "
            "(with --weights file.safetensors); TorchScript and torch.export files are frozen"
        )
    else:
        model = load_model(text).module  # raises the usual clear error
        base = {"factory": text, "kwargs": {}}
    if weights:
        load_weights(model, weights)
    return model, base


def _accepts(factory, arg: str = "num_classes") -> bool:
    """Whether ``factory`` takes the keyword ``arg``."""
    import inspect

    try:
        return arg in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``model``, naming what does not match."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {str(path)!r} does not exist")
    if path.suffix != ".safetensors":
        raise UnsafeFileError(f"--weights {str(path)!r}: give a .safetensors file (no pickles)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"weights file {str(path)!r} cannot be read: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelLoadError(
            f"weights {str(path)!r} do not fit the model: {' '.join(first[:3])[:400]}"
        ) from None
