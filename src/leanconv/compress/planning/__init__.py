"""Planning: which rewrite and which algorithm each layer gets, measured on this machine.

The steps, each its own module, in the order a plan is made:

- :mod:`.targets`: what the plan aims at (:class:`Speedup`, :class:`MacsRatio`, :class:`MaxDrop`);
- :mod:`.candidates`: every way each layer could run (rewrites, then algorithm variants), with
  its latency (:mod:`.latency`, a shape-keyed table) and its sensitivity (:mod:`.sensitivity`);
  :mod:`.pair_candidates`: each prunable pair of convolutions pruned (:mod:`leanconv.prune`);
- :mod:`.allocate`: one candidate per layer, chosen together for a budget (Lagrangian relaxation
  with the one-standard-error rule of :mod:`.capacity`), a pruned pair's two layers as one unit
  (:mod:`.units`);
- :mod:`.closed_loop` (a speedup target: the assembled model timed, re-planned) and
  :mod:`.accuracy_budget` (an accuracy target: trials with a short fine-tune), each returning a
  new :class:`Plan`;
- :mod:`.plan`: the frozen :class:`Plan` and its :class:`Candidate` s, with ``to_json`` /
  ``from_json``.
"""

from .accuracy_budget import plan_for_accuracy
from .allocate import allocate
from .candidates import (
    DEFAULT_METHODS,
    DEFAULT_RATIOS,
    PRUNE,
    build_candidates,
    planned_method,
    within_error,
)
from .closed_loop import plan_for_speedup
from .plan import Candidate, Plan
from .targets import DEFAULT_TARGET, MacsRatio, MaxDrop, Speedup, Target, target_from

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_RATIOS",
    "DEFAULT_TARGET",
    "Candidate",
    "MacsRatio",
    "MaxDrop",
    "PRUNE",
    "Plan",
    "Speedup",
    "Target",
    "allocate",
    "build_candidates",
    "planned_method",
    "within_error",
    "plan_for_accuracy",
    "plan_for_speedup",
    "target_from",
]
