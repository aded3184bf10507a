"""The demo's compression run several times: how its measured speedup compares with its MACs
reduction from one run to the next.

Each run is the whole ``leanconv demo`` (training, planning, fine-tuning, measuring) in a fresh
process with a fresh measurement cache (``LEANCONV_CACHE_DIR``), so its plan is made from its own
timings, as a user's first run would be; its saved model is then re-timed against the original
by ``bench_saved.py`` (interleaved medians, ``--rounds`` rounds); its log is kept beside it
(``runN.log``). Per run it prints the plan's
predicted speedup, the pipeline's own measurement, the re-timed median, the MACs reduction and
the re-timed speedup divided by it (the rate); then the median rate over the runs and how many
runs reached ``--goal``. A plan is made from latencies measured on a shared machine, so two runs
can choose different plans: the spread of this table is part of what it measures.

    .venv/bin/python benchmarks/bench_demo_rate.py [--runs 3] [--rounds 5] [--keep DIR]

About 6 minutes per run on the 2-core test machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEDIAN = re.compile(r"median of \d+: speedup ([0-9.]+)x")


def one_run(out: Path, speedup: float, rounds: int) -> dict:
    """One demo run into ``out`` and its re-timing: the figures of the table's row."""
    env = dict(os.environ, LEANCONV_CACHE_DIR=tempfile.mkdtemp(prefix="leanconv-cache-"))
    leanconv = Path(sys.executable).with_name("leanconv")
    with open(out.with_suffix(".log"), "w") as log:  # the run's own account, beside it
        subprocess.run([str(leanconv), "demo", "--out", str(out), "--force", "--speedup",
                        str(speedup)], env=env, check=True, stdout=log,
                       stderr=subprocess.STDOUT)  # fmt: skip
    timed = subprocess.run([sys.executable, str(HERE / "bench_saved.py"), str(out), "--rounds",
                            str(rounds)], env=env, check=True, capture_output=True,
                           text=True)  # fmt: skip
    found = MEDIAN.search(timed.stdout)
    if found is None:
        raise SystemExit(f"bench_saved.py printed no median:\n{timed.stdout}\n{timed.stderr}")
    report = json.loads((out / "report.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    macs = report["before"]["macs"] / report["after"]["macs"]
    retimed = float(found.group(1))
    narrowest = min((min(c["rank"]) if isinstance(c["rank"], list) else c["rank"])
                    for c in plan["layers"].values() if c["rank"] is not None)  # fmt: skip
    return {"predicted": plan["predicted_speedup"], "pipeline": report["speedup"],
            "retimed": retimed, "macs": macs, "rate": retimed / macs,
            "narrowest": narrowest}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="bench_saved.py rounds per run")
    p.add_argument("--speedup", type=float, default=2.5, help="the demo's target")
    p.add_argument("--goal", type=float, default=0.9, help="the rate each run is held to")
    p.add_argument("--keep", type=Path, help="write the runs' outputs here (else a temp dir)")
    args = p.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-demo-rate-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{args.runs} demo runs, target {args.speedup}x, outputs in {root}")
    print("run  predicted  pipeline  re-timed  MACs reduction  rate  narrowest width")
    rates = []
    for i in range(args.runs):
        row = one_run(root / f"run{i + 1}", args.speedup, args.rounds)
        rates.append(row["rate"])
        print(f"{i + 1:>3}  {row['predicted']:8.2f}x  {row['pipeline']:7.2f}x  "
              f"{row['retimed']:7.2f}x  {row['macs']:13.2f}x  {row['rate']:4.2f}  "
              f"{row['narrowest']:>15}", flush=True)  # fmt: skip
    met = sum(r >= args.goal for r in rates)
    print(f"median rate {statistics.median(rates):.2f} over {len(rates)} runs; "
          f"{met} of {len(rates)} at or above {args.goal}")  # fmt: skip


if __name__ == "__main__":
    main()
