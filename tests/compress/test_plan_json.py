"""A plan reads back from its JSON as it was written (a resumed run continues from it), with the
time it took to make in forward passes of the original."""

import dataclasses

import pytest

from leanconv.compress.planning import Candidate, Plan, allocate


def _plan() -> Plan:
    cands = {
        "a": [Candidate("a", "keep", None, 100, 1, 8.0, 0.0),
              Candidate("a", "tucker2", (8, 16), 10, 1, 2.0, 0.01, kl_samples=(0.0, 0.02))],
        "b": [Candidate("b", "keep", None, 100, 1, 12.0, 0.0),
              Candidate("b", "spatial_svd", 24, 10, 1, 6.0, 0.02, algorithm="winograd4",
                        kl_samples=(0.01, 0.03))],
    }  # fmt: skip
    plan = allocate(cands, 2.0, 22.0, 400, speedup=2.0)
    return plan.replace(planning_seconds=12.0, assembled_ms=10.0, original_ms=22.0)


def test_plan_round_trips_through_json():
    plan = _plan()
    back = Plan.from_json(plan.to_json())
    assert back.as_dict() == plan.as_dict()
    assert back.choices["a"].rank == (8, 16) and isinstance(back.choices["a"].rank, tuple)
    assert back.rewrites() == plan.rewrites() and back.algorithms() == plan.algorithms()


def test_planning_cost_is_seconds_over_one_forward_pass():
    plan = _plan()
    assert plan.planning_cost == pytest.approx(12.0 / (22.0 / 1000))
    assert plan.as_dict()["planning_cost"] == pytest.approx(plan.planning_cost)
    assert plan.replace(planning_seconds=None).planning_cost is None


def test_plan_is_frozen():
    plan = _plan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.met = False
    noted = plan.with_note("x")
    assert noted.notes[-1] == "x" and "x" not in plan.notes
