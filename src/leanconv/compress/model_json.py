"""``model.json``: the description of a saved model, and its allow-list.

A saved model (:mod:`.serialize`) is data, not code: ``model.json`` says how to build the base
architecture (a zoo name, or a factory that only runs when the caller trusts it), which modules
replace which layers, and how the model was deployed. Every field is checked here against an
allow-list *before anything is built* (:func:`validate`): unknown keys, wrong types, module types
outside :func:`module_types`, arguments outside each type's own list, names that are not module
paths, and file names that leave the model directory are refused with the field named.

A module description is a small tree: ``{"type": "Conv2d", "args": {...}}``, or for containers
``{"type": "Sequential", "children": [...]}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from ..errors import LeanconvError

FORMAT = "leanconv-model/1"
#: The file a ``torch.export`` program of the whole model is saved in, beside the weights.
PROGRAM_FILE = "model.pt2"
TOP_LEVEL = {"format", "base", "replaced", "algorithms", "min_batch", "memory_format", "fused",
             "extra", "program"}  # fmt: skip
BASE_KEYS = {"zoo", "factory", "kwargs", "sha256"}
MAX_DEPTH, MAX_CHILDREN, MAX_DIM = 8, 256, 1 << 20
_PATH = re.compile(r"^[A-Za-z_0-9]+(\.[A-Za-z_0-9]+)*$")
_FILE_FACTORY = re.compile(r"^[^:\x00]+\.py:[A-Za-z_]\w*$")
_MODULE_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class ModelFileError(LeanconvError, ValueError):
    """A ``model.json`` that is not what :func:`leanconv.compress.serialize.save` writes."""


# ---------------------------------------------------------------------- modules <-> JSON
def _conv_args(m: nn.Conv2d) -> dict:
    return dict(
        in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=list(m.kernel_size),
        stride=list(m.stride), padding=m.padding if isinstance(m.padding, str) else list(m.padding),
        dilation=list(m.dilation), groups=m.groups, bias=m.bias is not None,
        padding_mode=m.padding_mode,
    )  # fmt: skip


def _factorised_args(m) -> dict:
    args = dict(
        in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=list(m.kernel_size),
        stride=list(m.stride), padding=[list(p) for p in m.padding], dilation=list(m.dilation),
        bias=m.bias is not None,
    )  # fmt: skip
    return {**args, **m.rank_args()}


def _linear_args(m: nn.Linear) -> dict:
    return dict(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)


def _norm_args(m: nn.BatchNorm2d) -> dict:
    return dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                track_running_stats=m.track_running_stats)  # fmt: skip


def module_types() -> dict[str, tuple[type, Callable[[nn.Module], dict]]]:
    """The module types a description may name: class and how to describe an instance."""
    from ..nn.factorised import CPConv2d, TTConv2d, TuckerConv2d

    return {
        "Conv2d": (nn.Conv2d, _conv_args),
        "Linear": (nn.Linear, _linear_args),
        "ZeroPad2d": (nn.ZeroPad2d, lambda m: dict(padding=list(m.padding))),
        "Identity": (nn.Identity, lambda m: {}),
        "BatchNorm2d": (nn.BatchNorm2d, _norm_args),
        "Flatten": (nn.Flatten, lambda m: dict(start_dim=m.start_dim, end_dim=m.end_dim)),
        "CPConv2d": (CPConv2d, _factorised_args),
        "TuckerConv2d": (TuckerConv2d, _factorised_args),
        "TTConv2d": (TTConv2d, _factorised_args),
    }


def describe(module: nn.Module) -> dict:
    """The JSON description of ``module`` (raises for a type that cannot be described)."""
    if type(module) is nn.Sequential:
        return {"type": "Sequential", "children": [describe(c) for c in module]}
    for name, (cls, args) in module_types().items():
        if type(module) is cls:
            return {"type": name, "args": args(module)}
    raise LeanconvError(f"cannot describe a {type(module).__name__} for saving without pickle")


def build(desc: dict, field: str = "module") -> nn.Module:
    """Build an (uninitialised, ``meta``) module from a validated description; arguments the
    module itself refuses (groups that do not divide the channels, ...) raise
    :class:`ModelFileError` naming ``field``."""
    kind = desc["type"]
    if kind == "Sequential":
        children = desc.get("children", [])
        return nn.Sequential(*[build(c, f"{field}.children[{i}]") for i, c in enumerate(children)])
    args = dict(desc.get("args", {}))
    for key in ("kernel_size", "stride", "dilation"):
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key])
    if isinstance(args.get("padding"), list):
        args["padding"] = tuple(tuple(p) if isinstance(p, list) else p for p in args["padding"])
    try:
        with torch.device("meta"):
            return module_types()[kind][0](**args)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"model.json: {field} does not build a {kind}: {exc}") from None


# ---------------------------------------------------------------------- the allow-list
def _fail(field: str, why: str):
    raise ModelFileError(f"model.json: {field} {why}")


def _int(v, field: str, least: int = 0) -> None:
    if type(v) is not int or not least <= v <= MAX_DIM:
        _fail(field, f"must be an integer in {least}..{MAX_DIM}, not {v!r}")


def _ints(v, field: str, n: int, least: int = 0) -> None:
    if not isinstance(v, list) or len(v) != n:
        _fail(field, f"must be a list of {n} integers, not {v!r}")
    for i, x in enumerate(v):
        _int(x, f"{field}[{i}]", least)


def _positive(v, field: str) -> None:
    if type(v) not in (int, float) or not 0 < v < 1:
        _fail(field, f"must be a number in (0, 1), not {v!r}")


def _momentum(v, field: str) -> None:
    """A batch norm's ``momentum``: a number in [0, 1], or null (a cumulative average)."""
    if v is not None and (type(v) not in (int, float) or not 0 <= v <= 1):
        _fail(field, f"must be a number in [0, 1] or null, not {v!r}")


