"""The main job: plan, decompose, verify, fine-tune, measure, report.

``compress(model, data, config, out_dir)`` works in a staging directory beside ``out_dir``
(``<out>.partial``) and renames it to ``out_dir`` only when everything is written, so the output
directory is either complete or absent. The staging directory holds the plan and the fine-tuning
checkpoint; an interrupted run continues from there with ``resume=True`` and, because the plan is
read back rather than re-measured and fine-tuning resumes exactly, ends where an uninterrupted run
would have.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..bench import allocator
from ..data.bundle import DataBundle
from ..errors import LeanconvError, OutputExistsError
from ..report.files import write_text_atomic
from .accuracy_budget import plan_for_accuracy
from .algorithms import ALGORITHMS
from .closed_loop import plan_for_speedup
from .deploy import Deployment
from .evaluate import batches, check_classes
from .finetune import FinetuneConfig, finetune
from .measure import ModelFigures, in_format, measure_formats, static_figures
from .plan import Candidate, Plan, allocate, build_candidates
from .verify import SurgeryReport, decompose_model


@dataclass
class CompressConfig:
    speedup: float | None = 3.0
    macs_ratio: float | None = None
    max_drop: float | None = None  # accuracy points; alone, the target of a search
    search_epochs: int = 1  # fine-tuning epochs of each trial of that search
    methods: tuple[str, ...] = ("tucker2", "svd")
    algorithms: tuple[str, ...] = tuple(ALGORITHMS)  # fast algorithms tried per candidate
    # how the compressed model runs (and the plan is measured): folding, fusion, layout
    deployment: Deployment = field(default_factory=Deployment)
    ratios: tuple[float, ...] = (0.06, 0.1, 0.15, 0.25, 0.4, 0.6)
    plan_batch: int = 64
    batch_sizes: tuple[int, ...] = (1, 64)
    calibration: int = 128
    max_layer_error: float = 0.9  # relative output error above which a layer is rolled back
    # for a speedup target: of the plans within one standard error of the most accurate one's
    # sensitivity, keep the one with the most MACs (compress/capacity.py)
    prefer_capacity: bool = True
    repeats: int = 10
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=5))
    seed: int = 0

    def target_kwargs(self) -> dict:
        """The allocation target; ``{}`` when ``max_drop`` alone is the target (a search)."""
        if self.speedup is not None:
            return {"speedup": self.speedup}
        if self.macs_ratio is not None:
            return {"macs_ratio": self.macs_ratio}
        if self.max_drop is not None:
            return {}
        return {"speedup": 2.0}


@dataclass
class CompressResult:
    before: ModelFigures
    after: ModelFigures
    plan: Plan
    surgery: SurgeryReport
    finetune_history: list = field(default_factory=list)
    folded: list[str] = field(default_factory=list)
    # the original in the same deployment form (latency only): what the plan's rewrites alone buy
    baseline: ModelFigures | None = None
    fused: list[str] = field(default_factory=list)
    onnx_max_error: float | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # how latency was measured: threads, allocator setting (bench.allocator)
    measured_with: dict = field(default_factory=dict)

    @property
    def speedup(self) -> dict[int, float]:
        return {
            b: self.before.latency_ms[b] / self.after.latency_ms[b] for b in self.after.latency_ms
        }

    @property
    def speedup_over_baseline(self) -> dict[int, float]:
        """The speedup over the original in the same deployment form (the rewrites' share)."""
        if self.baseline is None:
            return {}
        by = self.baseline.latency_ms
        return {b: by[b] / self.after.latency_ms[b] for b in self.after.latency_ms if b in by}

    def as_dict(self) -> dict:
        main = max(self.after.latency_ms) if self.after.latency_ms else None
        return {
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "speedup": self.speedup.get(main) if main else None,
            "speedup_by_batch": {str(b): s for b, s in self.speedup.items()},
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "speedup_over_baseline": {str(b): s for b, s in self.speedup_over_baseline.items()},
            "fused_activations": self.fused,
            "predicted_speedup": self.plan.predicted_speedup,
            "accuracy_drop": self.before.accuracy - self.after.accuracy,
            "macs_ratio": self.after.macs / self.before.macs,
            "plan": self.plan.as_dict(),
            "surgery": self.surgery.as_dict(),
            "finetune": self.finetune_history,
            "folded_batchnorm": self.folded,
            "onnx_max_abs_error": self.onnx_max_error,
            "notes": self.notes,
            "seconds": self.seconds,
            "measured_with": self.measured_with,
        }


def _check_out(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not force:
        raise OutputExistsError(f"output directory {str(out_dir)!r} exists; pass --force")


def _staging(out_dir: Path, resume: bool) -> Path:
    staging = out_dir.with_name(out_dir.name + ".partial")
    if resume:
        if not (staging / "plan.json").exists():
            raise LeanconvError(f"--resume: no interrupted run in {str(staging)!r}")
    elif staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _candidate(d: dict) -> Candidate:
    d = dict(d)
    if isinstance(d.get("rank"), list):
        d["rank"] = tuple(d["rank"])
    return Candidate(**d)


def _plan_from_json(data: dict) -> Plan:
    cands = {n: [_candidate(c) for c in cs] for n, cs in data["candidates"].items()}
    choices = {n: _candidate(c) for n, c in data["layers"].items()}
    return Plan(choices, cands, data["fixed_ms"], data["total_before_ms"], data["macs_before"],
                data["target"], data["met"], data.get("notes", []), data.get("search", []),
                data.get("assembled_ms"), data.get("original_ms"),
                data.get("sensitivity_se"))  # fmt: skip


def compress(
    model: nn.Module,
    data: DataBundle,
    config: CompressConfig,
    out_dir: str | Path,
    base: dict,
    force: bool = False,
    resume: bool = False,
    log=print,
) -> CompressResult:
    """Compress ``model`` (trained on ``data``) and write the artefacts into ``out_dir``."""
    from . import serialize
    from .artefacts import write_artefacts

    t_start = time.perf_counter()
    say = log or (lambda _m: None)
    out_dir = Path(out_dir)
    _check_out(out_dir, force)
    check_classes(model, data.test, data.num_classes)
    staging = _staging(out_dir, resume)
    original = copy.deepcopy(model).eval()
    shape = tuple(data.input_shape)
    torch.manual_seed(config.seed)
    calibration = next(batches(data.train, config.calibration))[0]

    say("[1/6] measuring the original model")
    before = static_figures(original, data.test, shape)
    say(f"      accuracy {before.accuracy:.2f}%, {before.params:,} params, "
        f"{before.macs / 1e6:.1f} MMACs per image")  # fmt: skip

    plan_file = staging / "plan.json"
    if resume:
        plan = _plan_from_json(json.loads(plan_file.read_text()))
        say(f"[2/6] plan read back from {plan_file}")
    else:
        say(f"[2/6] planning: {len(config.methods)} methods x {len(config.ratios)} ranks per "
            f"layer, latency at batch {config.plan_batch}, sensitivity on "
            f"{len(calibration)} images")  # fmt: skip
        candidates, fixed, total = build_candidates(
            original, calibration, methods=config.methods, ratios=config.ratios,
            batch=config.plan_batch, repeats=max(3, config.repeats // 2),
            algorithms=config.algorithms, deployment=config.deployment, log=say,
        )  # fmt: skip
        target = config.target_kwargs()
        if "speedup" in target:
            plan = plan_for_speedup(
                original, candidates, fixed, total, before.macs, target["speedup"], calibration,
                config.plan_batch, config.deployment, config.max_layer_error, config.repeats,
                log=say, prefer_capacity=config.prefer_capacity,
            )  # fmt: skip
        elif target:
            plan = allocate(candidates, fixed, total, before.macs, **target)
        else:
            plan = plan_for_accuracy(
                original, candidates, fixed, total, before.macs, data, calibration,
                config.max_drop, config.finetune, config.search_epochs,
                config.max_layer_error, config.seed, config.plan_batch, config.deployment,
                log=say,
            )  # fmt: skip
        write_text_atomic(plan_file, json.dumps(plan.as_dict()), force=True)
    say(f"      {plan.target}: predicted {plan.predicted_speedup:.2f}x, "
        f"{len(plan.rewrites())} of {len(plan.choices)} layers rewritten"
        + ("" if plan.met else " (target not reachable: best plan found)"))  # fmt: skip

    say("[3/6] decomposing and verifying each layer")
    compressed, surgery = decompose_model(original, plan.rewrites(), calibration,
                                          max_error=config.max_layer_error)  # fmt: skip
    for o in surgery.layers:
        if o.status != "replaced":
            say(f"      {o.name}: {o.status} ({o.reason})")
    say(f"      model output error before fine-tuning: {surgery.model_output_error:.3f}")

    say(f"[4/6] fine-tuning with distillation ({config.finetune.epochs} epochs)")
    ft_cfg = copy.copy(config.finetune)
    ft_cfg.checkpoint = staging / "checkpoint.pt"
    ft_cfg.resume = resume and ft_cfg.checkpoint.exists()
    history = finetune(compressed, data, original, ft_cfg, log=lambda m: say("      " + m))
    result_notes = list(plan.notes)

    say("[5/6] measuring before and after in one harness")
    # `fast` runs the algorithms (the same function up to rounding, so trained in plain form)
    # with the activations fused; `deploy` (folded, plain layers) is what is saved
    dep = config.deployment
    deployed = dep.deploy(compressed, plan.algorithms())
    fast, deploy, folded, algorithms = (deployed.model, deployed.folded, deployed.folded_norms,
                                        deployed.algorithms)  # fmt: skip
    if dep.fuse:
        say(f"      {len(deployed.fused)} ReLUs fused into the convolutions before them, "
            "convolutions packed for oneDNN")  # fmt: skip
    if algorithms:
        say(f"      {len(algorithms)} layers run by Winograd: "
            + ", ".join(f"{n} ({a})" for n, a in algorithms.items()))  # fmt: skip
    after = static_figures(fast, data.test, shape)
    baseline = ModelFigures(before.accuracy, before.params, before.macs)
    # all in both memory formats, interleaved; each keeps its faster format
    # on real test images, as the closed loop times plans on real training images
    images = next(batches(data.test, max(config.batch_sizes)))[0]
    measure_formats({"before": original, "after": fast, "baseline": dep.apply(original)},
                    {"before": before, "after": after, "baseline": baseline}, shape,
                    config.batch_sizes, config.repeats, images)  # fmt: skip
    memory_format = after.best_format()
    say(f"      deployed in {memory_format} layout (before: fastest in {before.best_format()})")
    deploy = in_format(deploy, memory_format)
    measured_with = {"threads": torch.get_num_threads(), "allocator": allocator.describe()}
    result = CompressResult(before, after, plan, surgery, [r.__dict__ for r in history.history],
                            folded, baseline, deployed.fused, notes=result_notes,
                            measured_with=measured_with)  # fmt: skip
    if config.max_drop is not None and before.accuracy - after.accuracy > config.max_drop:
        result.notes.append(
            f"accuracy dropped {before.accuracy - after.accuracy:.2f} points, more than "
            f"--max-drop {config.max_drop}: use a smaller --speedup or more fine-tuning epochs"
        )

    say("[6/6] writing the report, the model (safetensors + JSON) and ONNX")
    replaced: dict[str, nn.Module] = {n: deploy.get_submodule(n) for n in surgery.replaced}
    # a folded conv gained a bias: describe it too, unless in a chain
    for conv in deployed.folded_convs:
        if not any(conv == r or conv.startswith(r + ".") for r in surgery.replaced):
            replaced[conv] = deploy.get_submodule(conv)
    replaced.update({n: nn.Identity() for n in folded})
    extra = {"folded_batchnorm": folded, "data": data.name}
    serialize.save(deploy, staging / "model", base, replaced, extra=extra, force=True,
                   algorithms=algorithms, memory_format=memory_format,
                   fuse=dep.fuse)  # fmt: skip
    result.seconds = time.perf_counter() - t_start
    write_artefacts(result, deploy, staging, shape, say)
    for leftover in ("checkpoint.pt",):
        (staging / leftover).unlink(missing_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return result
