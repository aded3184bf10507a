"""Compressing trained models: planning, surgery, verification, fine-tuning.

The package is also callable: ``leanconv.compress(model, train, test, speedup=2)`` runs the
whole pipeline on a user's model and data (:func:`leanconv.compress.api.compress`).
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, model, train, test, **kwargs):
        from .api import compress

        return compress(model, train, test, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
