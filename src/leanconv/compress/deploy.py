"""The deployment form of a model: how the compressed model runs, and how everything is timed.

A rewritten model is deployed after exact rewrites that change its speed but not its function
(up to float32 rounding), in this order:

1. batch norms folded into the convolutions before them (:mod:`leanconv.rewrite.fold`, ``fold_bn``);
2. the planned fast algorithms switched on (:mod:`.algorithms`), and, in the final deployment, the
   narrow direct kernel on the decomposed layers' factors (:func:`.algorithms.narrow_candidates`),
   kept by :func:`settle_lost` only where :func:`leanconv.selection.batch_switch.fit_min_batch`
   measured it faster at some batch size (as the planned Winograd layers are); the streaming
   matrix-vector kernel on every ``nn.Linear`` (:func:`.algorithms.gemv_candidates`), kept by
   :func:`settle_gemv` only where :func:`leanconv.selection.batch_switch.gemv_wins` measured it
   at least as fast as ``F.linear`` at every batch size it runs at;
3. ReLUs fused into the convolutions before them, plain convolutions packed for oneDNN
   (:mod:`leanconv.rewrite.fuse`, ``fuse``);
4. each decomposed layer's chain made switchable (:class:`leanconv.nn.ChainConv2d`): below a
   batch size measured later (``min_batch``) it runs the one convolution it composes to, from
   it on the chain, its narrow factors in a row in one pass;
5. weights in ``memory_format`` (NCHW ``"contiguous"`` or ``"channels_last"``), which the
   activations then follow.

The planner times candidates in this form (:meth:`Deployment.layer`, and a decomposed layer's
candidate also with its factors on the narrow kernel, :meth:`Deployment.narrow_layer`, credited
with the faster of the two), the closed loop times the
assembled plan in it with the measured choices of step 2 made at the planning batch
(:meth:`Deployment.measured`, chains that always run as chains), and the pipeline deploys and
saves it (the same, at every deployed batch size), so that what is predicted is what runs. The
original model is measured as given (in the faster of the two layouts) and, for comparison, in
this same form (``baseline`` in the report): the second ratio is what the rewrites of the plan
alone bring.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from ..modules import get_layer, replace_modules
from ..nn import ChainConv2d
from ..rewrite import fold_batchnorm, fuse_activations
from ..selection.batch_switch import fit_min_batch, gemv_wins
from .algorithms import ALGORITHMS, apply_algorithms, gemv_candidates, narrow_candidates
from .measure import FORMATS

__all__ = ["Deployed", "Deployment", "settle_gemv", "settle_lost", "switchable_chains"]


@dataclass
class Deployed:
    """A model in its deployment form, with what each step did."""

    model: nn.Module  # the deployment form
    folded: nn.Module  # batch norms folded, plain layers: what is saved (shares nothing with model)
    folded_norms: list[str] = field(default_factory=list)
    folded_convs: list[str] = field(default_factory=list)  # the convolutions that absorbed them
    algorithms: dict[str, str] = field(default_factory=dict)  # the choices that applied
    fused: list[str] = field(default_factory=list)  # the ReLUs fused
    # decomposed layers whose chain can run as one convolution (ChainConv2d)
    chains: list[str] = field(default_factory=list)
    # layers that run their algorithm or chain only from a batch size on (selection.batch_switch)
    min_batch: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Deployment:
    """Which of the exact deployment rewrites apply (see the module docstring)."""

    fold_bn: bool = True
    fuse: bool = True
    memory_format: str = "channels_last"

    def __post_init__(self):
        if self.memory_format not in FORMATS:
            raise ValueError(
                f"memory_format={self.memory_format!r} is not one of {', '.join(FORMATS)}"
            )

    def deploy(
        self, model: nn.Module, algorithms: dict[str, str] | None = None, chains=()
    ) -> Deployed:
        """``model`` (not modified) deployed with ``algorithms`` (layer name -> algorithm);
        ``chains``: the decomposed layers, made switchable where their chain composes."""
        folded, norms, convs = fold_batchnorm(model) if self.fold_bn else (model, [], [])
        fast, applied = apply_algorithms(folded, algorithms or {})  # a copy
        fused: list[str] = []
        if self.fuse:
            fast, fused = fuse_activations(fast, inplace=True)
        switchable = switchable_chains(fast, chains)
        fast = replace_modules(fast, switchable, inplace=True)
        fast = fast.to(memory_format=FORMATS[self.memory_format]).eval()
        return Deployed(fast, folded, norms, convs, applied, fused, sorted(switchable))

    def measured(
        self, model: nn.Module, algorithms: dict[str, str], decomposed, example, batch_sizes,
        repeats: int = 5, switchable: bool = True,
    ) -> Deployed:  # fmt: skip
        """``model`` deployed with the planned ``algorithms`` and each measured choice made on
        ``example`` at ``batch_sizes``: the narrow kernel offered to every factor of the
        ``decomposed`` layers and the streaming kernel to every ``nn.Linear``, then each fast
        layer's and chain's ``min_batch`` fitted (``fit_min_batch``) and the narrow, Winograd and
        streaming layers that lost everywhere turned back (:func:`settle_lost`,
        :func:`settle_gemv`). With
        ``switchable`` the decomposed chains are made switchable by batch size (the final
        deployment); without, they always run as chains (the closed loop, at its one batch
        size), their narrow factors in one pass as deployed."""
        decomposed = list(decomposed)
        narrow = narrow_candidates(model, decomposed, algorithms)
        offered = algorithms | narrow | gemv_candidates(model)
        deployed = self.deploy(model, offered, chains=decomposed)
        deployed.min_batch = fit_min_batch(deployed.model, example, batch_sizes, repeats,
                                           chains=switchable)  # fmt: skip
        settle_lost(deployed, batch_sizes)
        settle_gemv(deployed, gemv_wins(deployed.model, example, batch_sizes, repeats))
        return deployed

    def apply(self, model: nn.Module, algorithms: dict[str, str] | None = None) -> nn.Module:
        """A deployed copy of ``model``, with ``algorithms`` (layer name -> algorithm)."""
        return self.deploy(model, algorithms).model

    def layer(self, module: nn.Module) -> nn.Module:
        """One layer (or a candidate's chain) as it runs deployed: convolutions packed, weights
        in the layout (its activation is timed with the rest of the model)."""
        module = fuse_activations(module)[0] if self.fuse else copy.deepcopy(module)
        return module.to(memory_format=FORMATS[self.memory_format]).eval()

    def narrow_layer(self, module: nn.Module) -> nn.Module | None:
        """A decomposed layer's candidate as it runs deployed where the narrow direct kernel
        wins: every factor the kernel computes on it (:func:`.algorithms.narrow_candidates`),
        its narrow factors in a row in one pass (:class:`leanconv.nn.ChainConv2d`), weights in
        the layout; ``None`` when the kernel computes none of its convolutions (or the compiled
        kernels are not available). The deployment keeps this form or :meth:`layer`'s,
        whichever it measures faster; the planner times both and credits the faster."""
        holder = nn.ModuleDict({"layer": module})
        offered = narrow_candidates(holder, ["layer"])
        if not offered:
            return None
        fast = apply_algorithms(holder, offered)[0]["layer"]  # a copy
        if self.fuse:
            fast = fuse_activations(fast, inplace=True)[0]
        if isinstance(fast, nn.Sequential):
            fast = ChainConv2d.from_chain(fast) or fast
        return fast.to(memory_format=FORMATS[self.memory_format]).eval()


def switchable_chains(model: nn.Module, names) -> dict[str, ChainConv2d]:
    """Of the layers ``names`` of ``model``, each that is a chain composing into one convolution,
    as a :class:`leanconv.nn.ChainConv2d` sharing its layers (``min_batch`` 1 until measured;
    one already switchable, as a residual sum's fusion leaves it, as it is)."""
    out = {}
    for name in names:
        layer = get_layer(model, name)
        switch = layer if isinstance(layer, ChainConv2d) else ChainConv2d.from_chain(layer)
        if switch is not None:
            out[name] = switch
    return out


#: What :func:`settle_lost` turns back where it lost: the narrow kernel and Winograd.
SETTLED = ("narrow", *ALGORITHMS)


def settle_lost(deployed: Deployed, batch_sizes) -> list[str]:
    """After :func:`leanconv.selection.batch_switch.fit_min_batch`: each layer of ``deployed``
    that runs one of the algorithms :data:`SETTLED` (the narrow kernel, Winograd) and was slower
    than the direct convolution at every batch size turned back into a packed layer (in place,
    and out of ``deployed.algorithms`` and ``deployed.min_batch``), so that it runs oneDNN at
    every size, measured or not; returns the layers of those kinds kept."""
    largest = max((int(b) for b in batch_sizes), default=1)
    back, kept = {}, []
    for name, algorithm in list(deployed.algorithms.items()):
        if algorithm not in SETTLED:
            continue
        layer = get_layer(deployed.model, name)
        if layer.min_batch > largest:
            back[name] = layer.as_packed()
            del deployed.algorithms[name]
            deployed.min_batch.pop(name, None)
        else:
            kept.append(name)
    replace_modules(deployed.model, back, inplace=True)
    return kept


def settle_gemv(deployed: Deployed, wins: dict[str, dict[int, bool]]) -> list[str]:
    """After :func:`leanconv.selection.batch_switch.gemv_wins`: each streaming-kernel layer of
    ``deployed`` that lost to ``F.linear`` at some batch size, or never ran the kernel, turned back
    into a plain ``nn.Linear`` (in place, and out of ``deployed.algorithms``); returns the layers
    kept."""
    back, kept = {}, []
    for name, algorithm in list(deployed.algorithms.items()):
        if algorithm != "gemv":
            continue
        won = wins.get(name, {})
        if won and all(won.values()):
            kept.append(name)
        else:
            back[name] = get_layer(deployed.model, name).as_linear()
            del deployed.algorithms[name]
    replace_modules(deployed.model, back, inplace=True)
    return kept
