"""The per-method, per-rank table of a trained model's convolutions, from a compress report.

Reads ``report.json`` written by ``leanconv compress`` / ``leanconv demo`` (every candidate the
planner measured) and prints a markdown table: MACs ratio, weight error, layer output error,
measured layer latency ratio and sensitivity, per layer, method and rank.

    .venv/bin/python benchmarks/decompose_table.py demo-out/report.json [--layers 4]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("report")
    p.add_argument("--layers", type=int, default=0, help="only the first N layers (0: all)")
    args = p.parse_args()
    with open(args.report) as f:
        plan = json.load(f)["plan"]
    print("| layer | method | rank | MACs ratio | weight error | output error | latency ratio "
          "| sensitivity (KL) | chosen |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    names = list(plan["candidates"])
    for name in names[: args.layers or None]:
        cands = plan["candidates"][name]
        keep = cands[0]
        chosen = plan["layers"][name]
        for c in cands[1:]:
            mark = "yes" if (c["method"], c["rank"]) == (chosen["method"], chosen["rank"]) else ""
            macs = c["macs"] / keep["macs"]
            latency = c["latency_ms"] / keep["latency_ms"]
            out_err = c.get("output_error", float("nan"))
            print(
                f"| {name} | {c['method']} | {c['rank']} | {macs:.3f} | {c['weight_error']:.3f} "
                f"| {out_err:.3f} | {latency:.2f} | {c['sensitivity']:.4f} | {mark} |"
            )


if __name__ == "__main__":
    main()
