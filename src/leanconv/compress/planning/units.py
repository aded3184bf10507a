"""What the allocation chooses among: one layer's candidates, or a prunable pair's, taken together.

Pruning a pair (:mod:`leanconv.prune`) changes two layers at once: the producer computes fewer
channels and the consumer reads fewer, so neither can be pruned alone, and while pruned neither
can take another rewrite. The allocation (:mod:`.allocate`) therefore runs on units: a layer
without prune candidates is a unit with its own candidates; a pair whose layers carry prune
candidates (``partner`` set) is one unit, whose choices (:class:`PairChoice`) are

- the two layers rewritten independently: every combination of their other candidates on the
  Pareto set of (latency, sensitivity, MACs) of each layer. For a speedup or sensitivity target
  every objective the allocation minimises is a sum over layers that grows with latency and
  sensitivity and falls with the MACs kept (:mod:`.capacity`), so a candidate off that set is
  never the better choice, and the combinations stay a few hundred; for a MACs target the set
  is that of (sensitivity, MACs), fewer MACs being the budget's;
- the pair pruned to ``r`` channels: each combination of the producer's and the consumer's prune
  candidates of that ``r`` (their algorithms), on the same Pareto sets.

A choice's latency, MACs, parameters and sensitivity are the sums of its two layers' (the pair's
sensitivity is carried half by each, :mod:`.pair_candidates`); its per-image divergences are
summed too (a kept layer adds none), so the one-standard-error rule sees the pair as one
rewrite. :func:`expand` maps the units' choices back to one candidate per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .plan import Candidate

__all__ = ["PairChoice", "expand", "group", "pareto"]


@dataclass(frozen=True)
class PairChoice:
    """One choice for a pair's two layers: ``parts`` (the producer's candidate, the consumer's)."""

    layer: str  # the unit's name: "producer+consumer"
    parts: tuple[Candidate, Candidate]

    @property
    def method(self) -> str:
        return "keep" if all(p.method == "keep" for p in self.parts) else "pair"

    @property
    def rank(self):
        return tuple(p.rank for p in self.parts)

    @property
    def algorithm(self) -> str:
        return "direct"

    @property
    def key(self) -> tuple:
        return (self.method, tuple(p.key for p in self.parts), "direct")

    @property
    def macs(self) -> int:
        return sum(p.macs for p in self.parts)

    @property
    def params(self) -> int:
        return sum(p.params for p in self.parts)

    @property
    def latency_ms(self) -> float:
        return sum(p.latency_ms for p in self.parts)

    @property
    def sensitivity(self) -> float:
        return sum(p.sensitivity for p in self.parts)

    @property
    def sensitivity_se(self) -> float:
        return math.sqrt(sum(p.sensitivity_se**2 for p in self.parts))

    @property
    def kl_samples(self) -> tuple[float, ...] | None:
        """The per-image divergences of the two parts summed (a kept layer's are zero);
        ``None`` when a rewritten part has none."""
        rewritten = [p for p in self.parts if p.method != "keep"]
        if not rewritten or any(p.kl_samples is None for p in rewritten):
            return None
        n = len(rewritten[0].kl_samples)
        if any(len(p.kl_samples) != n for p in rewritten):
            return None
        return tuple(sum(vals) for vals in zip(*(p.kl_samples for p in rewritten), strict=True))


def _speed_keys(c) -> tuple:
    """What the speedup and sensitivity targets minimise: latency, sensitivity, MACs removed."""
    return (c.latency_ms, c.sensitivity, -c.macs)


def _macs_keys(c) -> tuple:
    """What a MACs target minimises: sensitivity, and MACs (its budget)."""
    return (c.sensitivity, c.macs)


def pareto(cands: list, keys=_speed_keys) -> list:
    """The candidates that no other is at least as good as in every one of ``keys`` (each
    minimised; by default latency, sensitivity and MACs kept) and better in one (in order)."""
    scored = [(c, keys(c)) for c in cands]

    def beaten(k) -> bool:
        return any(all(a <= b for a, b in zip(o, k, strict=True)) and o != k for _, o in scored)

    return [c for c, k in scored if not beaten(k)]


def _pair_choices(name: str, producer: list[Candidate], consumer: list[Candidate],
                  keys) -> list:  # fmt: skip
    """A pair's choices (see the module docstring), the first both layers kept."""
    first = PairChoice(name, (producer[0], consumer[0]))
    out = [first]
    plain_p = pareto([c for c in producer if c.method != "prune"], keys)
    plain_c = pareto([c for c in consumer if c.method != "prune"], keys)
    out += [PairChoice(name, (a, b)) for a in plain_p for b in plain_c
            if not (a is producer[0] and b is consumer[0])]  # fmt: skip
    ranks = dict.fromkeys(c.rank for c in producer if c.method == "prune")
    for rank in ranks:
        pruned_p = pareto([c for c in producer if c.method == "prune" and c.rank == rank], keys)
        pruned_c = pareto([c for c in consumer if c.method == "prune" and c.rank == rank], keys)
        out += [PairChoice(name, (a, b)) for a in pruned_p for b in pruned_c]
    return out


def group(candidates: dict[str, list[Candidate]], macs_budget: bool = False) -> dict[str, list]:
    """The allocation's units: each layer's candidates as they are, and each pair whose layers
    both carry prune candidates as one unit ``"producer+consumer"`` in the producer's place (its
    prune candidates name the consumer as ``partner``). ``macs_budget``: the target is a MACs
    budget, so a pair's combinations are taken on the Pareto sets of sensitivity and MACs (fewer
    is better there) instead of latency, sensitivity and MACs kept."""
    keys = _macs_keys if macs_budget else _speed_keys
    out: dict[str, list] = {}
    paired: set[str] = set()
    for name, cands in candidates.items():
        if name in paired:
            continue
        partner = next((c.partner for c in cands if c.method == "prune" and c.partner), None)
        if partner is None or partner not in candidates or partner in out:
            out[name] = [c for c in cands if c.method != "prune"]
            continue
        out[f"{name}+{partner}"] = _pair_choices(f"{name}+{partner}", cands, candidates[partner],
                                                 keys)  # fmt: skip
        paired |= {name, partner}
    return out


def expand(choice: dict, candidates: dict[str, list[Candidate]]) -> dict[str, Candidate]:
    """One candidate per layer of ``candidates`` (in its order) from the units' ``choice``."""
    per_layer: dict[str, Candidate] = {}
    for chosen in choice.values():
        parts = chosen.parts if isinstance(chosen, PairChoice) else (chosen,)
        per_layer.update({p.layer: p for p in parts})
    return {name: per_layer[name] for name in candidates}
