"""Writing the artefacts of a compression run: report.json, report.md, plots, model.onnx."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..atomic import write_text_atomic
from ..report.markdown import compress_report
from ..report.plots import candidates_plot, layer_latency_plot, rank_plot


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> float:
    """Export ``model`` to ONNX (batch dimension dynamic) and return the largest absolute
    difference between ONNX Runtime's outputs and PyTorch's on ``example`` (every output tensor,
    in :func:`.outputs.tensors` order)."""
    import onnxruntime

    from .outputs import tensors

    x = example
    with torch.no_grad():
        want = [t.detach().cpu().numpy() for t in tensors(model.eval()(x))]
    names = ["logits"] if len(want) == 1 else [f"output_{i}" for i in range(len(want))]
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        torch.onnx.export(
            model, (x,), tmp, dynamo=False, input_names=["input"], output_names=names,
            dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}},
        )  # fmt: skip
        session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.cpu().numpy()})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return max(float(abs(g - w).max()) for g, w in zip(got, want, strict=True))


def write_artefacts(result, model: nn.Module, out: Path, example: torch.Tensor, say=print) -> None:
    result.onnx_max_error = export_onnx(model, example, out / "model.onnx")
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
