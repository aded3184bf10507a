"""The registry of decomposition methods: one record per method, everything else reads it.

Each method is declared once, at the end of its own module (``cp.py``, ``tucker.py``, ``tt.py``,
``svd.py`` for ``spatial_svd`` and ``low_rank``, ``depthwise.py``), with :func:`register`. A
record says:

- ``name`` and ``aliases`` (other spellings accepted from users; reports use the name);
- ``chain(c, k, kh, kw, g, rank)``: the convolutions the method replaces a ``k x c x kh x kw``
  layer of ``g`` groups by, in order, as ``(c_in, c_out, kernel, part, groups)`` where ``part``
  says which of the layer's dimensions the factor convolves along (``"1x1"``, ``"h"``, ``"w"``,
  ``"full"``): :func:`leanconv.decompose.rank.factor_specs` turns it into ``ConvSpec``\\ s, and
  their cost is the chain's cost;
- ``budget_ranks(t, k, c, kh, kw)``: the rank at budget step ``t`` (per group) and the largest
  step, which :func:`leanconv.decompose.rank.budget_rank` searches;
- ``factorise(weight, rank, groups, name, seed)``: the factors of a float64 weight (a container
  with ``to_dense()``, the weight it stands for);
- ``weights(factors)``: one convolution weight per element of the chain (of one group);
- ``auto_rank(r_out, r_in)``: the rank from the ranks found for the output and input modes
  (energy or VBMF); ``None`` when the method has no such policy;
- ``channel_ranks``: whether the rank counts channels of the factors (what the planner aligns to
  multiples of 8), as for every method but ``depthwise`` (a depth multiplier).

Rank convention, one for every method: per group, in the order of the chain (Tucker-2:
``(R_out, R_in)``; TT: ``(r1, r2, r3)``; the depth multiplier for ``depthwise``).

Adding a method is one module that defines its factorisation and ends with ``register(Method(
...))``, imported in ``decompose/__init__.py``, plus its tests: ``--methods``, the planner,
``leanconv.decompose(...)``, the replacement layers and their cost all take it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._errors import InvalidRankError


@dataclass(frozen=True)
class Method:
    name: str
    chain: Callable  # (c, k, kh, kw, groups, rank) -> [(c_in, c_out, kernel, part, groups)]
    budget_ranks: Callable  # (t, k, c, kh, kw) -> (rank, largest t)
    factorise: Callable  # (weight float64, rank, groups, name, seed) -> factors
    weights: Callable  # (factors of one group) -> [conv weight per chain element]
    auto_rank: Callable | None = None  # (r_out, r_in) -> rank
    aliases: tuple[str, ...] = ()
    # the rank counts channels of the factor convolutions (the planner may align it to multiples
    # of 8); False where it is something else (the depth multiplier of ``depthwise``)
    channel_ranks: bool = True


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (its name and aliases must be new)."""
    taken = {method.name, *method.aliases} & (set(REGISTRY) | set(aliases()))
    if taken:
        raise ValueError(f"decomposition method names already registered: {sorted(taken)}")
    REGISTRY[method.name] = method
    return method


def names() -> tuple[str, ...]:
    """The registered methods' names, in the order they were registered."""
    return tuple(REGISTRY)


def aliases() -> dict[str, str]:
    """Every alias and the name it stands for."""
    return {alias: m.name for m in REGISTRY.values() for alias in m.aliases}


def canonical_method(name: str, where_: str = "method") -> str:
    """The registered name of ``name`` or of its alias; raises listing the valid ones."""
    key = str(name).strip().lower()
    if key in REGISTRY:
        return key
    others = aliases()
    if key in others:
        return others[key]
    listed = ", ".join(f"{a} = {m}" for a, m in others.items())
    raise InvalidRankError(
        f"{where_}: unknown decomposition method {name!r}; choose from {', '.join(names())} "
        f"(also accepted: {listed})"
    )


def get(name: str, where_: str = "method") -> Method:
    """The record of ``name`` (or of its alias)."""
    return REGISTRY[canonical_method(name, where_)]
