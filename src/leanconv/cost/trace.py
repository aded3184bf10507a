"""Whole-model counting at the dispatcher, attributed to modules.

``count(model, input)`` runs the model once under a ``TorchDispatchMode`` that sees every ATen
operation (so functional calls such as ``F.conv2d``, ``einsum`` and ``@`` are counted, not only
modules) and attributes each to the innermost module whose ``forward`` is running, tracked with
global forward hooks. A graph whose nodes record the module they came from (a ``torch.export``
program's module: one flat graph) runs node by node, each op named by its node's innermost
``nn_module_stack`` entry. The model runs on a parameter-free copy on the ``meta`` device, so
nothing is computed or allocated and any model size takes the same few milliseconds per layer.
Modules that define :data:`MODULE_RULES` entries (e.g. deformable convolution) are counted by
their closed form.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import ForwardError, InputShapeError, LeanconvError
from .convention import DEFAULT, Convention
from .formulas import OpCost
from .report import CostReport, LayerCost
from .rules import first_shape, is_free, rule_for, unknown_cost

# A module type -> fn(module, inputs, output, convention) -> (kind, OpCost). Ops inside such a
# module are not counted again.
MODULE_RULES: dict[type, Callable[..., tuple[str, OpCost]]] = {}


def module_rule(module: nn.Module):
    """The closed-form rule of ``module``'s class or of its nearest registered base class."""
    for cls in type(module).__mro__:
        if cls in MODULE_RULES:
            return MODULE_RULES[cls]
    return None


def register_module_rule(cls: type):
    """Decorator: count modules of type ``cls`` by a closed form instead of their ops."""

    def wrap(fn):
        MODULE_RULES[cls] = fn
        return fn

    return wrap


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers live on the meta device.

    The copy shares no storage with ``model`` and copies no data: parameters are replaced through
    ``deepcopy``'s memo before the copy is made.
    """
    memo: dict[int, object] = {}
    for t in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(t, device="meta")
        if isinstance(t, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=t.requires_grad)
        memo[id(t)] = meta
    return copy.deepcopy(model, memo)


class _Tracker:
    """A stack of the modules whose forward is running, kept by global hooks."""

    def __init__(self, names: dict[int, str]):
        self.names = names
        self.stack: list[nn.Module] = []
        self.opaque_depth = 0  # > 0 inside a module counted by a MODULE_RULE
        self.node_name = ""  # the module a graph node came from, while it runs (_NamedNodes)

    @contextmanager
    def hooks(self, on_opaque_exit):
        def pre(module, args):
            self.stack.append(module)
            if module_rule(module) is not None:
                self.opaque_depth += 1

        def post(module, args, output):
            if self.stack and self.stack[-1] is module:
                self.stack.pop()
            if module_rule(module) is not None:
                self.opaque_depth -= 1
                if self.opaque_depth == 0:
                    on_opaque_exit(module, args, output)

        h1 = nn.modules.module.register_module_forward_pre_hook(pre)
        h2 = nn.modules.module.register_module_forward_hook(post)
        try:
            yield self
        finally:
            h1.remove()
            h2.remove()

    def current(self) -> str:
        for module in reversed(self.stack):
            if id(module) in self.names:
                return self.names[id(module)]
        return self.node_name


def _node_module(node: torch.fx.Node) -> str:
    """The qualified name of the innermost module ``node`` was traced in (``""``: none)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else ""


class _NamedNodes(torch.fx.Interpreter):
    """Runs a graph node by node, telling the tracker which module each node came from."""

    def __init__(self, module: torch.fx.GraphModule, tracker: _Tracker):
        super().__init__(module)
        self.tracker = tracker

    def run_node(self, n: torch.fx.Node):
        self.tracker.node_name = _node_module(n)
        try:
            return super().run_node(n)
        finally:
            self.tracker.node_name = ""


def _call(model: nn.Module, tracker: _Tracker, args: tuple, kwargs: dict):
    """``model(*args, **kwargs)``; a graph module whose nodes record their modules, called with
    tensors alone, runs node by node instead (:class:`_NamedNodes`), so that its rows are named
    by layer. The graph's placeholders are the flattened inputs (``torch.export``'s form)."""
    if not isinstance(model, torch.fx.GraphModule) or kwargs:
        return model(*args, **kwargs)
    graph = model.graph
    if not any(_node_module(n) for n in graph.nodes):
        return model(*args, **kwargs)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(args) or not all(isinstance(a, torch.Tensor) for a in args):
        return model(*args, **kwargs)
    return _NamedNodes(model, tracker).run(*args)


