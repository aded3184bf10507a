"""CP of a conv kernel: leanconv's CP-ALS against ``tensorly.decomposition.parafac``.

Default problem: a 512x512x3x3 float64 kernel with N(0, 1) entries (seed 0), rank 256.

What is compared, exactly:

1. Both start from the *same* initial factors (leanconv's ``init="svd"``: leading singular vectors
   of each unfolding, seeded random columns beyond a mode's size), passed to TensorLy as a
   ``CPTensor``, and run plain ALS (leanconv with ``ridge=0``, TensorLy with ``l2_reg=0``), the
   same mode order and no line search. So after the same number of sweeps they hold the same
   factors up to round-off, and the error at equal sweeps must agree (printed): time-to-equal-
   error is time-per-sweep.
2. TensorLy's time per sweep is the median of the gaps between its per-sweep callbacks over
   ``--tl-iters`` sweeps (a full 100-sweep TensorLy run takes minutes here; its 100-sweep time is
   reported as measured set-up + 100 x median sweep, and marked as extrapolated).
3. leanconv runs the full ``--iters`` sweeps ``--repeats`` times (median wall time), with its
   per-sweep error and degeneracy checks on; plus the default ``ridge`` run for the error it gets.

Both use 2 threads (torch's intra-op pool; OpenBLAS for TensorLy's NumPy backend, its default and
faster than its PyTorch backend here). The machine is shared, so medians, and both timed in the
same run.

    .venv/bin/python benchmarks/bench_cp.py                   # ~3-5 minutes on 2 cores
    .venv/bin/python benchmarks/bench_cp.py --size 128 --rank 64 --tl-iters 10   # quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from leanconv.decompose.cp import _initial, cp_als
from leanconv.decompose.factors import CPFactors


def _problem(args):
    torch.set_num_threads(args.threads)
    n, k, r = args.size, args.kernel, args.rank
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, n, k, k, generator=gen, dtype=torch.float64)
    t0 = time.perf_counter()
    init = _initial(w, r, "svd", 0, None)  # deterministic: the same in both processes
    return w, init, time.perf_counter() - t0


def run_tensorly(args) -> dict:
    import tensorly as tl
    from tensorly.cp_tensor import CPTensor
    from tensorly.decomposition import parafac

    tl.set_backend("numpy")
    w, init, _ = _problem(args)
    x = w.numpy()
    tl_init = CPTensor((np.ones(args.rank), [f.numpy().copy() for f in init]))
    stamps: list[float] = []

    def callback(_cp, _rec_error):
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    cp_tl = parafac(x, args.rank, n_iter_max=args.tl_iters, init=tl_init, tol=1e-300,
                    callback=callback)  # fmt: skip
    total = time.perf_counter() - start
    gaps = np.diff([start, *stamps])
    error = float(np.linalg.norm(x - tl.cp_to_tensor(cp_tl)) / np.linalg.norm(x))
    return {"total": total, "sweeps": gaps.tolist(), "setup": total - float(gaps.sum()),
            "error": error}  # fmt: skip


def run_leanconv(args) -> dict:
    w, init, t_init = _problem(args)
    init_cp = CPFactors(*init)
    same = cp_als(w, args.rank, args.tl_iters, tol=0.0, init=init_cp, ridge=0.0)
    times, result = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = cp_als(w, args.rank, args.iters, tol=0.0, init=init_cp, ridge=0.0)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    guarded = cp_als(w, args.rank, args.iters, tol=0.0, init=init_cp)
    t_guarded = time.perf_counter() - t0
    return {
        "init": t_init,
        "same_error": same.relative_error,
        "times": times,
        "error": result.relative_error,
        "ratio": result.norm_ratio,
        "degenerate": result.degenerate,
        "guarded_time": t_guarded,
        "guarded_error": guarded.relative_error,
        "guarded_ratio": guarded.norm_ratio,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="K = C")
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--rank", type=int, default=256)
    p.add_argument("--iters", type=int, default=100, help="leanconv sweeps")
    p.add_argument("--tl-iters", type=int, default=4, help="TensorLy sweeps timed")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--part", choices=["tensorly", "leanconv"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part:
        run = run_tensorly if args.part == "tensorly" else run_leanconv
        print(json.dumps(run(args)))
        return
    # Each contender in its own process: idle OpenBLAS and OpenMP pools spin for a while after
    # work and would steal the 2 cores from the other.
    shape = f"({args.size}, {args.size}, {args.kernel}, {args.kernel})"
    print(f"kernel {shape} float64 N(0,1), rank {args.rank}, {args.threads} threads")
    res = {}
    for part in ("tensorly", "leanconv"):
        cmd = [sys.executable, __file__, "--part", part] + sys.argv[1:]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res[part] = json.loads(done.stdout.strip().splitlines()[-1])
    tl_, lc = res["tensorly"], res["leanconv"]
    sweeps = tl_["sweeps"][1:] if len(tl_["sweeps"]) > 2 else tl_["sweeps"]
    tl_sweep = statistics.median(sweeps)
    ours = statistics.median(lc["times"])
    ours_sweep = ours / args.iters
    print(f"svd init (the same for both): {lc['init']:.2f} s")
    print(
        f"tensorly parafac {args.tl_iters:3d} sweeps: {tl_['total']:7.2f} s, median sweep "
        f"{tl_sweep:.3f} s, rel. error {tl_['error']:.6f}"
    )
    print(
        f"leanconv cp_als  {args.tl_iters:3d} sweeps: rel. error {lc['same_error']:.6f} "
        f"(|difference| {abs(lc['same_error'] - tl_['error']):.1e})"
    )
    print(
        f"leanconv cp_als  {args.iters:3d} sweeps: median {ours:7.2f} s of "
        f"{[round(t, 2) for t in lc['times']]} ({ours_sweep:.3f} s/sweep), rel. error "
        f"{lc['error']:.6f}, norm ratio {lc['ratio']:.3f}, degenerate {lc['degenerate']}"
    )
    print(
        f"leanconv default ridge, {args.iters} sweeps: {lc['guarded_time']:.2f} s, rel. error "
        f"{lc['guarded_error']:.6f}, norm ratio {lc['guarded_ratio']:.3f}"
    )
    tl_full = tl_["setup"] + lc["init"] + args.iters * tl_sweep
    print(
        f"per sweep: tensorly {tl_sweep:.3f} s / leanconv {ours_sweep:.3f} s = "
        f"{tl_sweep / ours_sweep:.1f}x"
    )
    print(
        f"{args.iters} sweeps incl. init: tensorly ~{tl_full:.1f} s (extrapolated) / leanconv "
        f"{ours + lc['init']:.2f} s = {tl_full / (ours + lc['init']):.1f}x "
        "(equal sweeps from the same start give equal error)"
    )


if __name__ == "__main__":
    main()
