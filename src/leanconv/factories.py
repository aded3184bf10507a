"""Building a model from a name: a zoo name, ``path/to/file.py:factory`` or
``package.module:factory``. Importing a factory runs the user's own code (their file or installed
package), as they asked; nothing here reads a pickle."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import ModelLoadError

__all__ = ["build", "file_factory", "is_file_factory", "is_module_factory", "module_callable"]


def file_factory(path: Path, factory: str):
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


def _called(fn, label: str, kwargs: dict) -> nn.Module:
    """``fn(**kwargs)``, the factory named ``label``: an error saying what it raised or that it
    returned something other than an ``nn.Module``."""
    try:
        model = fn(**kwargs)
    except Exception as exc:
        raise ModelLoadError(f"factory {label} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"factory {label} returned {type(model).__name__}, not an nn.Module")
    return model


_MODULE_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w.]*$")


def is_file_factory(text: str) -> bool:
    """``path/to/file.py:function``."""
    return ":" in text and text.rsplit(":", 1)[0].endswith(".py")


def is_module_factory(text: str) -> bool:
    """``package.module:function`` (an importable module, not a file path)."""
    return bool(_MODULE_FACTORY.match(text)) and not is_file_factory(text)


def module_callable(text: str):
    """The callable ``function`` of ``package.module:function`` (imported, not called)."""
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


def build(text: str, device: str = "cpu", kwargs: dict | None = None):
    """``(model, its default input shape or None)`` for a zoo name (built on ``device``;
    ``"meta"`` builds it without memory) or a factory (``file.py:fn``, ``package.module:fn``,
    called with ``kwargs``, on the device it chooses); ``None`` when ``text`` names neither."""
    from . import zoo

    kwargs = kwargs or {}
    if text in zoo.names():
        with torch.device(device):
            model = zoo.create(text, **kwargs)
        return model, zoo.default_input(text)
    if is_file_factory(text):
        file, factory = text.rsplit(":", 1)
        return _called(file_factory(Path(file), factory), f"{Path(file).name}:{factory}",
                       kwargs), None  # fmt: skip
    if is_module_factory(text):
        return _called(module_callable(text), text, kwargs), None
    return None
