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
import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..algorithms.gemv import MAX_ROWS
from ..atomic import write_text_atomic
from ..bench import allocator
from ..data.batches import first_inputs
from ..data.bundle import DataBundle
from ..errors import LeanconvError, OutputExistsError
from ..rewrite.residual import residual_sums
from . import run_record, serialize
from .algorithms import ALGORITHMS
from .artefacts import write_artefacts
from .deploy import Deployment
from .evaluate import check_outputs, resolve_metric
from .finetune import FinetuneConfig, finetune
from .measure import ModelFigures, in_format, measure_formats, static_figures
from .planning import (
    DEFAULT_METHODS,
    DEFAULT_RATIOS,
    DEFAULT_TARGET,
    PRUNE,
    Candidate,
    MacsRatio,
    MaxDrop,
    Plan,
    Speedup,
    Target,
    allocate,
    build_candidates,
    plan_for_accuracy,
    plan_for_speedup,
    planned_method,
    within_error,
)
from .plausibility import check_plausible
from .run_lock import RunLock, publish
from .verify import LayerOutcome, SurgeryReport, decompose_model

#: The largest planning or measuring batch: beyond it one candidate's input alone would need
#: gigabytes (a ResNet stem at 224x224 holds 12.8 MB of activations per image).
MAX_BATCH = 4096
#: From this many MACs per image (ImageNet-size models: a ResNet-50 at 224 has 4.1 G) the
#: planner's sensitivities are local by default (CompressConfig.sensitivity="auto").
LOCAL_SENSITIVITY_MACS = 1_000_000_000
#: A fall of the metric (in its points) worth a note in the report when no --max-drop bounds it.
NOTABLE_DROP = 1.0


