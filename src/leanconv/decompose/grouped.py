"""Grouped convolutions, decomposed group by group.

A grouped kernel ``W`` of shape ``(K, C/g, kh, kw)`` (``groups = g``) is block diagonal: group
``i`` maps input channels ``[i C/g, (i+1) C/g)`` to output channels ``[i K/g, (i+1) K/g)`` with
the slice ``W[i K/g : (i+1) K/g]``. Each group is decomposed on its own, with the same rank, and
the results are kept as a tuple, :class:`GroupedFactors`, one container per group.

Why a tuple and not one block-diagonal factor set: block-diagonal factors store (and a dense
implementation multiplies) ``g`` times more zeros than numbers, while equal per-group ranks let
each factor of the chain run as one grouped convolution with ``groups=g`` (for Tucker-2: 1x1
``C -> g R_in`` in ``g`` groups, the core ``g R_in -> g R_out`` in ``g`` groups, 1x1
``g R_out -> K`` in ``g`` groups; concatenate the groups' factors along the rank dimension).
:meth:`GroupedFactors.to_dense` rebuilds the grouped kernel ``(K, C/g, kh, kw)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._common import check_int, where
from ._errors import InvalidWeightError


@dataclass(frozen=True, eq=False)
class GroupedFactors:
    """The factor containers of the ``g`` groups of a grouped kernel, in group order."""

    groups: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        if not self.groups:
            raise ValueError("GroupedFactors: needs at least one group")

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int):
        return self.groups[i]

    @property
    def shape(self) -> tuple[int, ...]:
        """The grouped kernel's shape ``(K, C/g, ...)``."""
        first = tuple(self.groups[0].shape)
        return (first[0] * len(self.groups), *first[1:])

    def to_dense(self) -> Tensor:
        """The grouped kernel: the groups' dense kernels stacked along the output channels."""
        return torch.cat([g.to_dense() for g in self.groups], dim=0)


def split_groups(weight: Tensor, groups, name: str | None) -> list[Tensor]:
    """The ``groups`` output-channel slices of a grouped kernel ``(K, C/g, ...)``."""
    g = check_int(groups, "groups", name)
    k = weight.shape[0]
    if k % g:
        raise InvalidWeightError(
            f"{where(name)}weight has {k} output channels, not divisible by groups={g}"
        )
    return list(weight.split(k // g, dim=0))


def per_group(
    weight: Tensor, groups, name: str | None, decompose: Callable[[Tensor, str | None], Any]
):
    """``decompose(weight, name)`` when ``groups == 1``; else :class:`GroupedFactors` of
    ``decompose`` applied to each group (named ``"<name>[group i]"`` in messages)."""
    if groups == 1 and not isinstance(groups, bool):
        return decompose(weight, name)
    parts = split_groups(weight, groups, name)
    label = name or "weight"
    return GroupedFactors(
        tuple(decompose(part, f"{label}[group {i}]") for i, part in enumerate(parts))
    )