def _composite_functions() -> dict:
    """Python functions that reach the dispatcher only as pieces that hide their MACs (composite
    ATen ops: ``linalg_vecdot`` arrives as ``mul`` + ``sum``), counted whole by the rule of their
    ATen op instead."""
    aten = torch.ops.aten
    return {torch.linalg.vecdot: aten.linalg_vecdot.default}


class _CompositeMode(TorchFunctionMode):
    """Counts the functions of :func:`_composite_functions` whole (their pieces are not counted
    again), attributed like every other row."""

    def __init__(self, tracker: _Tracker, convention: Convention, rows: list[LayerCost]):
        super().__init__()
        self.tracker, self.convention, self.rows = tracker, convention, rows
        self.functions = _composite_functions()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = self.functions.get(func)
        if op is None or self.tracker.opaque_depth:
            return func(*args, **kwargs)
        self.tracker.opaque_depth += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.tracker.opaque_depth -= 1
        kind, cost = rule_for(op)(args, kwargs, out, self.convention)
        self.rows.append(
            LayerCost(self.tracker.current(), kind, first_shape(args), cost.output_shape, 0,
                      cost.macs, cost.flops, cost.bytes, detail=op.overloadpacket.__name__)
        )  # fmt: skip
        return out


class _CountingMode(TorchDispatchMode):
    def __init__(self, tracker: _Tracker, convention: Convention, rows: list[LayerCost]):
        super().__init__()
        self.tracker = tracker
        self.convention = convention
        self.rows = rows

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.tracker.opaque_depth or is_free(func):
            return out
        rule = rule_for(func)
        name = self.tracker.current()
        if rule is None:
            cost = unknown_cost(args, out)
            op = str(func.overloadpacket.__name__)
            self.rows.append(
                LayerCost(
                    name,
                    "uncounted",
                    first_shape(args),
                    cost.output_shape,
                    0,
                    0,
                    0,
                    cost.bytes,
                    counted=False,
                    detail=op,
                )  # fmt: skip
            )
            return out
        kind, cost = rule(args, kwargs, out, self.convention)
        self.rows.append(
            LayerCost(
                name,
                kind,
                first_shape(args),
                cost.output_shape,
                0,
                cost.macs,
                cost.flops,
                cost.bytes,
                detail=str(func.overloadpacket.__name__),
            )  # fmt: skip
        )
        return out


def parse_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) -> ``(1, 3, 224, 224)``, with a clear error."""
    if not isinstance(text, str):
        shape = tuple(int(v) for v in text)
    else:
        compact = text.replace(" ", "")
        if not re.fullmatch(r"\d+([,x]\d+)*", compact):
            raise InputShapeError(f"--input {text!r} is not a list of integers such as 1,3,224,224")
        shape = tuple(int(p) for p in re.split(r"[,x]", compact))
    if not shape or any(d < 1 for d in shape):
        raise InputShapeError(f"input shape {text!r} must be positive integers, e.g. 1,3,224,224")
    return shape


def _is_shape(value) -> bool:
    return (isinstance(value, tuple | list) and bool(value)
            and all(type(v) is int for v in value))  # fmt: skip


def _inputs(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The call's arguments as given: tensors, shapes (``(1, 3, 224, 224)``, ``"1,3,224,224"``:
    a tensor of the model's floating dtype) and other Python values; one list or tuple of tensors
    and shapes stands for several positional arguments (``count(m, (x, y))``)."""
    several = len(args) == 1 and isinstance(args[0], tuple | list) and bool(args[0])
    if (
        several
        and not _is_shape(args[0])
        and all(isinstance(v, torch.Tensor) or _is_shape(v) for v in args[0])
    ):
        args = tuple(args[0])
    if not args and not kwargs:
        raise InputShapeError("count() needs the model's input: a tensor or a shape")

    def one(v):
        if _is_shape(v):
            return Shape(parse_shape(v))
        if isinstance(v, str) and re.fullmatch(r"\s*\d+([,x]\d+)*\s*", v):
            return Shape(parse_shape(v))
        return v

    return tuple(one(v) for v in args), {k: one(v) for k, v in kwargs.items()}


