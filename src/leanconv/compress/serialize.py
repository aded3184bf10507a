"""Saving and loading compressed models without pickle and without running code.

A saved model is a directory with ``model.json`` (:mod:`.model_json`: how to build the base
architecture, a description of every module put in place of a layer, how it was deployed, what
input it expects) and ``model.safetensors`` (every tensor of the final state dict); for a model
whose architecture is not a reference (zoo) model, also ``model.pt2``, a ``torch.export`` program
of the whole compressed model, so that it loads without the user's code.

Loading never runs code the caller did not name: ``model.json`` is checked field by field
against an allow-list before anything is built; a zoo base is built by name; a factory recorded
in ``model.json`` (``file.py:function`` or ``package.module:function``) is imported only with
``trust_code=True``, a file factory only from a path relative to the model directory and only if
its sha256 is the one recorded at save time; otherwise the caller's own ``factory=`` builds the
architecture, or the saved program is loaded. No pickle is ever read.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .. import factories
from ..atomic import write_bytes_atomic, write_text_atomic
from ..errors import LeanconvError, OutputExistsError
from ..weights import check_finite
from .measure import FORMATS
from .model_json import FORMAT, PROGRAM_FILE, ModelFileError, build, describe, validate
from .surgery import replace_modules

__all__ = ["FORMAT", "ModelFileError", "build", "describe", "load", "save"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _portable_base(base: dict, path: Path) -> dict:
    """``base`` as saved in ``path``: a file factory's path made relative to the model
    directory, with the file's sha256."""
    factory = base.get("factory")
    if not factory or not factory.rsplit(":", 1)[0].endswith(".py"):
        return dict(base)
    file, fn = factory.rsplit(":", 1)
    source = Path(file).resolve()
    if not source.is_file():
        raise LeanconvError(f"factory file {file!r} does not exist")
    relative = os.path.relpath(source, path.resolve())
    return {**base, "factory": f"{relative}:{fn}", "sha256": sha256_of(source)}


def _export_program(model: nn.Module, example: torch.Tensor, path: Path) -> str | None:
    """Save ``model`` as a ``torch.export`` program (batch dimension dynamic) in
    ``path/model.pt2``; ``None`` (and nothing written) when it cannot be exported."""
    model = copy.deepcopy(model).eval()
    # each weight contiguous and alone in its storage, as the archive stores raw tensors: on a
    # channels-last weight torch.export.save warns that it found no complete tensor
    with torch.no_grad():
        for t in itertools.chain(model.parameters(), model.buffers()):
            whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
            if not (whole and t.is_contiguous()):
                t.data = t.data.clone(memory_format=torch.contiguous_format)
    try:
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception:
        try:
            program = torch.export.export(model, (example,))
        except Exception:
            return None
    tmp = path / f".partial.{PROGRAM_FILE}"  # ends in .pt2, as torch.export expects
    torch.export.save(program, str(tmp))
    os.replace(tmp, path / PROGRAM_FILE)
    return PROGRAM_FILE