@dataclass
class CompressConfig:
    # what the plan aims at: Speedup(f), MacsRatio(r) or MaxDrop(points) (planning.targets)
    target: Target = DEFAULT_TARGET
    # with a Speedup or MacsRatio target: the metric points the result may lose (a note in the
    # report when it loses more); a MaxDrop target is its own budget
    max_drop: float | None = None
    search_epochs: int = 1  # fine-tuning epochs of each trial of that search
    methods: tuple[str, ...] = DEFAULT_METHODS
    algorithms: tuple[str, ...] = tuple(ALGORITHMS)  # fast algorithms tried per candidate
    # how the compressed model runs (and the plan is measured): folding, fusion, layout
    deployment: Deployment = field(default_factory=Deployment)
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    # each rank also aligned to this many channels, a candidate of its own (0: not aligned)
    align_ranks: int = 8
    # "full": every rewrite's sensitivity from a whole-model pass; "local": one per method and
    # layer, the others scaled by their output errors; "auto": local from LOCAL_SENSITIVITY_MACS
    sensitivity: str = "auto"
    plan_batch: int = 64
    batch_sizes: tuple[int, ...] = (1, 64)
    calibration: int = 128
    max_layer_error: float = 0.9  # relative output error above which a layer is rolled back
    # for a speedup target: of the plans within one standard error of the most accurate one's
    # sensitivity, keep the one with the most MACs (compress/planning/capacity.py)
    prefer_capacity: bool = True
    repeats: int = 10
    # the before/after measurement repeated this many times (each of repeats // 2 calls, at
    # least 3), the median kept (measure.measure_formats)
    measure_rounds: int = 3
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=5))
    seed: int = 0
    # what the model is judged by: "accuracy", "top5", or metric(model, data) -> float
    metric: object = "accuracy"
    loss: object = None  # loss(outputs, targets) added to the distillation, or None
    # the original must score at least this (default: clearly above chance, for class logits)
    min_metric: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting (as the command line spells it) that cannot
        work, before any work is done."""
        if not isinstance(self.target, Speedup | MacsRatio | MaxDrop):
            raise ValueError(f"target={self.target!r}: Speedup(f), MacsRatio(r) or MaxDrop(p)")
        if self.max_drop is not None:
            MaxDrop(self.max_drop)  # the same check as the target's
            if isinstance(self.target, MaxDrop):
                raise ValueError("--max-drop given twice: as the target and as the budget")
        for name, value, least in (("--batch", self.plan_batch, 1),
                                   ("--calibration", self.calibration, 2),
                                   ("--search-epochs", self.search_epochs, 1),
                                   ("--repeats", self.repeats, 1),
                                   ("measure_rounds", self.measure_rounds, 1)):  # fmt: skip
            if value < least:
                raise ValueError(f"{name} {value}: must be at least {least}")
        if self.plan_batch > MAX_BATCH:
            raise ValueError(f"--batch {self.plan_batch}: at most {MAX_BATCH} (planning times "
                             "every candidate at this batch)")  # fmt: skip
        if not self.batch_sizes or any(not 1 <= b <= MAX_BATCH for b in self.batch_sizes):
            raise ValueError(f"batch_sizes={self.batch_sizes}: batch sizes from 1 to {MAX_BATCH}")
        self.methods = tuple(planned_method(m, "--methods") for m in self.methods)
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if unknown:
            raise ValueError(
                f"--algorithms: unknown {', '.join(unknown)}; choose from {', '.join(ALGORITHMS)}"
                " or none"
            )
        if self.sensitivity not in ("auto", "full", "local"):
            raise ValueError(f"sensitivity={self.sensitivity!r}: 'auto', 'full' or 'local'")
        if not self.methods and not self.algorithms:
            raise ValueError("--methods and --algorithms are both empty: nothing to plan")

    @property
    def allowed_drop(self) -> float | None:
        """The metric points the result may lose, whichever setting says it."""
        return self.target.value if isinstance(self.target, MaxDrop) else self.max_drop


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
    # the data and how its inputs were prepared (the CLI's flags; a user's loaders: their shape)
    data: dict = field(default_factory=dict)
    # the compressed model as deployed (folded, fast algorithms, fused, its faster layout)
    model: nn.Module | None = field(default=None, repr=False)
    # the epoch kept (0: the weights before fine-tuning), and their metrics with a validation split
    finetune_kept: dict = field(default_factory=dict)

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

    @property
    def metric_drop(self) -> float:
        """How much the metric fell (negative: it rose), in its own unit."""
        return self.before.metric - self.after.metric

    def as_dict(self) -> dict:
        main = max(self.after.latency_ms) if self.after.latency_ms else None
        out = {
            "metric": self.before.metric_name,
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "speedup": self.speedup.get(main) if main else None,
            "speedup_by_batch": {str(b): s for b, s in self.speedup.items()},
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "speedup_over_baseline": {str(b): s for b, s in self.speedup_over_baseline.items()},
            "fused_activations": self.fused,
            "predicted_speedup": self.plan.predicted_speedup,
            "metric_drop": self.metric_drop,
            "macs_ratio": self.after.macs / self.before.macs,
            "plan": self.plan.as_dict(),
            "surgery": self.surgery.as_dict(),
            "finetune": self.finetune_history,
            "finetune_kept": self.finetune_kept,
            "folded_batchnorm": self.folded,
            "onnx_max_abs_error": self.onnx_max_error,
            "notes": self.notes,
            "seconds": self.seconds,
            "measured_with": self.measured_with,
            "data": self.data,
        }
        if self.before.accuracy is not None:
            out["accuracy_drop"] = self.metric_drop
        return out


def staging_of(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".partial")


def _check_out(out_dir: Path, force: bool, resume: bool) -> None:
    """Refuse, before any work, an output that exists, an interrupted run that would be lost, or
    a resume with nothing to resume."""
    if out_dir.exists() and not force:
        raise OutputExistsError(f"output directory {str(out_dir)!r} exists; pass --force")
    staging = staging_of(out_dir)
    if resume and not (staging / run_record.RUN_FILE).exists():
        raise LeanconvError(f"--resume: no interrupted run in {str(staging)!r}")
    if not resume and not force and (staging / run_record.RUN_FILE).exists():
        raise OutputExistsError(
            f"an interrupted run is in {str(staging)!r}: --resume continues it, --force discards it"
        )


def _staging(out_dir: Path, resume: bool, record: dict) -> Path:
    staging = staging_of(out_dir)
    if resume:
        run_record.check_resume(staging, record)
        return staging
    if staging.exists():
        shutil.rmtree(staging)  # --force (checked in _check_out), or a run that saved nothing
    staging.mkdir(parents=True)
    run_record.write(staging, run_record.RUN_FILE, record)
    return staging


def _local_sensitivity(config: CompressConfig, macs_before: int) -> bool:
    if config.sensitivity == "auto":
        return macs_before >= LOCAL_SENSITIVITY_MACS
    return config.sensitivity == "local"


def _make_plan(original, data, config, metric, calibration, macs_before, say,
               staging: Path | None = None) -> Plan:  # fmt: skip
    """Candidates measured on this machine (each layer's kept in ``staging`` as it is finished,
    and those kept by an interrupted run reused), then the allocation for the target."""
    say(f"[2/6] planning: {len(config.methods)} methods x {len(config.ratios)} ranks per "
        f"layer, latency at batch {config.plan_batch}, sensitivity on "
        f"{len(calibration)} images")  # fmt: skip
    kept: dict[str, list] = {}
    if staging is not None:
        kept = run_record.read(staging, run_record.CANDIDATES_FILE) or {}

    def keep(name: str, cands: list[Candidate]) -> None:
        kept[name] = [dataclasses.asdict(c) for c in cands]
        run_record.write(staging, run_record.CANDIDATES_FILE, kept)

    candidates, fixed, total = build_candidates(
        original, calibration, methods=config.methods, ratios=config.ratios,
        batch=config.plan_batch, align=config.align_ranks,
        local=_local_sensitivity(config, macs_before),
        repeats=max(3, config.repeats // 2),
        algorithms=config.algorithms, deployment=config.deployment, log=say,
        logits=metric.logits,
        done={n: [Candidate.from_dict(c) for c in cs] for n, cs in kept.items()},
        on_layer=keep if staging is not None else None,
    )  # fmt: skip
    candidates = within_error(candidates, config.max_layer_error)  # the rest would roll back
    target = config.target
    if isinstance(target, Speedup):
        return plan_for_speedup(
            original, candidates, fixed, total, macs_before, target.value, calibration,
            config.plan_batch, config.deployment, config.max_layer_error, config.repeats,
            log=say, prefer_capacity=config.prefer_capacity,
        )  # fmt: skip
    if isinstance(target, MacsRatio):
        return allocate(candidates, fixed, total, macs_before, macs_ratio=target.value)
    return plan_for_accuracy(
        original, candidates, fixed, total, macs_before, data, calibration,
        target.value, config.finetune, config.search_epochs,
        config.max_layer_error, config.seed, config.plan_batch, config.deployment,
        log=say, metric=metric, loss=config.loss,
    )  # fmt: skip


def _slower_notes(result: CompressResult) -> None:
    """A note for every reported batch size at which the compressed model is slower."""
    for bs, ratio in sorted(result.speedup.items()):
        if ratio < 1:
            result.notes.append(
                f"at batch {bs} the compressed model is slower than the original ({ratio:.2f}x), "
                "although every switchable layer runs its faster form at that size (a "
                "decomposed chain its composed convolution, a fast layer the direct one): what "
                "no switch covers (chains that do not compose into one convolution, the layers "
                f"outside the plan) costs more there; plan with --batch {bs} to compress for "
                "that batch size"
            )


def compress(
    model: nn.Module,
    data: DataBundle,
    config: CompressConfig,
    out_dir: str | Path | None = None,
    base: dict | None = None,
    force: bool = False,
    resume: bool = False,
    log=print,
    notes: list[str] | None = None,
) -> CompressResult:
    """Compress ``model`` (trained on ``data``); with ``out_dir`` write the artefacts there.
    ``notes``: lines for the report about what was done before (``--train-first``).

    ``base`` says how to rebuild the architecture for :func:`leanconv.load` (see
    :func:`.serialize.save`). Every check that can fail on the user's input (the settings, the
    output directory, the model's outputs, a plausible original metric) runs before planning.
    """
    say = log or (lambda _m: None)
    config.validate()
    if out_dir is None:
        return _compress(model, data, config, None, base, force, resume, say, notes or [])
    out_dir = Path(out_dir)
    with RunLock(out_dir, say):
        return _compress(model, data, config, out_dir, base, force, resume, say, notes or [])


@dataclass
class _Run:
    """What the stages of one run share."""

    data: DataBundle
    config: CompressConfig
    metric: object
    original: nn.Module
    calibration: torch.Tensor  # training inputs the sensitivities and the surgery use
    example: torch.Tensor  # test inputs the latencies are measured on
    staging: Path | None
    say: object


def _compress(model, data, config, out_dir, base, force, resume, say, notes) -> CompressResult:
    """The stages in order: measure, plan, decompose, fine-tune, measure again, write."""
    t_start = time.perf_counter()
    metric = resolve_metric(config.metric)
    if out_dir is not None:
        _check_out(out_dir, force, resume)
    check_outputs(model, data.test, metric, data.num_classes)
    torch.manual_seed(config.seed)
    run = _Run(data, config, metric, copy.deepcopy(model).eval(),
               first_inputs(data.train, config.calibration, where="training data"),
               first_inputs(data.test, max(config.batch_sizes), where="test data"), None,
               say)  # fmt: skip
    before = _measure_original(run)
    if out_dir is not None:
        record = run_record.record(config, model, data, (run.calibration, run.example))
        run.staging = _staging(out_dir, resume, record)
    plan = _plan_stage(run, before)
    compressed, surgery = _surgery_stage(run, plan)
    history = _finetune_stage(run, compressed)
    result, deployed = _measure_stage(run, before, plan, surgery, history, compressed, notes)
    if out_dir is not None:
        _write_stage(run, result, deployed, base, out_dir, force, t_start)
    result.seconds = time.perf_counter() - t_start
    return result


def _measure_original(run: _Run) -> ModelFigures:
    run.say("[1/6] measuring the original model")
    before = static_figures(run.original, run.data.test, run.example, run.metric)
    run.say(f"      {run.metric.name} {before.metric:.2f}{run.metric.unit}, {before.params:,} "
            f"params, {before.macs / 1e6:.1f} MMACs per sample")  # fmt: skip
    check_plausible(before, run.metric, run.data, run.example, run.config.min_metric)
    return before


def _plan_stage(run: _Run, before: ModelFigures) -> Plan:
    """A new plan, or the one an interrupted run had made."""
    plan_file = run.staging / "plan.json" if run.staging is not None else None
    if plan_file is not None and plan_file.exists():  # a resumed run: its plan, not a new one
        plan = Plan.from_json(plan_file.read_text())
        run.say(f"[2/6] plan read back from {plan_file}")
    else:
        t0 = time.perf_counter()
        plan = _make_plan(run.original, run.data, run.config, run.metric, run.calibration,
                          before.macs, run.say, run.staging)  # fmt: skip
        plan = plan.replace(planning_seconds=time.perf_counter() - t0)
        run.say(f"      planned in {plan.planning_seconds:.0f} s = {plan.planning_cost:,.0f} "
                f"forward passes of the original at batch {run.config.plan_batch}")  # fmt: skip
        if plan_file is not None:
            write_text_atomic(plan_file, plan.to_json(), force=True)
    run.say(f"      {plan.target}: predicted {plan.predicted_speedup:.2f}x, "
            f"{len(plan.rewrites())} of {len(plan.choices)} layers rewritten"
            + ("" if plan.met else " (target not reachable: best plan found)"))  # fmt: skip
    return plan


def _surgery_stage(run: _Run, plan: Plan) -> tuple[nn.Module, SurgeryReport]:
    """Decompose and verify each planned layer; a resumed run replaces exactly what it did."""
    run.say("[3/6] decomposing and verifying each layer")
    rewrites = plan.rewrites()
    staging = run.staging
    decided = run_record.read(staging, run_record.SURGERY_FILE) if staging is not None else None
    if decided is not None:
        rewrites = {n: r for n, r in rewrites.items() if n in decided["replaced"]}
    compressed, surgery = decompose_model(run.original, rewrites, run.calibration,
                                          max_error=run.config.max_layer_error)  # fmt: skip
    if decided is not None:
        surgery.layers = [o for o in surgery.layers if o.name in decided["replaced"]] + [
            LayerOutcome(**o) for o in decided["outcomes"] if o["name"] not in decided["replaced"]
        ]
    elif staging is not None:
        decisions = {"replaced": sorted(surgery.replaced),
                     "outcomes": surgery.as_dict()["layers"]}  # fmt: skip
        run_record.write(staging, run_record.SURGERY_FILE, decisions)
    for o in surgery.layers:
        if o.status != "replaced":
            run.say(f"      {o.name}: {o.status} ({o.reason})")
    pruned = [o for o in surgery.layers if o.method == PRUNE and o.status == "replaced"]
    if pruned:  # each pair's producer, then its consumer (verify._pruned_pairs)
        run.say(f"      {len(pruned) // 2} pair(s) of convolutions pruned: "
                + ", ".join(f"{a.name} -> {b.name} ({a.rank} channels)"
                            for a, b in zip(pruned[::2], pruned[1::2], strict=True)))  # fmt: skip
    run.say(f"      model output error before fine-tuning: {surgery.model_output_error:.3f}")
    return compressed, surgery


def _finetune_stage(run: _Run, compressed: nn.Module):
    config = run.config
    run.say(f"[4/6] fine-tuning with distillation ({config.finetune.epochs} epochs)")
    ft_cfg = copy.copy(config.finetune)
    ft_cfg.checkpoint = run.staging / "checkpoint.pt" if run.staging is not None else None
    ft_cfg.resume = ft_cfg.checkpoint is not None and ft_cfg.checkpoint.exists()
    return finetune(compressed, run.data, run.original, ft_cfg,
                    log=lambda m: run.say("      " + m), metric=run.metric,
                    loss=config.loss)  # fmt: skip


def _kept(history) -> dict:
    """Which fine-tuning epoch the model ends with, and the metrics before fine-tuning."""
    return {"epoch": history.best_epoch, "start_metric": history.start_metric,
            "start_validation": history.start_validation}  # fmt: skip


def switch_lines(deployed, batch_sizes) -> list[str]:
    """One line per layer of ``deployed`` that switches form by batch size (``min_batch``): from
    which batch its algorithm or chain runs, or, where it lost at every batch size measured,
    that it runs its plain form there."""
    largest, lines = max(batch_sizes), []
    for name, b in deployed.min_batch.items():
        fast, plain = ("its chain", "one composed convolution") if name in deployed.chains else (
            "its algorithm", "direct")  # fmt: skip
        if b > largest:
            lines.append(f"{name} runs {plain} at every batch size measured (faster there than "
                         f"{fast})")  # fmt: skip
        else:
            lines.append(f"{name} runs {fast} from batch {b} on ({plain} below: faster there)")
    return lines


def _measure_stage(run: _Run, before, plan, surgery, history, compressed, notes):
    """Deploy (fold, algorithms, fuse), then measure before and after in one harness; returns
    the result and the deployment (what is saved)."""
    run.say("[5/6] measuring before and after in one harness")
    # `fast` runs the algorithms (the same function up to rounding, so trained in plain form)
    # with the activations fused; `deployed.folded` (plain layers) is what is saved
    dep, metric = run.config.deployment, run.metric
    deployed = dep.measured(compressed, plan.algorithms(), plan.rewrites(), run.example,
                            run.config.batch_sizes, run.config.repeats)  # fmt: skip
    narrow = [n for n, a in deployed.algorithms.items() if a == "narrow"]
    gemv = [n for n, a in deployed.algorithms.items() if a == "gemv"]
    run.say(f"      {len(narrow)} of the decomposed layers' factors run the narrow direct kernel "
            "(measured faster than oneDNN)")  # fmt: skip
    if gemv:
        run.say(f"      {len(gemv)} fully connected layer(s) run the streaming matrix-vector "
                f"kernel up to batch {MAX_ROWS} (measured at least as fast as F.linear there): "
                + ", ".join(gemv))  # fmt: skip
    for line in switch_lines(deployed, run.config.batch_sizes):
        run.say("      " + line)
    if dep.fuse:
        sums = residual_sums(deployed.fused)
        run.say(f"      {len(deployed.fused) - sums} ReLUs fused into the convolutions before "
                f"them, {sums} residual sums taken by the layer before them, convolutions "
                "packed for oneDNN")  # fmt: skip
    winograd = {n: a for n, a in deployed.algorithms.items() if a in ALGORITHMS}
    if winograd:
        run.say(f"      {len(winograd)} layers run by Winograd: "
                + ", ".join(f"{n} ({a})" for n, a in winograd.items()))  # fmt: skip
    after = static_figures(deployed.model, run.data.test, run.example, metric)
    baseline = ModelFigures(before.metric, before.params, before.macs, metric_name=metric.name)
    # all in both memory formats, interleaved; each keeps its faster format, on real test
    # images, as the closed loop times plans on real training images
    shape = tuple(run.example.shape[1:])
    measure_formats(
        {"before": run.original, "after": deployed.model, "baseline": dep.apply(run.original)},
        {"before": before, "after": after, "baseline": baseline}, shape,
        run.config.batch_sizes, max(3, run.config.repeats // 2), run.example,
        rounds=run.config.measure_rounds,
    )  # fmt: skip
    memory_format = after.best_format()
    run.say(f"      deployed in {memory_format} layout (before: fastest in "
            f"{before.best_format()})")  # fmt: skip
    measured_with = {"threads": torch.get_num_threads(), "allocator": allocator.describe()}
    expected = {"shape": list(shape), "dtype": str(run.example.dtype).removeprefix("torch."),
                **{k: v for k, v in run.data.preprocessing.items() if k != "data"}}  # fmt: skip
    result = CompressResult(before, after, plan, surgery, [r.__dict__ for r in history.history],
                            deployed.folded_norms, baseline, deployed.fused,
                            notes=[*notes, *plan.notes], measured_with=measured_with,
                            data={"name": run.data.name, "input": expected},
                            model=in_format(deployed.model, memory_format),
                            finetune_kept=_kept(history))  # fmt: skip
    allowed = run.config.allowed_drop
    if allowed is not None and result.metric_drop > allowed:
        result.notes.append(
            f"{metric.name} dropped {result.metric_drop:.2f} points, more than --max-drop "
            f"{allowed}: use a smaller --speedup or more fine-tuning epochs"
        )
    elif allowed is None and result.metric_drop > NOTABLE_DROP:
        result.notes.append(
            f"{metric.name} dropped {result.metric_drop:.2f} points (no --max-drop was given): "
            f"the plan for the {plan.target} target has a summed sensitivity of "
            f"{plan.sensitivity[0]:.3g} and a relative output error of "
            f"{surgery.model_output_error:.3g} before fine-tuning, which fine-tuning did not "
            "recover; ask for a smaller --speedup, set --max-drop to bound the loss, or give "
            "more --epochs"
        )
    _slower_notes(result)
    return result, deployed


def _write_stage(run: _Run, result, deployed, base, out_dir: Path, force: bool, t_start) -> None:
    """The saved model (its faster layout), report, plots and ONNX, then the staging directory
    renamed into place."""
    run.say("[6/6] writing the report, the model (safetensors + JSON) and ONNX")
    staging, memory_format = run.staging, result.after.best_format()
    deploy = in_format(deployed.folded, memory_format)
    replaced = {n: deploy.get_submodule(n) for n in result.surgery.replaced}
    # a folded conv gained a bias: describe it too, unless in a chain
    for conv in deployed.folded_convs:
        if not any(conv == r or conv.startswith(r + ".") for r in result.surgery.replaced):
            replaced[conv] = deploy.get_submodule(conv)
    replaced.update({n: nn.Identity() for n in deployed.folded_norms})
    extra = {"folded_batchnorm": deployed.folded_norms, "data": run.data.name,
             "input": result.data["input"]}  # fmt: skip
    serialize.save(deploy, staging / "model", base or {}, replaced, extra=extra, force=True,
                   algorithms=deployed.algorithms, min_batch=deployed.min_batch,
                   memory_format=memory_format,
                   fuse=run.config.deployment.fuse, example=run.example[:2])  # fmt: skip
    result.seconds = time.perf_counter() - t_start
    write_artefacts(result, deploy, staging, run.example[:2], run.say)
    for leftover in ("checkpoint.pt", run_record.CANDIDATES_FILE):
        (staging / leftover).unlink(missing_ok=True)
    publish(staging, out_dir, force)
