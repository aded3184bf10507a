"""What planning costs: seconds, and seconds per forward pass of the original at the planning
batch; and what local sensitivities change.

For each model: the planner's candidates (``planning.build_candidates``: rewrites, aligned ranks,
Winograd variants, latencies at the planning batch, sensitivities on the calibration images),
then the closed loop for a 2x speedup (``planning.plan_for_speedup``), timed together; the cost
is ``planning seconds / (latency of the original at the planning batch)``. With ``--compare``
(the demo's trained model, ``demo-out/reference.safetensors`` from ``make demo``), the plan is
also made with every sensitivity measured on the whole model and the two are compared: the rank
agreement (Spearman) of local and whole-model sensitivities within each layer, and the summed
whole-model sensitivity of each plan.

    .venv/bin/python benchmarks/bench_planning.py --model demo --compare
    .venv/bin/python benchmarks/bench_planning.py --model user64
    .venv/bin/python benchmarks/bench_planning.py --model resnet50 --size 224 --batch 16 \\
        --calibration 32
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch

from leanconv import zoo
from leanconv.bench.allocator import retain_freed_memory
from leanconv.compress.planning import build_candidates, plan_for_speedup, within_error
from leanconv.cost import count

ROOT = Path(__file__).resolve().parent


def _model(name: str):
    """(model, input size, classes)."""
    if name == "demo":
        model = zoo.create("resnet18_cifar", num_classes=10, width=0.5)
        weights = ROOT.parent / "demo-out" / "reference.safetensors"
        if weights.exists():
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(weights)))
        return model, 32, 10
    if name == "user64":  # the 16-layer user-style model of bench_byo.py
        spec = importlib.util.spec_from_file_location("bench_byo", ROOT / "bench_byo.py")
        byo = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(byo)
        namespace: dict = {}
        exec(compile(byo.NET_PY, "net.py", "exec"), namespace)  # the user's file, as written
        return namespace["build"](num_classes=5), 64, 5
    return zoo.create(name), 224, 1000


def _spearman(a: list[float], b: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for i, j in enumerate(order):
            r[j] = float(i)
        return r

    ra, rb = ranks(a), ranks(b)
    return statistics.correlation(ra, rb) if len(a) > 2 else float("nan")


def _plan(model, calibration, args, local: bool):
    t0 = time.perf_counter()
    cands, fixed, total = build_candidates(model, calibration, batch=args.batch, align=8,
                                           repeats=3, local=local)  # fmt: skip
    cands = within_error(cands, 0.9)  # what surgery would not roll back (the pipeline's default)
    macs = count(model, calibration[:1]).total.macs
    plan = plan_for_speedup(model, cands, fixed, total, macs, 2.0, calibration, args.batch,
                            repeats=3, log=print)  # fmt: skip
    return plan, cands, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="demo", help="demo, user64, or a zoo name (resnet50)")
    p.add_argument("--size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--batch", type=int, default=64, help="planning batch")
    p.add_argument("--calibration", type=int, default=64)
    p.add_argument("--local", action="store_true", help="local sensitivities (default: both "
                   "with --compare, else local for models over 1 GMAC per image)")  # fmt: skip
    p.add_argument("--compare", action="store_true", help="also plan with full sensitivities")
    args = p.parse_args()
    torch.set_num_threads(2)
    retain_freed_memory()
    torch.manual_seed(0)
    model, size, _ = _model(args.model)
    model.eval()
    size = args.size or size
    if args.model == "demo":  # the digits it was trained on
        from leanconv.data import digits
        from leanconv.data.batches import first_inputs

        calibration = first_inputs(digits(seed=0).train, args.calibration, where="digits")
    else:  # an untrained model: random inputs time the same as real ones
        calibration = torch.randn(args.calibration, 3, size, size)
    macs = count(model, calibration[:1]).total.macs
    local = args.local or args.compare or macs >= 1e9
    plan, cands, seconds = _plan(model, calibration, args, local)
    forward_s = plan.total_before_ms / 1000
    print(
        f"{args.model} at {size}x{size}, {macs / 1e9:.2f} GMACs per image, "
        f"{len(cands)} layers, {sum(len(c) for c in cands.values())} candidates, planning "
        f"batch {args.batch}, {args.calibration} calibration images, "
        f"{'local' if local else 'whole-model'} sensitivities: planned in {seconds:.0f} s = "
        f"{seconds / forward_s:,.0f} forward passes of {forward_s * 1000:.1f} ms; plan "
        f"{plan.predicted_speedup:.2f}x assembled, {len(plan.rewrites())} layers rewritten"
    )
    if not args.compare:
        return
    full, full_cands, full_s = _plan(model, calibration, args, False)
    print(f"whole-model sensitivities: planned in {full_s:.0f} s = {full_s / forward_s:,.0f} "
          f"forward passes; plan {full.predicted_speedup:.2f}x")  # fmt: skip
    rhos = []
    for name, cs in cands.items():
        truth = {c.key: c.sensitivity for c in full_cands[name]}
        pairs = [(c.sensitivity, truth[c.key]) for c in cs
                 if c.method != "keep" and c.algorithm == "direct" and c.key in truth]  # fmt: skip
        if len(pairs) > 2:
            rhos.append(_spearman([a for a, _ in pairs], [b for _, b in pairs]))
    print(
        f"rank agreement of local and whole-model sensitivities within a layer: median "
        f"Spearman {statistics.median(rhos):.2f} (min {min(rhos):.2f}) over {len(rhos)} layers"
    )
    truth = {(n, c.key): c for n, cs in full_cands.items() for c in cs}
    local_sum = sum(truth[(n, c.key)].sensitivity for n, c in plan.choices.items())
    full_sum, full_se = full.sensitivity
    print(f"summed whole-model sensitivity: the local plan's {local_sum:.4f} nats, the "
          f"whole-model plan's {full_sum:.4f} +- {full_se:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
