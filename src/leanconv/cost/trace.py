"""Whole-model counting at the dispatcher, attributed to modules.

``count(model, input)`` runs the model once under a ``TorchDispatchMode`` that sees every ATen
operation (so functional calls such as ``F.conv2d``, ``einsum`` and ``@`` are counted, not only
modules) and attributes each to the innermost module whose ``forward`` is running, tracked with
global forward hooks. The model runs on a parameter-free copy on the ``meta`` device, so nothing is
computed or allocated and any model size takes the same few milliseconds per layer. Modules that
define :data:`MODULE_RULES` entries (e.g. deformable convolution) are counted by their closed form.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from torch import nn
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
        return ""


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


def _example(example, dtype: torch.dtype | None) -> torch.Tensor:
    if isinstance(example, torch.Tensor):
        return torch.empty_like(example, device="meta")
    shape = parse_shape(example)
    return torch.empty(shape, device="meta", dtype=dtype or torch.float32)


def count(
    model: nn.Module,
    example: torch.Tensor | Sequence[int] | str,
    convention: Convention = DEFAULT,
    name: str = "",
) -> CostReport:
    """Count every operation of ``model`` on an input like ``example`` (a tensor or a shape).

    Returns a :class:`CostReport` with one row per operation call, attributed to the innermost
    module that ran it, and one ``params`` entry per module that owns parameters. The model is
    not modified and nothing is computed. Raises :class:`ForwardError` when the forward fails.
    """
    if not isinstance(model, nn.Module):
        raise LeanconvError(f"count() needs an nn.Module, got {type(model).__name__}")
    on_meta = all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
    meta_model = model if on_meta else meta_copy(model)
    was_training = meta_model.training
    meta_model.eval()
    dtype = next((p.dtype for p in meta_model.parameters() if p.is_floating_point()), None)
    x = _example(example, dtype)
    names = {id(m): n for n, m in meta_model.named_modules()}
    rows: list[LayerCost] = []
    tracker = _Tracker(names)

    def on_opaque_exit(module, args, output):
        kind, cost = module_rule(module)(module, args, output, convention)
        rows.append(
            LayerCost(
                names.get(id(module), ""),
                kind,
                first_shape(args),
                first_shape(output),
                0,
                cost.macs,
                cost.flops,
                cost.bytes,
            )  # fmt: skip
        )

    try:
        with (
            tracker.hooks(on_opaque_exit),
            _CountingMode(tracker, convention, rows),
            torch.no_grad(),
        ):
            meta_model(x)
    except LeanconvError:
        raise
    except Exception as exc:  # the user's forward failed: say where
        where = tracker.current() or type(model).__name__
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ForwardError(
            f"forward pass failed in layer {where!r} on input {tuple(x.shape)}: {msg}"
        ) from exc
    finally:
        if on_meta:
            meta_model.train(was_training)
    return CostReport(_attach_params(meta_model, rows), tuple(x.shape), convention, name)


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
    for mname, n in own.items():  # parameters of modules that did not run (or counted as a whole)
        out.append(LayerCost(mname, "unused", (), (), n, 0, 0, 0, detail="parameters not used"))
    return out
