"""Rich tables shared by the commands that report a before/after comparison."""

from __future__ import annotations


def before_after_table(result):
    from rich.table import Table

    b, a = result.before, result.after
    table = Table(title="before / after (measured on this machine, medians)")
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="left" if not col else "right")
    unit = "%" if b.metric_name in ("accuracy", "top5") else ""
    table.add_row(f"test {b.metric_name}", f"{b.metric:.2f}{unit}", f"{a.metric:.2f}{unit}",
                  f"{a.metric - b.metric:+.2f} points")  # fmt: skip
    table.add_row(
        "parameters", f"{b.params:,}", f"{a.params:,}", f"{b.params / a.params:.2f}x fewer"
    )
    table.add_row("MACs / image", f"{b.macs:,}", f"{a.macs:,}", f"{b.macs / a.macs:.2f}x fewer")
    for bs in sorted(a.latency_ms):
        before, after = f"{b.latency_ms[bs]:.2f} ms", f"{a.latency_ms[bs]:.2f} ms"
        ratio = result.speedup[bs]
        change = f"{ratio:.2f}x faster" if ratio >= 1 else f"[red]{ratio:.2f}x: slower[/]"
        table.add_row(f"latency, batch {bs}", before, after, change)
    for bs, ratio in sorted(result.speedup_over_baseline.items()):
        table.add_row(f"  original in the same form, batch {bs}",
                      f"{result.baseline.latency_ms[bs]:.2f} ms", "", f"{ratio:.2f}x")  # fmt: skip
    table.add_row("predicted speedup", "", "", f"{result.plan.predicted_speedup:.2f}x")
    return table
