"""The markdown report of a compression run."""

from __future__ import annotations

from ..rewrite.residual import residual_sums


def _ms(d: dict, b: int) -> str:
    return f"{d[b]:.2f}" if b in d else "-"


def compress_report(result, model_name: str, data_name: str) -> str:
    b, a = result.before, result.after
    batches = sorted(a.latency_ms)
    label = b.metric_name + (" (%)" if b.metric_name in ("accuracy", "top5") else "")
    lines = [
        f"# leanconv compress: {model_name} on {data_name}",
        "",
        f"Target: {result.plan.target}. Predicted speedup {result.plan.predicted_speedup:.2f}x "
        f"(batch {max(batches) if batches else '-'}); measured below, in one harness, medians.",
        "",
        "| | before | after | ratio |",
        "|---|---:|---:|---:|",
        f"| test {label} | {b.metric:.2f} | {a.metric:.2f} | {a.metric - b.metric:+.2f} points |",
        f"| parameters | {b.params:,} | {a.params:,} | {a.params / b.params:.3f} |",
        f"| MACs per image | {b.macs:,} | {a.macs:,} | {a.macs / b.macs:.3f} |",
    ]
    lines += _latency_rows(result)
    lines += [
        "",
        f"Measured speedup at batch {max(batches)}: {result.speedup[max(batches)]:.2f}x; "
        f"MACs reduction {b.macs / a.macs:.2f}x; predicted {result.plan.predicted_speedup:.2f}x.",
        "",
        "## Per-layer plan",
        "",
        "| layer | method | rank | algorithm | MACs kept | latency before (ms) | after (ms) | "
        "sensitivity | output error | status |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += _plan_rows(result)
    lines += _search_section(result, label)
    if result.onnx_max_error is not None:
        lines.append(f"ONNX Runtime vs PyTorch, max abs difference: {result.onnx_max_error:.2e}.")
    lines += _finetune_section(result, label)
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    lines += [
        "",
        "Plots: `candidates.png` (latency vs sensitivity of every candidate, chosen marked), "
        "`layer_latency.png`, `ranks.png`. Model: `model/model.safetensors` + "
        "`model/model.json` (`leanconv.load`), `model.onnx`.",
        "",
    ]
    return "\n".join(lines)


def _latency_rows(result) -> list[str]:
    """The latency per batch size (slower ones marked), the layouts, and the original in the
    same deployment form."""
    b, a = result.before, result.after
    lines = []
    for bs in sorted(a.latency_ms):
        ratio = result.speedup[bs]
        change = f"{ratio:.2f}x faster |" if ratio >= 1 else f"**{ratio:.2f}x: slower** |"
        lines.append(f"| latency, batch {bs} (ms) | {_ms(b.latency_ms, bs)} | "
                     f"{_ms(a.latency_ms, bs)} | {change}")  # fmt: skip
    if b.latency_by_format and a.latency_by_format:
        lines += [
            "",
            f"Latency: each model measured in both memory layouts and given in its faster one "
            f"(before: {b.best_format()}, after: {a.best_format()}; both in `report.json`, "
            "`latency_by_format`).",
        ]
    over = result.speedup_over_baseline
    if over:
        lines += [
            "",
            "The original in the same deployment form (batch norms folded, ReLUs fused, "
            "convolutions packed, its faster layout): "
            + ", ".join(f"{result.baseline.latency_ms[bs]:.2f} ms at batch {bs}" for bs in over)
            + "; the plan's rewrites alone are "
            + ", ".join(f"{over[bs]:.2f}x (batch {bs})" for bs in over)
            + ".",
        ]
    return lines


def _plan_rows(result) -> list[str]:
    """One row per layer of the plan, then the surgery's and deployment's figures."""
    lines = []
    outcomes = {o.name: o for o in result.surgery.layers}
    for name, c in result.plan.choices.items():
        base = result.plan.candidates[name][0]
        o = outcomes.get(name)
        status = o.status if o else "kept"
        err = f"{o.output_error:.3f}" if o and o.output_error == o.output_error else "-"
        lines.append(
            f"| {name} | {c.method} | {c.rank if c.rank is not None else '-'} | {c.algorithm} | "
            f"{c.macs / max(1, base.macs):.2f} | {base.latency_ms:.2f} | {c.latency_ms:.2f} | "
            f"{c.sensitivity:.4f} | {err} | {status} |"
        )
    sums = residual_sums(result.fused)
    lines += [
        "",
        f"Whole-model output error after surgery, before fine-tuning: "
        f"{result.surgery.model_output_error:.4f} (relative, Frobenius).",
        f"Batch norms folded into convolutions: {len(result.folded)}; ReLUs fused into "
        f"convolutions: {len(result.fused) - sums}; residual sums taken by the layer before "
        f"them: {sums}.",
    ]
    if result.measured_with:
        w = result.measured_with
        lines.append(f"Latency measured with {w.get('threads')} threads; memory allocator: "
                     f"{w.get('allocator')}.")  # fmt: skip
    return lines


def _search_section(result, label: str) -> list[str]:
    """The trials of an accuracy-budget search (none for other targets)."""
    lines: list[str] = []
    if result.plan.search:
        lines += ["", "## Accuracy-budget search", "",
                  "Trials on held-out training images (not the test split), each after a short "
                  "fine-tune:", "", f"| target | predicted | {label} | drop | within |",
                  "|---:|---:|---:|---:|---|"]  # fmt: skip
        for t in result.plan.search:
            lines.append(f"| {t['target_speedup']:.2f}x | {t['predicted_speedup']:.2f}x | "
                         f"{t['accuracy']:.2f} | {t['drop']:+.2f} | "
                         f"{'yes' if t['within_budget'] else 'no'} |")  # fmt: skip
    return lines


def _finetune_section(result, label: str) -> list[str]:
    """The fine-tuning epochs, and which one was kept."""
    lines: list[str] = []
    if result.finetune_history:
        held = result.finetune_history[0].get("validation_metric") is not None
        lines += ["", "## Fine-tuning", "",
                  "| epoch | loss |" + (f" validation {label} |" if held else "")
                  + f" test {label} | img/s |", "|---:|---:|" + ("---:|" if held else "")
                  + "---:|---:|"]  # fmt: skip
        kept = result.finetune_kept or {}
        if held and kept.get("start_validation") is not None:
            lines.append(f"| 0 (before) | | {kept['start_validation']:.2f} | "
                         f"{kept['start_metric']:.2f} | |")  # fmt: skip
        for r in result.finetune_history:
            val = f" {r['validation_metric']:.2f} |" if held else ""
            lines.append(f"| {r['epoch']} | {r['loss']:.4f} |{val} {r['metric']:.2f} | "
                         f"{r['images_per_second']:.0f} |")  # fmt: skip
        lines.append("")
        epoch = kept.get("epoch")
        which = "" if epoch is None else (
            "The weights before fine-tuning are kept: no epoch did as well on the validation "
            "images. " if epoch == 0 else f"Epoch {epoch} is kept. ")  # fmt: skip
        lines.append(which + (
            "The epoch kept is the best on the validation images (held out from the training "
            "set)." if held
            else "The last epoch is kept (no validation split was held out; the "
            "test metric above is reported, never used to choose)."))  # fmt: skip
    return lines
