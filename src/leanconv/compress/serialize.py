"""Saving and loading compressed models without pickle: safetensors plus a JSON description.

A saved model is a directory with ``model.json`` (how to build the base model — a zoo name or a
``file.py:factory`` with keyword arguments — and, for every replaced layer, a description of the
module put in its place) and ``model.safetensors`` (every tensor of the final state dict). Loading
builds the base model, builds each replacement from its description, puts it in place and loads
the tensors: no code or object is ever unpickled.

A module description is a small tree: ``{"type": "Conv2d", "args": {...}}``, or for containers
``{"type": "Sequential", "children": [...]}``. Only the types in :data:`BUILDERS` are allowed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import LeanconvError, OutputExistsError
from ..report.files import write_bytes_atomic, write_text_atomic
from .measure import FORMATS
from .surgery import replace_modules

FORMAT = "leanconv-model/1"


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
    if hasattr(m, "rank"):
        args["rank"] = m.rank
    if hasattr(m, "in_rank"):
        args["in_rank"], args["out_rank"] = m.in_rank, m.out_rank
    if hasattr(m, "ranks") and not callable(m.ranks):
        args["ranks"] = list(m.ranks)
    return args


def _types() -> dict[str, tuple[type, Callable[[nn.Module], dict]]]:
    from ..nn.factorised import CPConv2d, TTConv2d, TuckerConv2d

    return {
        "Conv2d": (nn.Conv2d, _conv_args),
        "Linear": (
            nn.Linear,
            lambda m: dict(
                in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None
            ),
        ),  # fmt: skip
        "ZeroPad2d": (nn.ZeroPad2d, lambda m: dict(padding=list(m.padding))),
        "Identity": (nn.Identity, lambda m: {}),
        "Flatten": (nn.Flatten, lambda m: dict(start_dim=m.start_dim, end_dim=m.end_dim)),
        "CPConv2d": (CPConv2d, _factorised_args),
        "TuckerConv2d": (TuckerConv2d, _factorised_args),
        "TTConv2d": (TTConv2d, _factorised_args),
    }


def describe(module: nn.Module) -> dict:
    """The JSON description of ``module`` (raises for a type that cannot be described)."""
    if type(module) is nn.Sequential:
        return {"type": "Sequential", "children": [describe(c) for c in module]}
    for name, (cls, args) in _types().items():
        if type(module) is cls:
            return {"type": name, "args": args(module)}
    raise LeanconvError(f"cannot describe a {type(module).__name__} for saving without pickle")


def build(desc: dict) -> nn.Module:
    """Build an (uninitialised) module from its description."""
    kind = desc.get("type")
    if kind == "Sequential":
        return nn.Sequential(*[build(c) for c in desc.get("children", [])])
    types = _types()
    if kind not in types:
        raise LeanconvError(f"model description names an unknown module type {kind!r}")
    args = dict(desc.get("args", {}))
    for key in ("kernel_size", "stride", "dilation"):
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key])
    if isinstance(args.get("padding"), list):
        args["padding"] = tuple(tuple(p) if isinstance(p, list) else p for p in args["padding"])
    with torch.device("meta"):
        return types[kind][0](**args)


def save(
    model: nn.Module,
    path: str | Path,
    base: dict,
    replaced: dict[str, nn.Module] | None = None,
    extra: dict | None = None,
    force: bool = False,
    algorithms: dict[str, str] | None = None,
    memory_format: str = "contiguous",
    fuse: bool = False,
) -> Path:
    """Write ``model`` to the directory ``path``.

    ``base`` says how to rebuild the original architecture: ``{"zoo": name, "kwargs": {...}}`` or
    ``{"factory": "file.py:fn", "kwargs": {...}}``. ``replaced`` maps qualified names to the modules
    now at those names (by default, every module of a leanconv factorised type is found).
    ``algorithms`` maps layer names to the fast algorithm their convolutions run by
    (:mod:`.algorithms`); ``model`` itself holds plain convolutions there. ``memory_format``
    (``"contiguous"`` or ``"channels_last"``) is the layout the model was measured fastest in;
    :func:`load` puts the weights in it again. ``fuse``: the model was deployed with its ReLUs
    fused and convolutions packed (:mod:`.fuse`); :func:`load` does it again.
    """
    from safetensors.torch import save as st_save

    path = Path(path)
    if path.exists() and any(path.iterdir()) and not force:
        raise OutputExistsError(f"{str(path)!r} exists and is not empty; pass --force")
    if replaced is None:
        replaced = {}
    description = {
        "format": FORMAT,
        "base": base,
        "replaced": {name: describe(m) for name, m in replaced.items()},
        "algorithms": dict(algorithms or {}),
        "memory_format": memory_format,
        "fused": bool(fuse),
        "extra": extra or {},
    }
    # clone: safetensors refuses tensors that share memory (tied weights)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    path.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path / "model.safetensors", st_save(tensors), force=True)
    write_text_atomic(path / "model.json", json.dumps(description, indent=2), force=True)
    return path


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    algorithms: bool = True,
    factory: Callable[[], nn.Module] | nn.Module | None = None,
) -> nn.Module:
    """Rebuild a model saved by :func:`save` (no pickle is read). With ``algorithms``, in its
    deployment form as recorded: the layers recorded with a fast algorithm run by it, and the
    ReLUs fused and convolutions packed if they were; otherwise plain convolutions and ReLUs.

    ``factory``: the base architecture, a function returning it or the module itself (its
    weights are not used), for a model compressed from Python without a recorded factory, or to
    build it without importing the recorded one. The model returned carries
    ``expected_input``: the input shape, dtype and preprocessing it was compressed with (``{}``
    when not recorded)."""
    from safetensors.torch import load_file

    from ..loading import load_model

    path = Path(path)
    meta_file, weights = path / "model.json", path / "model.safetensors"
    if not meta_file.is_file() or not weights.is_file():
        raise LeanconvError(f"{str(path)!r} holds no model.json and model.safetensors")
    try:
        description = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise LeanconvError(f"{str(meta_file)!r} is not valid JSON: {exc}") from None
    if description.get("format") != FORMAT:
        raise LeanconvError(f"{str(meta_file)!r} is not a {FORMAT} description")
    base = description.get("base") or {}
    source = base.get("zoo") or base.get("factory")
    if factory is not None:
        model = factory if isinstance(factory, nn.Module) else factory()
        if not isinstance(model, nn.Module):
            raise LeanconvError(f"factory returned {type(model).__name__}, not an nn.Module")
        model = copy.deepcopy(model).to("meta")
    elif source:
        model = load_model(source, device="meta", **base.get("kwargs", {})).module
    else:
        raise LeanconvError(
            f"{str(meta_file)!r} does not say how to build the base model (it was compressed "
            "from Python): pass leanconv.load(path, factory=build) with the function that builds "
            "the original architecture"
        )
    replacements = {name: build(d) for name, d in description["replaced"].items()}
    model = replace_modules(model, replacements, inplace=True)
    state = load_file(str(weights), device=str(device))
    model = model.to_empty(device=device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LeanconvError(
            f"{str(weights)!r} does not match the described model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    layout = description.get("memory_format", "contiguous")
    if layout not in FORMATS:
        raise LeanconvError(f"{str(meta_file)!r} names an unknown memory format {layout!r}")
    chosen = description.get("algorithms") or {}
    if algorithms and chosen:
        from .algorithms import ALGORITHMS, apply_algorithms

        unknown = sorted(set(chosen.values()) - set(ALGORITHMS))
        if unknown:
            raise LeanconvError(f"{str(meta_file)!r} names unknown algorithms {unknown}")
        try:
            model, _ = apply_algorithms(model, chosen, inplace=True)
        except AttributeError as exc:
            raise LeanconvError(
                f"{str(meta_file)!r}: an algorithm names no layer ({exc})"
            ) from None
    if algorithms and description.get("fused"):
        from .fuse import fuse_activations

        model, _ = fuse_activations(model, inplace=True)
    model = model.to(memory_format=FORMATS[layout]).eval()
    model.expected_input = dict(description.get("extra", {}).get("input") or {})
    return model
