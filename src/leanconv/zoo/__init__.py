"""Reference architectures built from :mod:`leanconv.nn` blocks, found by name."""

from . import models  # noqa: F401  (registers the models)
from .registry import create, default_input, names, register

__all__ = ["create", "default_input", "names", "register"]
