"""Finding and replacing layers inside any model, by qualified name.

The helpers live in :mod:`leanconv.modules` (below both :mod:`leanconv.selection` and
:mod:`leanconv.compress`, which share them); their names stay importable from here.
"""

from __future__ import annotations

from ..modules import LayerNotFoundError, conv_layers, get_layer, replace_modules

__all__ = ["LayerNotFoundError", "conv_layers", "get_layer", "replace_modules"]