class Shape(tuple):
    """A tensor asked for by its shape (created in the model's floating dtype where it runs)."""


def _materialise(value, device: str | torch.device, dtype: torch.dtype, batch: int | None = None):
    """``value`` made for a run on ``device``: a shape becomes an empty tensor of ``dtype``, a
    tensor an empty one like it (values matter only on the CPU, where they are kept); ``batch``
    replaces the first dimension of every tensor."""
    if isinstance(value, Shape):
        shape = (batch, *value[1:]) if batch is not None else tuple(value)
        if str(device) == "cpu":
            return torch.randn(shape, dtype=dtype)
        return torch.empty(shape, device=device, dtype=dtype)
    if isinstance(value, torch.Tensor):
        t = value
        if batch is not None and t.dim():
            t = t[:batch] if t.shape[0] >= batch else t.expand(batch, *t.shape[1:])
        if str(device) == "cpu" and t.device.type not in ("meta",):
            return t.detach().to("cpu").clone()
        if str(device) == "cpu":
            return torch.zeros(t.shape, dtype=t.dtype)
        return torch.empty(t.shape, dtype=t.dtype, device=device)
    if isinstance(value, tuple | list):
        return type(value)(_materialise(v, device, dtype, batch) for v in value)
    return value


def _first_tensor_shape(args: tuple, kwargs: dict) -> tuple[int, ...]:
    for v in [*args, *kwargs.values()]:
        if isinstance(v, Shape):
            return tuple(v)
        if isinstance(v, torch.Tensor):
            return tuple(v.shape)
    return ()


def _batch(args: tuple, kwargs: dict) -> int | None:
    shape = _first_tensor_shape(args, kwargs)
    return shape[0] if shape else None


def _unwrap(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper runs (its ``_orig_mod``), or ``model``."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def count(
    model: nn.Module,
    *args,
    convention: Convention | None = None,
    name: str = "",
    **kwargs,
) -> CostReport:
    """Count every operation of ``model`` called with ``args`` and ``kwargs``.

    Each argument is a tensor, a shape (``(1, 3, 224, 224)`` or ``"1,3,224,224"``: a tensor of the
    model's floating dtype), or any other Python value, passed through; ``count(model, (x, y))``
    passes ``x`` and ``y`` as two arguments. A :class:`Convention` may be given positionally
    after the inputs (``count(model, x, Convention(valid_taps=True))``).

    Returns a :class:`CostReport` with one row per operation call, attributed to the innermost
    module that ran it, and one ``params`` entry per module that owns parameters. The model is
    not modified and nothing moves to its device. It runs, in this order of preference:

    1. on a parameter-free copy on the ``meta`` device: nothing is computed or allocated;
    2. under ``FakeTensorMode`` when the forward cannot run on ``meta`` (a tensor created on the
       CPU inside ``forward``): still nothing is computed;
    3. for real on the CPU at batch 1 (parameters materialised), when the forward needs values
       (``.item()``, an ``if`` on a tensor): run again at batch 2, and when the counts double
       exactly the model is batch-linear and its counts are scaled to the requested batch;
       otherwise it runs once at the requested batch.

    The report's ``method`` and notes say which way was used. A model that fails all three raises
    :class:`ForwardError` with the first error, named by layer.
    """
    if not isinstance(model, nn.Module):
        raise LeanconvError(f"count() needs an nn.Module, got {type(model).__name__}")
    if len(args) >= 2 and isinstance(args[-2], Convention) and isinstance(args[-1], str):
        name, args = args[-1], args[:-1]  # the older form count(model, x, convention, name)
    if args and isinstance(args[-1], Convention):
        convention, args = args[-1], args[:-1]
    convention = convention or DEFAULT
    model = _unwrap(model)
    args, kwargs = _inputs(args, kwargs)
    errors = []
    for way in (_on_meta, _on_fake, _on_cpu):
        try:
            report = way(model, args, kwargs, convention, name)
        except _NeedsAnotherWay as exc:
            errors.append(exc.error)
            continue
        if errors:
            report.notes.append(
                f"counted {report.method}: the forward cannot run on the meta device ({errors[0]})"
            )
        return report
    raise errors[0]


