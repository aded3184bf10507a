"""Finding a model from what a user typed: a zoo name, ``file.py:factory``, a TorchScript archive,
a ``torch.export`` file or a model directory that ``leanconv compress`` (``leanconv.save``) wrote.
Nothing here unpickles untrusted data. Models built from a name are :mod:`.factories`'; weights
files are read by :mod:`.weights`."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ModelLoadError, UnsafeFileError
from .factories import build, file_factory, is_file_factory, is_module_factory, module_callable
from .weights import load_weights


@dataclass
class LoadedModel:
    module: nn.Module
    name: str
    default_input: tuple[int, ...] | None


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
    built = build(text, device, kwargs)
    if built is not None:
        return LoadedModel(built[0], text, built[1])
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
    elif is_file_factory(text) or is_module_factory(text):
        if is_file_factory(text):
            file, name = text.rsplit(":", 1)
            fn = file_factory(Path(file), name)
        else:
            fn = module_callable(text)
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