def save(
    model: nn.Module,
    path: str | Path,
    base: dict,
    replaced: dict[str, nn.Module] | None = None,
    extra: dict | None = None,
    force: bool = False,
    algorithms: dict[str, str] | None = None,
    min_batch: dict[str, int] | None = None,
    memory_format: str = "contiguous",
    fuse: bool = False,
    example: torch.Tensor | None = None,
) -> Path:
    """Write ``model`` to the directory ``path``.

    ``base`` says how to rebuild the original architecture: ``{"zoo": name, "kwargs": {...}}``,
    ``{"factory": "file.py:fn" or "package.module:fn", "kwargs": {...}}`` (a file's path is saved
    relative to ``path``, with its sha256), or ``{}`` (nothing recorded: :func:`load` then needs
    the caller's ``factory`` or the program). With ``example`` (an input) and a base that is not
    a zoo model, the model is also saved as a ``torch.export`` program. ``replaced`` maps
    qualified names to the modules now at those names (by default, every module of a leanconv
    factorised type is found).
    ``algorithms`` maps layer names to the fast algorithm their convolutions run by
    (:mod:`.algorithms`); ``model`` itself holds plain convolutions there; ``min_batch`` the
    batch size from which each of them runs it (:mod:`leanconv.selection.batch_switch`; direct
    below). ``memory_format``
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
    path.mkdir(parents=True, exist_ok=True)
    program = None
    if example is not None and "zoo" not in base:
        program = _export_program(model, example, path)
    description = {
        "format": FORMAT,
        "base": _portable_base(base, path),
        "replaced": {name: describe(m) for name, m in replaced.items()},
        "algorithms": dict(algorithms or {}),
        "min_batch": {n: int(b) for n, b in (min_batch or {}).items()},
        "memory_format": memory_format,
        "fused": bool(fuse),
        "extra": extra or {},
        "program": program,
    }
    validate(json.loads(json.dumps(description)))  # what load will check
    # clone: safetensors refuses tensors that share memory (tied weights)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    write_bytes_atomic(path / "model.safetensors", st_save(tensors), force=True)
    write_text_atomic(path / "model.json", json.dumps(description, indent=2), force=True)
    return path


def _read_description(meta_file: Path) -> dict:
    try:
        description = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{str(meta_file)!r} is not valid JSON: {exc}") from None
    try:
        return validate(description)
    except ModelFileError as exc:
        raise ModelFileError(f"{str(meta_file)!r}: {exc}") from None


def _trusted_factory(base: dict, path: Path) -> nn.Module:
    """The base model built by the recorded factory (the caller said ``trust_code=True``)."""
    factory, kwargs = base["factory"], base.get("kwargs", {})
    file, _, fn = factory.rpartition(":")
    if not file.endswith(".py"):
        return _built(factory, kwargs, path)
    source = (path / file).resolve()  # relative to the model directory, never the current one
    if not source.is_file():
        raise LeanconvError(f"{str(path / 'model.json')!r}: the factory file {file!r} is not "
                            f"there (looked for {str(source)!r})")  # fmt: skip
    if base.get("sha256") is None:
        raise LeanconvError(
            f"{str(path / 'model.json')!r} records no sha256 of its factory file; pass "
            "factory=... to build the architecture"
        )
    if sha256_of(source) != base["sha256"]:
        raise LeanconvError(
            f"the factory file {str(source)!r} has changed since the model was saved (its "
            "sha256 differs): not imported; pass factory=... to build the architecture"
        )
    return _built(f"{source}:{fn}", kwargs, path)


def _built(spec: str, kwargs: dict, path: Path) -> nn.Module:
    """The model that ``spec`` (a zoo name or a factory) builds with ``kwargs`` (a zoo model on
    ``meta``); an error naming the model file when it names neither."""
    built = factories.build(spec, "meta", kwargs)
    if built is None:
        raise ModelFileError(f"{str(path / 'model.json')!r}: {spec!r} is neither a zoo name nor "
                             "a factory")  # fmt: skip
    return built[0]


def _base_model(description: dict, path: Path, factory, trust_code: bool) -> nn.Module | None:
    """The base architecture on ``meta``; ``None`` when only the saved program can serve."""
    base = description.get("base") or {}
    if factory is not None:
        model = factory if isinstance(factory, nn.Module) else factory()
        if not isinstance(model, nn.Module):
            raise LeanconvError(f"factory returned {type(model).__name__}, not an nn.Module")
        return copy.deepcopy(model).to("meta")
    if "zoo" in base:
        try:
            return _built(base["zoo"], base.get("kwargs", {}), path)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{str(path / 'model.json')!r}: base.kwargs do not build "
                                 f"{base['zoo']!r}: {exc}") from None  # fmt: skip
    if "factory" in base and trust_code:
        return _trusted_factory(base, path)
    if description.get("program"):
        return None
    if "factory" in base:
        raise LeanconvError(
            f"{str(path / 'model.json')!r} names the factory {base['factory']!r}: loading it "
            "runs that code. Pass trust_code=True if you trust this directory, or factory=build "
            "with the function that builds the architecture"
        )
    raise LeanconvError(
        f"{str(path / 'model.json')!r} does not say how to build the base model (it was "
        "compressed from Python): pass leanconv.load(path, factory=build) with the function that "
        "builds the original architecture"
    )


def _load_program(path: Path, description: dict, device, state: dict) -> nn.Module:
    """The saved program's module, with the weights of ``model.safetensors`` (the program's own
    copy must name the same tensors), in eval mode as it was exported (:func:`_train_exported`:
    ``eval()`` works, as on any module, and ``train()`` says why it cannot)."""
    try:
        program = torch.export.load(str(path / PROGRAM_FILE))
    except Exception as exc:
        raise LeanconvError(f"{str(path / PROGRAM_FILE)!r} cannot be read: {exc}") from None
    model = program.module().to(device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).strip().splitlines()[:2])[:300]
        raise LeanconvError(
            f"{str(path / 'model.safetensors')!r} does not match {PROGRAM_FILE}: {first}"
        ) from None
    model.expected_input = dict(description.get("extra", {}).get("input") or {})
    for module in model.modules():
        module.training = False  # exported in eval mode: the graph computes that
    model.train = types.MethodType(_train_exported, model)
    model.eval = types.MethodType(_eval_exported, model)
    return model


def _train_exported(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train`` of a loaded ``torch.export`` program (whose own ``train``/``eval`` raise
    ``NotImplementedError``): ``eval()`` is a no-op, the program having been exported in eval
    mode; training mode cannot be switched on in a traced graph, so it is refused, saying what
    to do instead."""
    if mode:
        raise LeanconvError(
            "this model was loaded from its saved torch.export program (model.pt2), which runs "
            "as exported, in eval mode, and cannot be put in training mode: to train or "
            "fine-tune it, load it with its architecture (leanconv.load(path, factory=...) or "
            "trust_code=True)"
        )
    return self


def _eval_exported(self: nn.Module) -> nn.Module:
    return self.train(False)


