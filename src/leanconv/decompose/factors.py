"""Factor containers of decomposed convolution kernels, and their dense reconstructions.

Pure data: a container holds the factor tensors of one kernel ``W`` of shape ``(K, C, kh, kw)``
(output channels, input channels, kernel height, kernel width), checks that their shapes agree,
and rebuilds ``W`` (:meth:`to_dense`). The decompositions that produce them live beside this
module; the layers that run them in factorised form in :mod:`leanconv.nn.factorised`.

- :class:`CPFactors` (canonical polyadic, rank ``R``; Lebedev et al. 2015)::

      W[k, c, i, j] = sum_r lambda[r] U_out[k, r] U_in[c, r] U_h[i, r] U_w[j, r]

  the layout of TensorLy's ``CPTensor(weights, [U_out, U_in, U_h, U_w])`` of the kernel.
- :class:`Tucker2Factors` (Tucker-2 over the channel modes, ranks ``R_out, R_in``; Kim et al.
  2016)::

      W[k, c, i, j] = sum_{s, r} core[s, r, i, j] U_out[k, s] U_in[c, r]

  the layout of TensorLy's ``partial_tucker(W, modes=[0, 1])``: ``core, [U_out, U_in]``.
- :class:`TTFactors` (tensor train, ranks ``r1, r2, r3``; Oseledets 2011) of the kernel with its
  modes ordered ``(C, kh, kw, K)``, i.e. of ``W.permute(1, 2, 3, 0)``::

      W[k, c, i, j] = G1[0, c, :] @ G2[:, i, :] @ G3[:, j, :] @ G4[:, k, 0]

  with cores ``G1 (1, C, r1)``, ``G2 (r1, kh, r2)``, ``G3 (r2, kw, r3)``, ``G4 (r3, K, 1)``: the
  list TensorLy's ``tensor_train(W.permute(1, 2, 3, 0), rank=[1, r1, r2, r3, 1])`` returns. This
  order makes the train a chain of convolutions: 1x1 ``C -> r1``, ``kh x 1`` ``r1 -> r2``,
  ``1 x kw`` ``r2 -> r3``, 1x1 ``r3 -> K`` (CP is the special case of diagonal middle cores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _need(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {message}")


@dataclass(frozen=True, eq=False)
class CPFactors:
    """Rank-``R`` CP factors of a ``(K, C, kh, kw)`` kernel; ``weights`` (R,) optional."""

    output: Tensor  # (K, R)
    input: Tensor  # (C, R)
    height: Tensor  # (kh, R)
    width: Tensor  # (kw, R)
    weights: Tensor | None = None  # (R,), lambda; None means ones

    def __post_init__(self) -> None:
        named = {"output": self.output, "input": self.input, "height": self.height}
        named["width"] = self.width
        for arg, t in named.items():
            _need(t.dim() == 2, "CPFactors", f"{arg} must be 2-D (size, rank), got {_shape(t)}")
        ranks = {arg: t.shape[1] for arg, t in named.items()}
        _need(len(set(ranks.values())) == 1, "CPFactors", f"factor ranks differ: {ranks}")
        if self.weights is not None:
            _need(
                _shape(self.weights) == (self.rank,),
                "CPFactors",
                f"weights shape {_shape(self.weights)} != ({self.rank},)",
            )

    @property
    def rank(self) -> int:
        return self.output.shape[1]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The kernel's shape ``(K, C, kh, kw)``."""
        return (
            self.output.shape[0],
            self.input.shape[0],
            self.height.shape[0],
            self.width.shape[0],
        )

    def scaled_output(self) -> Tensor:
        """``U_out * lambda``: the output factor with the weights folded in."""
        return self.output if self.weights is None else self.output * self.weights

    def to_dense(self) -> Tensor:
        return cp_to_dense(self)


