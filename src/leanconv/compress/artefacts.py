"""Writing the artefacts of a compression run: report.json, report.md, plots, model.onnx."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..report.files import write_text_atomic
from ..report.markdown import compress_report
from ..report.plots import candidates_plot, layer_latency_plot, rank_plot


def export_onnx(model: nn.Module, sample_shape, path: Path) -> float:
    """Export ``model`` to ONNX and return the max abs difference of ONNX Runtime's output."""
    import onnxruntime

    x = torch.randn(2, *sample_shape)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        torch.onnx.export(
            model.eval(), (x,), tmp, dynamo=False, input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "batch"}},
        )  # fmt: skip
        session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return float(abs(got - want).max())


def write_artefacts(result, model: nn.Module, out: Path, sample_shape, say=print) -> None:
    result.onnx_max_error = export_onnx(model, sample_shape, out / "model.onnx")
    plan = result.plan
    candidates_plot(plan, out / "candidates.png")
    layer_latency_plot(plan, out / "layer_latency.png")
    rank_plot(plan, out / "ranks.png")
    meta = json.loads((out / "model" / "model.json").read_text())
    base = meta.get("base", {})
    name = base.get("zoo") or base.get("factory") or "model"
    write_text_atomic(out / "report.json", json.dumps(result.as_dict(), indent=2), force=True)
    write_text_atomic(out / "report.md", compress_report(result, name, meta.get("extra", {})
                      .get("data", "data")), force=True)  # fmt: skip