def _bool(v, field: str) -> None:
    if type(v) is not bool:
        _fail(field, f"must be true or false, not {v!r}")


def _padding(v, field: str) -> None:
    if isinstance(v, str):
        if v not in ("same", "valid"):
            _fail(field, f"must be 'same', 'valid' or two integers, not {v!r}")
    elif isinstance(v, list) and v and isinstance(v[0], list):
        if len(v) != 2:
            _fail(field, f"must be two (before, after) pairs, not {v!r}")
        for i, pair in enumerate(v):
            _ints(pair, f"{field}[{i}]", 2)
    else:
        _ints(v, field, 2)


_CONV = {"in_channels": (_int, 1), "out_channels": (_int, 1), "kernel_size": (_ints, 2, 1),
         "stride": (_ints, 2, 1), "padding": (_padding,), "dilation": (_ints, 2, 1),
         "bias": (_bool,)}  # fmt: skip
#: For each module type, the arguments it may take and how each is checked.
ARGUMENTS: dict[str, dict[str, tuple]] = {
    "Conv2d": {**_CONV, "groups": (_int, 1), "padding_mode": ("enum", "zeros", "reflect",
                                                              "replicate", "circular")},
    "Linear": {"in_features": (_int, 1), "out_features": (_int, 1), "bias": (_bool,)},
    "ZeroPad2d": {"padding": (_ints, 4, 0)},
    "Identity": {},
    "BatchNorm2d": {"num_features": (_int, 1), "eps": (_positive,), "momentum": (_momentum,),
                    "affine": (_bool,), "track_running_stats": (_bool,)},
    "Flatten": {"start_dim": ("dim",), "end_dim": ("dim",)},
    "CPConv2d": {**_CONV, "rank": (_int, 1)},
    "TuckerConv2d": {**_CONV, "in_rank": (_int, 1), "out_rank": (_int, 1)},
    "TTConv2d": {**_CONV, "ranks": (_ints, 3, 1)},
}  # fmt: skip


def _check_arg(value, rule: tuple, field: str) -> None:
    kind, *params = rule
    if kind == "enum":
        if value not in params:
            _fail(field, f"must be one of {', '.join(params)}, not {value!r}")
    elif kind == "dim":
        if type(value) is not int or not -8 <= value <= 8:
            _fail(field, f"must be a dimension -8..8, not {value!r}")
    elif kind is _ints:
        _ints(value, field, *params)
    else:
        kind(value, field, *params)