@dataclass(frozen=True, eq=False)
class Tucker2Factors:
    """Tucker-2 factors of a ``(K, C, kh, kw)`` kernel: ``core (R_out, R_in, kh, kw)``."""

    core: Tensor  # (R_out, R_in, kh, kw)
    output: Tensor  # (K, R_out)
    input: Tensor  # (C, R_in)

    def __post_init__(self) -> None:
        where = "Tucker2Factors"
        _need(self.core.dim() == 4, where, f"core must be 4-D, got {_shape(self.core)}")
        _need(self.output.dim() == 2, where, f"output must be 2-D, got {_shape(self.output)}")
        _need(self.input.dim() == 2, where, f"input must be 2-D, got {_shape(self.input)}")
        _need(
            self.output.shape[1] == self.core.shape[0],
            where,
            f"output {_shape(self.output)} rank != core {_shape(self.core)} dim 0",
        )
        _need(
            self.input.shape[1] == self.core.shape[1],
            where,
            f"input {_shape(self.input)} rank != core {_shape(self.core)} dim 1",
        )

    @property
    def ranks(self) -> tuple[int, int]:
        """``(R_out, R_in)``, in the order of the kernel's modes."""
        return (self.core.shape[0], self.core.shape[1])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.output.shape[0], self.input.shape[0], self.core.shape[2], self.core.shape[3])

    def to_dense(self) -> Tensor:
        return tucker2_to_dense(self)


@dataclass(frozen=True, eq=False)
class TTFactors:
    """Tensor-train cores of a ``(K, C, kh, kw)`` kernel in mode order ``(C, kh, kw, K)``."""

    cores: tuple[Tensor, Tensor, Tensor, Tensor]  # (1,C,r1), (r1,kh,r2), (r2,kw,r3), (r3,K,1)

    def __post_init__(self) -> None:
        where = "TTFactors"
        cores = tuple(self.cores)
        object.__setattr__(self, "cores", cores)
        _need(len(cores) == 4, where, f"needs 4 cores (C, kh, kw, K), got {len(cores)}")
        shapes = [_shape(g) for g in cores]
        _need(all(len(s) == 3 for s in shapes), where, f"cores must be 3-D, got {shapes}")
        _need(shapes[0][0] == 1 and shapes[3][2] == 1, where, f"boundary ranks must be 1: {shapes}")
        for a, b in zip(shapes, shapes[1:], strict=False):
            _need(a[2] == b[0], where, f"ranks of neighbouring cores differ: {shapes}")

    @property
    def ranks(self) -> tuple[int, int, int]:
        """The inner ranks ``(r1, r2, r3)``."""
        return (self.cores[0].shape[2], self.cores[1].shape[2], self.cores[2].shape[2])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        g1, g2, g3, g4 = self.cores
        return (g4.shape[1], g1.shape[1], g2.shape[1], g3.shape[1])

    def to_dense(self) -> Tensor:
        return tt_to_dense(self)


def cp_to_dense(f: CPFactors) -> Tensor:
    """``W[k, c, i, j] = sum_r lambda[r] U_out[k, r] U_in[c, r] U_h[i, r] U_w[j, r]``."""
    return torch.einsum("kr,cr,ir,jr->kcij", f.scaled_output(), f.input, f.height, f.width)


def tucker2_to_dense(f: Tucker2Factors) -> Tensor:
    """``W[k, c, i, j] = sum_{s, r} core[s, r, i, j] U_out[k, s] U_in[c, r]``."""
    return torch.einsum("srij,ks,cr->kcij", f.core, f.output, f.input)


def tt_to_dense(f: TTFactors) -> Tensor:
    """``W[k, c, i, j] = G1[0, c] G2[:, i] G3[:, j] G4[:, k, 0]`` (a product of matrices)."""
    g1, g2, g3, g4 = f.cores
    return torch.einsum("ca,aib,bjd,dk->kcij", g1[0], g2, g3, g4[:, :, 0])


__all__ = [
    "CPFactors",
    "TTFactors",
    "Tucker2Factors",
    "cp_to_dense",
    "tt_to_dense",
    "tucker2_to_dense",
]
