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


def _from_factory(path: Path, factory: str, kwargs: dict) -> nn.Module:
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


def _from_archive(path: Path, device: str) -> nn.Module:
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise UnsafeFileError(
            f"{str(path)!r} is not a TorchScript or torch.export archive (a plain pickle?); "
            "leanconv does not unpickle model files"
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    try:
        if any(
            n.endswith("serialized_exported_program.json") or "/models/" in n for n in names
        ) and (path.suffix == ".pt2"):
            return torch.export.load(str(path)).module()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return torch.jit.load(str(path), map_location=device)
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
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