def _check_module(desc, field: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        _fail(field, f"nests deeper than {MAX_DEPTH} levels")
    if not isinstance(desc, dict):
        _fail(field, f"must be a module description, not {type(desc).__name__}")
    kind = desc.get("type")
    if kind == "Sequential":
        if set(desc) - {"type", "children"}:
            _fail(field, f"has unknown keys {sorted(set(desc) - {'type', 'children'})}")
        children = desc.get("children", [])
        if not isinstance(children, list) or len(children) > MAX_CHILDREN:
            _fail(f"{field}.children", f"must be a list of at most {MAX_CHILDREN} modules")
        for i, child in enumerate(children):
            _check_module(child, f"{field}.children[{i}]", depth + 1)
        return
    if kind not in ARGUMENTS:
        _fail(f"{field}.type", f"names an unknown module type {kind!r} (allowed: Sequential, "
              f"{', '.join(ARGUMENTS)})")  # fmt: skip
    if set(desc) - {"type", "args"}:
        _fail(field, f"has unknown keys {sorted(set(desc) - {'type', 'args'})}")
    args = desc.get("args", {})
    if not isinstance(args, dict):
        _fail(f"{field}.args", "must be an object")
    allowed = ARGUMENTS[kind]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        _fail(f"{field}.args", f"has arguments {unknown} that a {kind} does not take")
    for name, value in args.items():
        _check_arg(value, allowed[name], f"{field}.args.{name}")


def _check_json_value(v, field: str, depth: int = 0) -> None:
    if depth > 4:
        _fail(field, "nests too deep")
    if isinstance(v, list):
        for i, x in enumerate(v):
            _check_json_value(x, f"{field}[{i}]", depth + 1)
    elif not (v is None or isinstance(v, bool | int | float | str)):
        _fail(field, f"must be a number, string, boolean or list, not {type(v).__name__}")


def _check_base(base, names: list[str]) -> None:
    if not isinstance(base, dict):
        _fail("base", "must be an object")
    unknown = sorted(set(base) - BASE_KEYS)
    if unknown:
        _fail("base", f"has unknown keys {unknown} (allowed: {', '.join(sorted(BASE_KEYS))})")
    if "zoo" in base and "factory" in base:
        _fail("base", "names both a zoo model and a factory")
    if "zoo" in base and base["zoo"] not in names:
        _fail("base.zoo", f"{base['zoo']!r} is not a reference model ({', '.join(names)})")
    factory = base.get("factory")
    if factory is not None and not (
        isinstance(factory, str)
        and (_FILE_FACTORY.match(factory) or _MODULE_FACTORY.match(factory))
    ):
        _fail("base.factory", f"{factory!r} is not file.py:function or package.module:function")
    if factory is not None and factory.rsplit(":", 1)[0].endswith(".py"):
        file = factory.rsplit(":", 1)[0]
        if file.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", file):
            _fail("base.factory", f"{factory!r} must be a path relative to the model directory")
    sha = base.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        _fail("base.sha256", "must be 64 hexadecimal digits")
    kwargs = base.get("kwargs", {})
    if not isinstance(kwargs, dict):
        _fail("base.kwargs", "must be an object")
    for key, value in kwargs.items():
        if not (isinstance(key, str) and key.isidentifier()):
            _fail("base.kwargs", f"has a key {key!r} that is not an argument name")
        _check_json_value(value, f"base.kwargs.{key}")


def _by_layer(description: dict, field: str) -> dict:
    """``description[field]``: an object whose keys are module paths."""
    value = description.get(field, {})
    if not isinstance(value, dict):
        _fail(field, "must be an object")
    for name in value:
        if not (isinstance(name, str) and _PATH.match(name)):
            _fail(field, f"has a key {name!r} that is not a module path")
    return value


def validate(description) -> dict:
    """``description`` (parsed ``model.json``) if every field is allowed; raises
    :class:`ModelFileError` naming the first field that is not."""
    from .. import zoo
    from .algorithms import DEPLOYED
    from .measure import FORMATS

    if not isinstance(description, dict):
        _fail("the file", "must hold a JSON object")
    unknown = sorted(set(description) - TOP_LEVEL)
    if unknown:
        _fail("the file", f"has unknown keys {unknown}")
    if description.get("format") != FORMAT:
        _fail("format", f"must be {FORMAT!r}, not {description.get('format')!r}")
    _check_base(description.get("base", {}), zoo.names())
    for name, desc in _by_layer(description, "replaced").items():
        _check_module(desc, f"replaced[{name!r}]")
    for name, algorithm in _by_layer(description, "algorithms").items():
        if algorithm not in DEPLOYED:
            _fail(f"algorithms[{name!r}]", f"names an unknown algorithm {algorithm!r}")
    for name, b in _by_layer(description, "min_batch").items():
        _int(b, f"min_batch[{name!r}]", 1)
    if description.get("memory_format", "contiguous") not in FORMATS:
        _fail("memory_format", f"names an unknown memory format "
              f"{description.get('memory_format')!r}")  # fmt: skip
    _bool(description.get("fused", False), "fused")
    extra = description.get("extra", {})
    if not isinstance(extra, dict):
        _fail("extra", "must be an object")
    if not isinstance(extra.get("input", {}), dict):
        _fail("extra.input", "must be an object")
    program = description.get("program")
    if program is not None and program != PROGRAM_FILE:
        _fail("program", f"must be {PROGRAM_FILE!r} (a file beside model.json) or null")
    return description
