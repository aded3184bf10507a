"""Exact costs of convolutions and whole models: closed forms, dispatcher counting, what-ifs."""

from .convention import DEFAULT, Convention
from .formulas import (
    OpCost,
    conv_cost,
    conv_macs,
    conv_params,
    deform_conv_cost,
    einsum_macs,
    linear_cost,
    matmul_macs,
    pool_cost,
)
from .report import CostReport, LayerCost, Totals
from .trace import count, meta_copy, parse_shape, register_module_rule

__all__ = [
    "DEFAULT", "Convention", "OpCost", "conv_cost", "conv_macs", "conv_params",
    "deform_conv_cost", "einsum_macs", "linear_cost", "matmul_macs", "pool_cost", "CostReport",
    "LayerCost", "Totals", "count", "meta_copy", "parse_shape", "register_module_rule",
]  # fmt: skip
