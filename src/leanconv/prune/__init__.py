"""Channel pruning of convolution pairs: fewer channels between two convolutions, both left dense.

- :mod:`.pairs`: the pairs of a model whose inner channels can be removed (found in the traced
  ``forward``);
- :mod:`.channels`: which channels to keep and the second convolution refitted on them by least
  squares, from the Gram matrix of its input on calibration data (pure functions on tensors);
- :mod:`.apply`: a model with chosen pairs pruned.

A pruned pair stays two dense convolutions with fewer channels, which run at nearly the rate of
the original layers (docs/benchmarks.md, "Channel pruning of convolution pairs"), where a
low-rank decomposition's thin factors run at a third to two thirds of it.
"""

from .apply import PairOutcome, PruneResult, pair_grams, prune_pairs
from .channels import channel_energy, input_gram, refit_weight, select_channels
from .pairs import Pair, disjoint, find_pairs

#: The method name a pruned pair's layers carry in plans, reports and ``--methods``.
PRUNE = "prune"

__all__ = [
    "PRUNE",
    "Pair",
    "PairOutcome",
    "PruneResult",
    "channel_energy",
    "disjoint",
    "find_pairs",
    "input_gram",
    "pair_grams",
    "prune_pairs",
    "refit_weight",
    "select_channels",
]