class _NeedsAnotherWay(Exception):
    def __init__(self, error: ForwardError):
        super().__init__(str(error))
        self.error = error


def _run(model, args, kwargs, convention, name, context, method: str) -> CostReport:
    """Run ``model(*args, **kwargs)`` under counting (and ``context``), collect the rows."""
    names = {id(m): n for n, m in model.named_modules()}
    rows: list[LayerCost] = []
    tracker = _Tracker(names)

    def on_opaque_exit(module, margs, output):
        kind, cost = module_rule(module)(module, margs, output, convention)
        rows.append(
            LayerCost(
                names.get(id(module), ""),
                kind,
                first_shape(margs),
                first_shape(output),
                0,
                cost.macs,
                cost.flops,
                cost.bytes,
            )  # fmt: skip
        )

    was_training = model.training
    model.eval()
    try:
        counting = _CountingMode(tracker, convention, rows)
        composites = _CompositeMode(tracker, convention, rows)
        with context, tracker.hooks(on_opaque_exit), torch.no_grad(), counting, composites:
            _call(model, tracker, args, kwargs)
    except LeanconvError:
        raise
    except Exception as exc:  # the user's forward failed: say where
        where = tracker.current() or type(model).__name__
        msg = _one_line(exc)
        shape = _first_tensor_shape(args, kwargs)
        raise _NeedsAnotherWay(ForwardError(
            f"forward pass failed in layer {where!r} on input {shape}: {msg}"
        )) from exc  # fmt: skip
    finally:
        model.train(was_training)
    report = CostReport(_attach_params(model, rows), _first_tensor_shape(args, kwargs),
                        convention, name)  # fmt: skip
    report.method = method
    return report


def _one_line(exc: Exception) -> str:
    """The line of an error that says what went wrong (for TorchScript, its last line: the first
    only says that the interpreter failed)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("The following operation failed in the TorchScript interpreter"):
        return lines[-1]
    return lines[0]


def _model_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _on_meta(model, args, kwargs, convention, name) -> CostReport:
    on_meta = all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
    if on_meta:
        meta_model = model
    elif isinstance(model, torch.jit.ScriptModule):
        meta_model = with_tensors(model, lambda t: torch.empty_like(t, device="meta"))
    else:
        meta_model = meta_copy(model)
    dtype = _model_dtype(meta_model)
    margs = tuple(_materialise(a, "meta", dtype) for a in args)
    mkw = {k: _materialise(v, "meta", dtype) for k, v in kwargs.items()}
    return _run(meta_model, margs, mkw, convention, name, contextlib.nullcontext(), "on meta")


def with_tensors(model: nn.Module, make) -> nn.Module:
    """A copy of ``model`` whose every parameter and buffer ``t`` is ``make(t)`` (no data of the
    original is copied; a TorchScript module, which ``deepcopy``'s memo cannot reach, gets its
    tensors set one by one on its copy)."""
    if isinstance(model, torch.jit.ScriptModule):
        out = copy.deepcopy(model)
        for kind in ("parameters", "buffers"):
            for qual, t in list(getattr(out, f"named_{kind}")()):
                *path, leaf = qual.split(".")
                owner = out
                for part in path:
                    owner = getattr(owner, part)
                new = make(t)
                if kind == "parameters":
                    new = nn.Parameter(new, requires_grad=t.requires_grad)
                setattr(owner, leaf, new)
        return out
    memo: dict[int, object] = {}
    for t in [*model.parameters(), *model.buffers()]:
        new = make(t)
        if isinstance(t, nn.Parameter):
            new = nn.Parameter(new, requires_grad=t.requires_grad)
        memo[id(t)] = new
    return copy.deepcopy(model, memo)


def _on_fake(model, args, kwargs, convention, name) -> CostReport:
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:

        def fake(t):
            device = "cpu" if t.device.type == "meta" else t.device
            return torch.empty(t.shape, dtype=t.dtype, device=device)

        fake_model = with_tensors(model, fake)
        dtype = _model_dtype(model)
        fargs = tuple(_materialise(a, "cpu", dtype) for a in args)  # fakes, under the mode
        fkw = {k: _materialise(v, "cpu", dtype) for k, v in kwargs.items()}
    return _run(fake_model, fargs, fkw, convention, name, mode, "under FakeTensorMode")


def _cpu_model(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` with real parameters: its own values, or small random ones for
    parameters that have none (``meta``: materialised here, on demand)."""

    def real(t):
        if t.device.type != "meta":
            return t.detach().cpu().clone()
        if t.is_floating_point():
            return torch.randn(t.shape, dtype=t.dtype) * 0.01
        return torch.zeros(t.shape, dtype=t.dtype)

    return with_tensors(model, real)


