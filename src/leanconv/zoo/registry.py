"""The model registry: ``create(name, **kw)`` builds a reference architecture by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ModelLoadError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DEFAULT_INPUT: dict[str, tuple[int, ...]] = {}


def register(name: str, input_shape: tuple[int, ...] = (1, 3, 224, 224)):
    """Decorator: register a factory under ``name`` with its natural input shape."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = factory
        _DEFAULT_INPUT[name] = input_shape
        return factory

    return wrap


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def default_input(name: str) -> tuple[int, ...]:
    """The input shape a registered model is usually run at, e.g. ``(1, 3, 224, 224)``."""
    _check(name)
    return _DEFAULT_INPUT[name]


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise ModelLoadError(f"unknown model {name!r}; known models: {', '.join(names())}")


def create(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` (``num_classes=``, ``width=`` and others as keywords)."""
    _check(name)
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise ModelLoadError(f"model {name!r}: {exc}") from exc
