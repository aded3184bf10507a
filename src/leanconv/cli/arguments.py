"""Parsing the values of command-line options that several commands share."""

from __future__ import annotations

import ast
import re
from typing import Annotated

import torch
import typer

from ..cost import parse_shape
from ..errors import InputShapeError

#: MODEL of the commands that read any model: ``leanconv cost MODEL``, ``leanconv profile MODEL``.
Model = Annotated[
    str,
    typer.Argument(
        help="zoo name, file.py:factory, TorchScript or .pt2 file, "
        "or a compressed model's directory"
    ),
]

#: ``--trust-code`` of the commands that read any model: a compressed model's directory is then
#: rebuilt from the factory its model.json records (``leanconv.load(path, trust_code=True)``).
TrustCode = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="rebuild a compressed model's directory from the factory its model.json records "
        "(imports that file, checked against its sha256); without it, its torch.export program",
    ),
]

#: The dtypes ``--input SHAPE:DTYPE`` accepts.
DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float16": torch.float16,
    "half": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "double": torch.float64, "int64": torch.int64, "long": torch.int64, "int32": torch.int32,
    "int": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}  # fmt: skip


def literal(text: str):
    """A Python literal (``16000``, ``0.5``, ``True``, ``(1, 2)``, ``'x'``), or the text itself
    when it is not one (a bare word)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def key_values(items: list[str] | None, flag: str) -> dict:
    """``["width=32", "sr=16000"]`` -> ``{"width": 32, "sr": 16000}``; raises naming ``flag``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{flag} {item!r}: give NAME=VALUE, e.g. {flag} width=32")
        if key.strip() in out:
            raise ValueError(f"{flag}: {key.strip()!r} given twice")
        out[key.strip()] = literal(value.strip())
    return out


def input_spec(text: str) -> tuple[int, ...] | torch.Tensor:
    """``--input 1,3,224,224`` -> the shape (a tensor of the model's dtype); ``1,128:int64`` -> an
    empty tensor of that shape and dtype, on ``meta`` (only its shape and dtype matter)."""
    shape_text, sep, dtype_text = text.partition(":")
    shape = parse_shape(shape_text)
    if not sep:
        return shape
    dtype = DTYPES.get(dtype_text.strip().lower())
    if dtype is None:
        raise InputShapeError(
            f"--input {text!r}: unknown dtype {dtype_text!r}; choose from "
            + ", ".join(sorted({k for k in DTYPES if re.fullmatch(r"[a-z]+\d*", k)}))
        )
    return torch.empty(shape, dtype=dtype, device="meta")


def needs_input(model: str, example: bool = True) -> InputShapeError:
    """The error for a model that has no example input of its own and got no ``--input``."""
    hint = ", e.g. --input 1,3,224,224" if example else ""
    return InputShapeError(f"model {model!r} needs --input{hint}")


def input_shape(text: str | None, loaded, model: str, example: bool = True) -> tuple[int, ...]:
    """``--input SHAPE`` parsed, or the shape of the loaded model's own example input."""
    shape = parse_shape(text) if text else loaded.default_input
    if shape is None:
        raise needs_input(model, example)
    return shape
