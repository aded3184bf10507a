"""The element-wise stage of Winograd as one grouped 1x1 convolution run by oneDNN.

For ``T`` tile elements and ``G`` groups the stage is ``T * G`` independent products
``M[p, t] = V[p, t] @ U[t]`` (``V[p, t]``: the ``C/G`` transformed input values of tile ``p``,
``U[t]``: ``C/G x K/G``). Stored tile-major, ``V`` as ``[P, T * C]`` is exactly a channels-last
``(1, T * C, P, 1)`` image and the products are a 1x1 convolution with ``T * G`` groups whose
weight holds ``U[t]^T``. On x86 CPUs PyTorch's batched ``bmm`` goes through MKL, which runs only
its AVX2 code on AMD processors (about half of the machine's peak here), while oneDNN's
convolution uses AVX-512 everywhere; with the weight reordered once into oneDNN's blocked layout
(in :class:`TileGemm`'s constructor) the stage ran at 286-501 GFLOP/s on the 2-core test machine
against 143-196 for ``bmm`` (docs/benchmarks.md, "Fast algorithms").

``torch.ops.mkldnn._convolution_pointwise`` is the entry PyTorch's own compiler uses for prepacked
convolutions; where it is missing (other builds, other devices) :class:`TileGemm` falls back to
``bmm``.
"""

from __future__ import annotations

import torch

from .packed import onednn_ops

__all__ = ["TileGemm"]


class TileGemm:
    """``M = V @ U`` per tile element and group, for ``V`` as ``[P, T * C]`` (tile-major).

    ``u`` is the transformed filter ``[T * G, C/G, K/G]``; ``tiles`` the usual number of tiles per
    call (oneDNN picks its weight layout for that shape; other counts still run correctly).
    """

    def __init__(self, u: torch.Tensor, tiles: int):
        self.blocks, self.cg, self.kg = u.shape
        self.u = u = u.detach()
        self.packed = None
        ops = onednn_ops() if u.device.type == "cpu" and u.dtype == torch.float32 else None
        if ops is not None and torch.backends.mkldnn.is_available():
            reorder, self._conv = ops
            w = u.permute(0, 2, 1).reshape(self.blocks * self.kg, self.cg, 1, 1)
            shape = [1, self.blocks * self.cg, max(1, tiles), 1]
            try:
                self.packed = reorder(w.contiguous(), [0, 0], [1, 1], [1, 1], self.blocks, shape)
            except RuntimeError:
                self.packed = None

    @property
    def backend(self) -> str:
        return "onednn" if self.packed is not None else "bmm"

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """``v``: contiguous ``[P, T * C]``; returns contiguous ``[P, T * K]``."""
        p = v.shape[0]
        if self.packed is not None:
            image = v.view(1, p, 1, -1).permute(0, 3, 1, 2)  # channels-last (1, T*C, P, 1)
            one, zero = [1, 1], [0, 0]
            y = self._conv(image, self.packed, None, zero, one, one, self.blocks, "none", [], "")
            return y.permute(0, 2, 3, 1).reshape(p, -1)
        m = torch.bmm(v.view(p, self.blocks, self.cg).transpose(0, 1), self.u)
        return m.transpose(0, 1).reshape(p, -1)
