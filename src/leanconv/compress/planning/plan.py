"""The planner's data: a :class:`Candidate` (one way to run one layer) and a :class:`Plan` (one
candidate per layer, with what it predicts), and their JSON form.

A plan is frozen: the closed loop and the accuracy search (:mod:`.closed_loop`,
:mod:`.accuracy_budget`) return new plans (``dataclasses.replace``) with what they measured, and
a plan written by :meth:`Plan.to_json` reads back equal by :meth:`Plan.from_json` (a resumed run
continues from it). Its predicted latency is

    predicted_ms = fixed_ms + sum over layers of the chosen candidate's latency_ms

and its predicted speedup ``total_before_ms / predicted_ms``, or, once the assembled model has
been timed, ``original_ms / assembled_ms``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field

from . import capacity

__all__ = ["KEEP", "Candidate", "Plan"]

#: The key (:attr:`Candidate.key`) of a layer's first candidate: the layer kept as it is.
KEEP = ("keep", None, "direct")


@dataclass
class Candidate:
    layer: str
    method: str  # "keep" for the original layer
    rank: object
    macs: int
    params: int
    latency_ms: float
    sensitivity: float  # KL(original || rewritten) on the calibration set, in nats
    weight_error: float = 0.0
    output_error: float = 0.0  # relative error of the layer's own output on calibration inputs
    algorithm: str = "direct"  # or a key of compress.algorithms.ALGORITHMS
    measured_sensitivity: float | None = None  # the KL as measured, before monotone_sensitivity
    sensitivity_se: float = 0.0  # standard error of the measured KL over the calibration images
    # the per-image KL of the measurement (what capacity.plan_sensitivity sums); not saved
    kl_samples: tuple[float, ...] | None = field(default=None, repr=False)
    # the other layer of a pruned pair (method "prune", :mod:`leanconv.prune`): the two are
    # chosen together (:mod:`.units`), each carrying half of the pair's sensitivity
    partner: str | None = None

    @property
    def label(self) -> str:
        """``keep``, ``tucker2 (12, 24)``, ``keep + winograd4``, ..."""
        text = self.method if self.rank is None else f"{self.method} {self.rank}"
        return text if self.algorithm == "direct" else f"{text} + {self.algorithm}"

    @property
    def key(self) -> tuple[str, object, str]:
        """``(method, rank, algorithm)``: what tells a layer's candidates apart."""
        return self.method, self.rank, self.algorithm

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("kl_samples")
        d["rank"] = list(self.rank) if isinstance(self.rank, tuple) else self.rank
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        """The inverse of :meth:`as_dict` (JSON lists back to tuples)."""
        d = dict(d)
        for key in ("rank", "kl_samples"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class Plan:
    choices: dict[str, Candidate]
    candidates: dict[str, list[Candidate]]
    fixed_ms: float  # latency of everything no candidate changes
    total_before_ms: float
    macs_before: int
    target: str
    met: bool
    notes: tuple[str, ...] = ()
    search: tuple[dict, ...] = ()  # trials of an accuracy-budget search
    # the planned model assembled and timed before fine-tuning (closed_loop.plan_for_speedup)
    assembled_ms: float | None = None
    original_ms: float | None = None
    # the standard error of the summed sensitivity as computed when planning (a plan read back
    # from JSON has no per-image divergences to compute it again)
    saved_sensitivity_se: float | None = None
    planning_seconds: float | None = None  # wall time of making the plan on this machine

    def replace(self, **changes) -> Plan:
        """A new plan with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def with_note(self, note: str) -> Plan:
        return self.replace(notes=(*self.notes, note))

    @property
    def predicted_ms(self) -> float:
        """Constant + the chosen layers' latencies, each measured alone."""
        return self.fixed_ms + sum(c.latency_ms for c in self.choices.values())

    @property
    def layer_sum_speedup(self) -> float:
        return self.total_before_ms / self.predicted_ms if self.predicted_ms else 1.0

    @property
    def predicted_speedup(self) -> float:
        """The assembled model's measured speedup where it was timed, else the layer sum's."""
        if self.assembled_ms and self.original_ms:
            return self.original_ms / self.assembled_ms
        return self.layer_sum_speedup

    @property
    def sensitivity(self) -> tuple[float, float]:
        """The chosen candidates' summed sensitivity and its standard error (nats)."""
        total, se = capacity.plan_sensitivity(self.choices.values())
        return total, se if self.saved_sensitivity_se is None else self.saved_sensitivity_se

    @property
    def macs_after(self) -> int:
        changed = sum(c.macs - self.candidates[n][0].macs for n, c in self.choices.items())
        return self.macs_before + changed

    @property
    def planning_cost(self) -> float | None:
        """Planning time in forward passes of the original at the planning batch:
        ``planning_seconds / (total_before_ms / 1000)``."""
        if self.planning_seconds is None or not self.total_before_ms:
            return None
        return self.planning_seconds / (self.total_before_ms / 1000)

    def rewrites(self) -> dict[str, tuple[str, object]]:
        return {n: (c.method, c.rank) for n, c in self.choices.items() if c.method != "keep"}

    def algorithms(self) -> dict[str, str]:
        """Layers whose convolutions run by a fast algorithm, and which one."""
        return {n: c.algorithm for n, c in self.choices.items() if c.algorithm != "direct"}

    def as_dict(self) -> dict:
        sensitivity, sensitivity_se = self.sensitivity
        return {
            "target": self.target,
            "met": self.met,
            "fixed_ms": self.fixed_ms,
            "total_before_ms": self.total_before_ms,
            "predicted_ms": self.predicted_ms,
            "predicted_speedup": self.predicted_speedup,
            "layer_sum_speedup": self.layer_sum_speedup,
            "assembled_ms": self.assembled_ms,
            "original_ms": self.original_ms,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "sensitivity": sensitivity,
            "sensitivity_se": sensitivity_se,
            "planning_seconds": self.planning_seconds,
            "planning_cost": self.planning_cost,
            "notes": list(self.notes),
            "search": list(self.search),
            "layers": {n: c.as_dict() for n, c in self.choices.items()},
            "candidates": {n: [c.as_dict() for c in cs] for n, cs in self.candidates.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        """The plan :meth:`as_dict` describes (the derived figures are computed again)."""
        cands = {n: [Candidate.from_dict(c) for c in cs] for n, cs in data["candidates"].items()}
        choices = {n: Candidate.from_dict(c) for n, c in data["layers"].items()}
        return cls(choices, cands, data["fixed_ms"], data["total_before_ms"],
                   data["macs_before"], data["target"], data["met"],
                   tuple(data.get("notes", ())), tuple(data.get("search", ())),
                   data.get("assembled_ms"), data.get("original_ms"),
                   data.get("sensitivity_se"), data.get("planning_seconds"))  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))