def _on_cpu(model, args, kwargs, convention, name) -> CostReport:
    cpu_model = _cpu_model(model)
    dtype = _model_dtype(model)
    batch = _batch(args, kwargs)

    def at(b):
        cargs = tuple(_materialise(a, "cpu", dtype, b) for a in args)
        ckw = {k: _materialise(v, "cpu", dtype, b) for k, v in kwargs.items()}
        return _run(cpu_model, cargs, ckw, convention, name, contextlib.nullcontext(), "")

    if batch is None or batch <= 2:
        report = at(None)
        report.method = "on the CPU"
        return report
    one, two = at(1), at(2)
    linear = len(one.rows) == len(two.rows) and all(
        (r2.macs, r2.flops) == (2 * r1.macs, 2 * r1.flops) and r1.name == r2.name
        for r1, r2 in zip(one.rows, two.rows, strict=True)
    )  # fmt: skip
    if not linear:
        report = at(None)
        report.method = f"on the CPU at batch {batch}"
        return report
    rows = [
        dataclasses.replace(r, macs=r.macs * batch, flops=r.flops * batch,
                            bytes=_bytes_at(r, r2, batch),
                            input_shape=_rebatch(r.input_shape, batch),
                            output_shape=_rebatch(r.output_shape, batch))
        for r, r2 in zip(one.rows, two.rows, strict=True)
    ]  # fmt: skip
    report = CostReport(rows, _first_tensor_shape(args, kwargs), convention, name)
    report.method = f"on the CPU at batch 1, scaled to batch {batch}"
    return report


def _bytes_at(r1: LayerCost, r2: LayerCost, batch: int) -> int:
    """Bytes at ``batch`` from batch 1 and 2: the part that grows with the batch (activations)
    plus the part that does not (weights): ``b1 + (batch - 1) * (b2 - b1)``."""
    return r1.bytes + (batch - 1) * (r2.bytes - r1.bytes)


def _rebatch(shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    return (batch, *shape[1:]) if shape else shape


def _attach_params(model: nn.Module, rows: list[LayerCost]) -> list[LayerCost]:
    """Give each module's own parameters to its first row; unused modules get a row of their own."""
    own: dict[str, int] = {}
    seen: set[int] = set()
    for mname, module in model.named_modules():
        n = 0
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        if n:
            own[mname] = n
    # parameter containers never run: their parameters belong to the module that uses them
    for mname, module in model.named_modules():
        if isinstance(module, (nn.ParameterList, nn.ParameterDict)) and mname in own:
            parent = mname.rpartition(".")[0]
            own[parent] = own.get(parent, 0) + own.pop(mname)
    out = []
    for r in rows:
        if r.name in own:
            out.append(LayerCost(**{**r.__dict__, "params": own.pop(r.name)}))
        else:
            out.append(r)
    # a TorchScript module runs no Python hooks, and a torch.export / fx graph reads its
    # submodules' parameters without calling them: their parameters go to the nearest module
    # above that has rows (the whole model's row "" at least), not to "unused"
    graphs = (torch.jit.ScriptModule, torch.fx.GraphModule)
    scripted = [n for n, m in model.named_modules() if isinstance(m, graphs)]
    named = {r.name for r in out}
    for mname in list(own):
        if not any(mname == s or mname.startswith(s + ".") or not s for s in scripted):
            continue
        parts = mname.split(".") if mname else []
        for cut in range(len(parts), -1, -1):
            holder = ".".join(parts[:cut])
            if holder in named:
                i = next(i for i, r in enumerate(out) if r.name == holder)
                out[i] = dataclasses.replace(out[i], params=out[i].params + own.pop(mname))
                break
    for mname, n in own.items():  # parameters of modules that did not run (or counted as a whole)
        out.append(LayerCost(mname, "unused", (), (), n, 0, 0, 0, detail="parameters not used"))
    return out