def _read_weights(weights: Path, device) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``, every one finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LeanconvError(
            f"{str(weights)!r} cannot be read (truncated or not a safetensors file): {exc}"
        ) from None
    check_finite(state, repr(str(weights)))
    return state


def _check_shapes(model: nn.Module, state: dict[str, torch.Tensor], weights: Path) -> None:
    """Every tensor of the described model has its counterpart, of the same shape, in the file
    (checked on ``meta``, before any memory is allocated for the model)."""
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise LeanconvError(
            f"{str(weights)!r} does not match the described model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    wrong = [k for k, t in own.items() if k in state and tuple(state[k].shape) != tuple(t.shape)]
    if wrong:
        k = wrong[0]
        raise LeanconvError(
            f"{str(weights)!r} does not match the described model: {k} is "
            f"{tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in model.json"
        )


def _set_min_batch(model: nn.Module, min_batch: dict[str, int], meta_file: Path) -> None:
    """Each named fast layer's ``min_batch``; a named decomposed chain made switchable
    (:class:`leanconv.nn.ChainConv2d`) with its ``min_batch``."""
    from .deploy import switchable_chains

    layers = dict(model.named_modules())
    for name, b in min_batch.items():
        layer = layers.get(name)
        if layer is not None and not hasattr(layer, "min_batch"):
            layer = switchable_chains(model, [name]).get(name)
            if layer is not None:
                replace_modules(model, {name: layer}, inplace=True)
        if layer is None or not hasattr(layer, "min_batch"):
            raise LeanconvError(
                f"{str(meta_file)!r}: min_batch[{name!r}] names no fast layer nor a chain of "
                "convolutions that composes into one"
            )
        layer.min_batch = b


def _chains_as_deployed(model: nn.Module, replaced) -> None:
    """Each decomposed layer's chain as the deployment runs it, a
    :class:`leanconv.nn.ChainConv2d` (``min_batch`` 1 where none was recorded: its narrow factors
    in one pass), in place."""
    from ..modules import get_layer
    from ..nn import ChainConv2d
    from .deploy import switchable_chains

    names = [n for n in replaced if not isinstance(get_layer(model, n), ChainConv2d)]
    replace_modules(model, switchable_chains(model, names), inplace=True)


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    algorithms: bool = True,
    factory: Callable[[], nn.Module] | nn.Module | None = None,
    trust_code: bool = False,
) -> nn.Module:
    """Rebuild a model saved by :func:`save`; no pickle is read and no code runs unless asked.

    The architecture comes from, in order: ``factory`` (a function returning the base model, or
    the module itself; its weights are not used); the reference model named in ``model.json``;
    the factory recorded there, only with ``trust_code=True`` (a file factory is looked for
    relative to the model directory and must have the sha256 recorded at save time); else the
    saved ``torch.export`` program (``model.pt2``: the whole model, run as exported). With
    ``algorithms``, the model is rebuilt in its deployment form as recorded (the layers recorded
    with a fast algorithm run by it, ReLUs fused and convolutions packed if they were); otherwise
    plain convolutions and ReLUs. The model carries ``expected_input``: the input shape, dtype and
    preprocessing it was compressed with (``{}`` when not recorded).
    """
    path = Path(path)
    meta_file, weights = path / "model.json", path / "model.safetensors"
    if not meta_file.is_file() or not weights.is_file():
        raise LeanconvError(f"{str(path)!r} holds no model.json and model.safetensors")
    description = _read_description(meta_file)
    # every replacement is built (on meta) before any base is: a description that does not
    # build fails before a trusted factory is imported
    replacements = {name: build(d, f"replaced[{name!r}]")
                    for name, d in description.get("replaced", {}).items()}  # fmt: skip
    model = _base_model(description, path, factory, trust_code)
    if model is None:
        return _load_program(path, description, device, _read_weights(weights, device))
    try:
        model = replace_modules(model, replacements, inplace=True)
    except LeanconvError as exc:
        raise LeanconvError(f"{str(meta_file)!r}: {exc}") from None
    state = _read_weights(weights, device)
    _check_shapes(model, state, weights)
    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=True)
    layout = description.get("memory_format", "contiguous")
    chosen = description.get("algorithms") or {}
    if algorithms and chosen:
        from .algorithms import apply_algorithms

        try:
            model, _ = apply_algorithms(model, chosen, inplace=True)
        except AttributeError as exc:
            raise LeanconvError(
                f"{str(meta_file)!r}: an algorithm names no layer ({exc})"
            ) from None
    if algorithms and description.get("fused"):
        from ..rewrite import fuse_activations

        model, _ = fuse_activations(model, inplace=True)
    if algorithms:  # after fusing: a switchable chain holds the fused chain
        _set_min_batch(model, description.get("min_batch") or {}, meta_file)
        _chains_as_deployed(model, description.get("replaced", {}))
    model = model.to(memory_format=FORMATS[layout]).eval()
    model.expected_input = dict(description.get("extra", {}).get("input") or {})
    return model
