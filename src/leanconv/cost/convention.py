"""How operations are counted: the settings every cost report states.

A MAC (multiply-accumulate) is one multiplication and one addition. FLOPs are ``flops_per_mac``
times the MACs (2 by default, as in ``torch.utils.flop_counter``), plus, when the settings below ask
for them, one FLOP per element for bias additions, activations and element-wise operations, two per
element for an inference-mode normalisation (scale and shift), and one per window element for
pooling. With every switch off (the default) FLOPs are exactly ``2 x MACs``, the convention of
``FlopCounterMode`` and of the ResNet, MobileNet and ShuffleNet papers (which call MACs "FLOPs").

``valid_taps`` counts only the kernel taps that land on real (non-padded) input, the honest count
for small feature maps; the default counts every tap, as every other tool does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Convention:
    flops_per_mac: int = 2
    count_bias: bool = False
    count_norm: bool = False
    count_activations: bool = False
    count_elementwise: bool = False
    count_pooling: bool = False
    valid_taps: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        counted = [
            name
            for name, on in (
                ("bias", self.count_bias),
                ("normalisation", self.count_norm),
                ("activations", self.count_activations),
                ("element-wise ops", self.count_elementwise),
                ("pooling", self.count_pooling),
            )
            if on
        ]
        extra = ", plus " + ", ".join(counted) if counted else " (bias, norm, activations ignored)"
        taps = "; valid taps only" if self.valid_taps else ""
        return f"1 MAC = 1 multiply + 1 add; FLOPs = {self.flops_per_mac} x MACs{extra}{taps}"


DEFAULT = Convention()
