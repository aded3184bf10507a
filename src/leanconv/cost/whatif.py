"""What-if comparisons for one convolution: the cheaper forms practitioners argue about.

Each alternative is a sequence of :class:`ConvSpec` that produces the same output shape (or, for
"wider but fewer", replaces a stack of layers like the original), costed with the same closed forms
as everything else. Figures these reproduce exactly (tests hold them):

- one 5x5 vs two stacked 3x3 (Simonyan & Zisserman 2015): 25 vs 18 multiplications per output
  with 'same' padding; on an unpadded 5x5 input, 25 vs 90 in total (the first 3x3 computes nine
  outputs to feed a single one);
- a 1x1 bottleneck at 256 channels, squeeze 4 (He et al. 2016): 589,824 vs 69,632 weights;
- depthwise separable 3 -> 256 channels, 3x3 (Howard et al. 2017): 6,912 vs 795 weights;
- groups g: 1/g of the weights and MACs (Krizhevsky et al. 2012; Zhang et al. 2018 add a shuffle);
- Winograd F(2x2, 3x3): 16 instead of 36 multiplications per 2x2 output tile (Lavin & Gray 2016).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import InvalidSpecError
from ..spec import ConvSpec
from .algorithms import winograd_multiplications
from .convention import DEFAULT, Convention
from .formulas import OpCost, conv_cost

#: The fields of an :class:`Alternative` that its JSON row holds as they are, in this order.
_FIGURES = ("name", "description", "params", "macs", "per_output")


@dataclass(frozen=True)
class Alternative:
    """One row of a what-if table."""

    name: str
    description: str
    params: int
    macs: int
    per_output: float  # multiplications per output element (MACs / (N * C_out * prod(out)))
    baseline_params: int
    baseline_macs: int
    layers: tuple[ConvSpec, ...] = field(default=(), repr=False)
    skipped: str = ""  # why this alternative does not apply, if it does not

    @property
    def params_ratio(self) -> float:
        return self.params / self.baseline_params if self.baseline_params else float("nan")

    @property
    def macs_ratio(self) -> float:
        return self.macs / self.baseline_macs if self.baseline_macs else float("nan")

    def as_dict(self) -> dict:
        """The JSON row: the figures, the ratios (``None`` when skipped), the layers described."""
        row = {key: getattr(self, key) for key in _FIGURES}
        row["params_ratio"] = None if self.skipped else self.params_ratio
        row["macs_ratio"] = None if self.skipped else self.macs_ratio
        row["layers"] = [s.describe() for s in self.layers]
        row["skipped"] = self.skipped
        return row


@dataclass(frozen=True)
class WhatIf:
    original: ConvSpec
    rows: tuple[Alternative, ...]

    def row(self, name: str) -> Alternative:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no alternative {name!r}; have {[r.name for r in self.rows]}")

    def as_dict(self) -> dict:
        return {"original": self.original.describe(), "rows": [r.as_dict() for r in self.rows]}

    def to_table(self):
        from rich.table import Table

        s = self.original
        table = Table(
            title=f"What if: {s.describe()} on {'x'.join(map(str, s.input_shape))}",
            caption="ratios against the original layer "
            "(wider-but-fewer: against the stack it replaces)",
        )
        for col, justify in (
            ("alternative", "left"), ("layers", "left"), ("params", "right"), ("MACs", "right"),
            ("mults/output", "right"), ("params x", "right"), ("MACs x", "right"),
        ):  # fmt: skip
            table.add_column(col, justify=justify)
        for r in self.rows:
            if r.skipped:
                table.add_row(r.name, f"[dim]n/a: {r.skipped}[/]", "", "", "", "", "")
                continue
            table.add_row(
                r.name,
                r.description,
                f"{r.params:,}",
                f"{r.macs:,}",
                f"{r.per_output:.3g}",
                f"{r.params_ratio:.3f}",
                f"{r.macs_ratio:.3f}",
            )
        return table


def _chain_cost(layers: Sequence[ConvSpec], convention: Convention) -> tuple[int, int]:
    costs = [conv_cost(layer, convention) for layer in layers]
    return sum(c.params for c in costs), sum(c.macs for c in costs)


def _outputs(spec: ConvSpec) -> int:
    return spec.batch * spec.out_channels * math.prod(spec.output_size)


def _chain(first: ConvSpec, *rest: dict) -> tuple[ConvSpec, ...]:
    """Specs applied in sequence; each ``rest`` dict overrides fields of a copy of the previous
    layer, whose input is the previous output."""
    layers = [first]
    for changes in rest:
        prev = layers[-1]
        layers.append(
            prev.with_(in_channels=prev.out_channels, input_size=prev.output_size, **changes)
        )
    return tuple(layers)


def stacked_3x3(spec: ConvSpec) -> tuple[ConvSpec, ...]:
    """``(k - 1) / 2`` stacked 3x3 layers with the receptive field of one ``k x k``.

    The original padding is spread over the layers and the stride goes to the last one, so the
    output shape is the original's.
    """
    k = spec.kernel_size
    if spec.ndim != 2 or k[0] != k[1] or k[0] % 2 == 0 or k[0] < 5:
        raise InvalidSpecError(f"stacked 3x3 needs an odd square kernel of 5 or more, got {k}")
    if spec.dilation != (1, 1) or spec.transposed:
        raise InvalidSpecError("stacked 3x3 needs dilation 1 and a direct convolution")
    n = (k[0] - 1) // 2
    pads = []
    for lo, hi in spec.padding:  # split each side's padding as evenly as possible
        pads.append([(lo // n + (i < lo % n), hi // n + (i < hi % n)) for i in range(n)])
    layers = []
    for i in range(n):
        c_in = spec.in_channels if i == 0 else spec.out_channels
        size = spec.input_size if i == 0 else layers[-1].output_size
        layers.append(
            spec.with_(
                in_channels=c_in,
                kernel_size=3,
                input_size=size,
                padding=(pads[0][i], pads[1][i]),
                stride=spec.stride if i == n - 1 else 1,
                bias=spec.bias if i == n - 1 else False,
            )
        )
    return tuple(layers)


def spatially_separable(spec: ConvSpec, mid: int | None = None) -> tuple[ConvSpec, ...]:
    """``k x 1`` (C_in -> mid) then ``1 x k`` (mid -> C_out), as in Inception-v3.

    ``mid`` defaults to ``min(C_in, C_out)``, the narrowest width that loses no rank.
    """
    if spec.ndim != 2 or spec.groups != 1 or spec.transposed:
        raise InvalidSpecError("spatially separable needs a 2-D direct convolution with groups=1")
    mid = mid or min(spec.in_channels, spec.out_channels)
    (kh, kw), (ph, pw) = spec.kernel_size, spec.padding
    first = spec.with_(
        out_channels=mid,
        kernel_size=(kh, 1),
        padding=(ph, (0, 0)),
        stride=(spec.stride[0], 1),
        dilation=(spec.dilation[0], 1),
        bias=False,
    )
    second = dict(
        out_channels=spec.out_channels,
        kernel_size=(1, kw),
        padding=((0, 0), pw),
        stride=(1, spec.stride[1]),
        dilation=(1, spec.dilation[1]),
        bias=spec.bias,
    )
    return _chain(first, second)


def _pointwise(spec: ConvSpec) -> dict:
    """The closing 1x1 projection to the original output channels (it carries the bias)."""
    return dict(out_channels=spec.out_channels, kernel_size=1, stride=1, padding=0, dilation=1,
                groups=1, bias=spec.bias)  # fmt: skip


def bottleneck(spec: ConvSpec, squeeze: int = 4) -> tuple[ConvSpec, ...]:
    """1x1 (C_in -> C_in / squeeze), the original k x k at the narrow width, 1x1 (-> C_out)."""
    if squeeze < 1:
        raise InvalidSpecError(f"squeeze={squeeze} must be at least 1")
    if spec.transposed:
        raise InvalidSpecError("bottleneck needs a direct convolution")
    mid = spec.in_channels // squeeze
    if mid < 1:
        raise InvalidSpecError(f"squeeze={squeeze} leaves no channels of {spec.in_channels}")
    if mid % spec.groups:
        raise InvalidSpecError(f"squeezed width {mid} is not divisible by groups={spec.groups}")
    squeeze_layer = spec.with_(out_channels=mid, kernel_size=1, stride=1, padding=0, dilation=1,
                               groups=1, bias=False)  # fmt: skip
    return _chain(
        squeeze_layer,
        dict(
            out_channels=mid,
            kernel_size=spec.kernel_size,
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            groups=spec.groups,
        ),  # fmt: skip
        _pointwise(spec),
    )


def depthwise_separable(spec: ConvSpec, multiplier: int = 1) -> tuple[ConvSpec, ...]:
    """Depthwise k x k (C_in -> multiplier * C_in, groups = C_in), then 1x1 (-> C_out)."""
    if multiplier < 1:
        raise InvalidSpecError(f"depth multiplier={multiplier} must be at least 1")
    if spec.transposed:
        raise InvalidSpecError("depthwise separable needs a direct convolution")
    c = spec.in_channels
    depthwise = spec.with_(out_channels=c * multiplier, groups=c, bias=False)
    return _chain(
        depthwise,
        _pointwise(spec),
    )


def grouped(spec: ConvSpec, groups: int) -> tuple[ConvSpec, ...]:
    """The same layer with ``groups`` groups (a channel shuffle after it costs no MACs)."""
    return (spec.with_(groups=groups),)


def whatif(
    spec: ConvSpec,
    squeeze: int = 4,
    multiplier: int = 1,
    groups: int = 8,
    tiles: Sequence[int] = (2, 4, 6),
    depth: int = 2,
    convention: Convention = DEFAULT,
) -> WhatIf:
    """Every applicable alternative to ``spec``, with params, MACs and ratios to the original.

    Alternatives that do not apply (say, Winograd for a strided layer) are listed with the reason.
    """
    base = conv_cost(spec, convention)
    original = Alternative("original", spec.describe(), base.params, base.macs,
                           base.macs / _outputs(spec), base.params, base.macs, (spec,))  # fmt: skip
    rewrites = {
        "stacked_3x3": lambda: stacked_3x3(spec),
        "spatially_separable": lambda: spatially_separable(spec),
        f"bottleneck_1x1 (squeeze {squeeze})": lambda: bottleneck(spec, squeeze),
        f"depthwise_separable (multiplier {multiplier})": (
            lambda: depthwise_separable(spec, multiplier)
        ),
        f"grouped (g={groups}) + shuffle": lambda: grouped(spec, groups),
    }
    rows = [original]
    rows += [_rewrite_row(name, build, spec, base, convention) for name, build in rewrites.items()]
    rows += [_winograd_row(spec, m, base) for m in tiles]
    rows += _wider_but_fewer(spec, depth, base, convention)
    return WhatIf(spec, tuple(rows))


def _skipped(name: str, exc: InvalidSpecError, base: OpCost) -> Alternative:
    """The row of an alternative that does not apply, with the reason."""
    return Alternative(name, "", 0, 0, 0.0, base.params, base.macs, skipped=str(exc))


def _rewrite_row(name: str, build, spec: ConvSpec, base: OpCost, convention) -> Alternative:
    """The row of the chain of layers ``build()`` returns in place of ``spec``."""
    try:
        layers = build()
    except InvalidSpecError as exc:
        return _skipped(name, exc, base)
    params, macs = _chain_cost(layers, convention)
    text = " -> ".join(s.describe() for s in layers)
    return Alternative(name, text, params, macs, macs / _outputs(spec), base.params, base.macs,
                       layers)  # fmt: skip


def _winograd_row(spec: ConvSpec, m: int, base: OpCost) -> Alternative:
    """Winograd ``F(m x m, k)``: the original's weights, fewer multiplications per output."""
    k = spec.kernel_size
    name = f"winograd F({m}x{m},{k[0]}x{k[-1]})"
    try:
        w = winograd_multiplications(spec, m)
    except InvalidSpecError as exc:
        return _skipped(name, exc, base)
    return Alternative(
        name,
        f"{w.per_tile} vs {w.direct_per_tile} multiplications per {m}x{m} tile",
        base.params,
        w.multiplications,
        w.multiplications / _outputs(spec),
        base.params,
        base.macs,
    )  # fmt: skip


def _wider_but_fewer(spec: ConvSpec, depth: int, base: OpCost, convention) -> list[Alternative]:
    """One layer ``sqrt(depth)`` times wider in place of ``depth`` layers (same params); no row
    unless ``spec`` keeps its width (``C_in == C_out``, groups 1) and ``depth > 1``."""
    wide = max(1, round(spec.in_channels * math.sqrt(depth)))
    square = spec.in_channels == spec.out_channels and spec.groups == 1
    if not (depth > 1 and square and wide > spec.in_channels):
        return []
    layer = spec.with_(in_channels=wide, out_channels=wide)
    cost = conv_cost(layer, convention)
    return [
        Alternative(
            f"wider_but_fewer (1 in place of {depth})",
            f"1 layer of {wide} channels vs {depth} layers of {spec.in_channels}",
            cost.params,
            cost.macs,
            cost.macs / _outputs(layer),
            depth * base.params,
            depth * base.macs,
            (layer,),
        )  # fmt: skip
    ]
