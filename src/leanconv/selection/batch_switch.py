"""One model for every batch size: a fast algorithm only where it pays.

A Winograd or FFT layer chosen for one batch size can be slower at another: its transforms cost
per image what the direct convolution's weight reorder costs once per call, so at batch 1 a
layer that won at batch 64 can lose (a Winograd-only plan made for batch 64 once ran 0.64x as
fast at batch 1). :func:`fit_min_batch` times each such layer of a model, on its real inputs,
against the direct convolution at every batch size the model is deployed for, and sets the
layer's ``min_batch`` (:class:`leanconv.nn.fast._FastConv2d`): the smallest of those batch
sizes from which the algorithm is at least as fast at that size and every larger one. Below it
the layer runs the direct convolution on a weight packed for oneDNN; the function is the same
either way (up to float32 rounding), so the switch by input shape changes speed only.

A narrow layer (:class:`leanconv.nn.NarrowConv2d`, the narrow direct kernel) is fitted the same
way against oneDNN: the deployment gives it to every factor of a decomposed layer and keeps it
where it won at some batch size (:func:`leanconv.compress.deploy.settle_lost`).

A fully connected layer by the streaming matrix-vector kernel (:class:`leanconv.nn.GemvLinear`)
runs it only up to :data:`leanconv.algorithms.gemv.MAX_ROWS` rows, where ``F.linear`` reads the
weight with one core; it has no switch to fit, so :func:`gemv_wins` says whether it is at least as
fast as ``F.linear`` at each batch size it runs at: the deployed sizes up to ``MAX_ROWS`` and
``MAX_ROWS`` itself (the sizes between are served by the same kernel). The deployment keeps it
only where it won at all of them (:func:`leanconv.compress.deploy.settle_gemv`).

A decomposed layer's chain (:class:`leanconv.nn.ChainConv2d`) is fitted the same way, after the
fast layers (a chain's Winograd core switches first): below its ``min_batch`` it runs the one
convolution the chain composes to, which runs as fast as the layer it replaced. Timed alone at
batch 1, a layer takes tens of microseconds, and a composite that won alone by a few of them
can lose inside the model (each switch's check costs about 8 µs; on the demo's ResNet-18 with
every 3x3 layer by spatial SVD at 40 % of its MACs, eleven chains switched on such timings made
the model 0.97x as fast at batch 1 as the chains everywhere, 1.05x). So the chains' switches
are then confirmed on the whole model (:func:`_confirm`): at each batch size, the model with
the switches active there is timed against the model without them, and they are kept only if
it is faster.

The fast layers' choices are confirmed the same way at the sizes below the largest
(:func:`_confirm_running`): a Winograd layer timed alone at batch 1 finds its transformed filter
in cache, and inside the model it does not. On the zoo's CIFAR ResNet-18 (width 0.5) with every
eligible 3x3 layer by Winograd F(4x4), six layers that won alone at batch 1 left the model 0.83-
0.92x as fast there as with no algorithm (docs/benchmarks.md, sixteenth session): the layers that
run their algorithm at a size now keep it only if the whole model is faster so than with all of
them direct there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..algorithms import gemv
from ..bench.timing import compare
from ..errors import InvalidSpecError
from ..modules import capture_calls, capture_inputs, input_at_batch
from ..nn.chain import ChainConv2d, narrow_runs
from ..nn.fast import FFTConv2d, NarrowConv2d, WinogradConv2d
from ..nn.gemv_linear import GemvLinear

__all__ = ["fit_min_batch", "gemv_wins"]


def _switchable(model: nn.Module, kinds) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, kinds)}


def fit_min_batch(
    model: nn.Module, example: torch.Tensor, batch_sizes, repeats: int = 5, chains: bool = True
) -> dict[str, int]:
    """Set ``min_batch`` on each Winograd, FFT or narrow layer and, with ``chains``, each
    switchable chain of ``model`` (in place) from timings on ``example`` (a batch of inputs,
    repeated or cut to each ``b`` of ``batch_sizes``; see the module docstring); returns the
    layers whose ``min_batch`` is above 1, and its value. A layer slower at every size gets one
    more than the largest (it always runs direct). Without ``chains`` the chains keep their
    ``min_batch``."""
    if example.dim() != 4:
        raise InvalidSpecError(
            f"fit_min_batch: example of shape {tuple(example.shape)} is not a batch (N, C, H, W)"
        )
    sizes = sorted({int(b) for b in batch_sizes if int(b) >= 1})
    switched = {}
    # a chain's fast core first
    for kinds in (WinogradConv2d | FFTConv2d | NarrowConv2d, *([ChainConv2d] if chains else [])):
        layers = _switchable(model, kinds) if sizes else {}
        if not layers:
            continue
        _fit(model, layers, example, sizes, repeats)
        if kinds is ChainConv2d:
            _confirm(model, layers, example, sizes, repeats)
        else:
            _fit_runs(model, example, sizes, repeats)
            _confirm_running(model, layers, example, sizes, repeats)
        switched.update({n: m.min_batch for n, m in layers.items() if m.min_batch > 1})
    return switched


def _threshold(won: dict[int, bool], sizes: list[int]) -> int:
    """The smallest of ``sizes`` from which the fast form won at that size and every larger
    one (one more than the largest when it lost at the largest)."""
    losing = [b for b in sizes if not won.get(b, True)]
    return 1 if not losing else next((b for b in sizes if b > max(losing)), sizes[-1] + 1)


def _fit_runs(model, example, sizes: list[int], repeats: int):
    """Each run of narrow factors in a chain (:func:`narrow_runs`), which runs in one pass when
    all of them run the kernel, timed that way on the chain's arguments (its input, and its
    shortcut where it takes one) against the same factors
    by oneDNN one after the other; its factors run the kernel from the size on which the pass
    won at that size and every larger one (their ``min_batch``, together). :func:`_fit` cannot
    time them alone: inside the pass their own ``forward`` never runs."""
    chains = {n: c for n, c in _switchable(model, ChainConv2d).items() if narrow_runs(c)}
    if not chains:
        return
    outer = {n: c.min_batch for n, c in chains.items()}
    for chain in chains.values():
        chain.min_batch = 1  # the chain itself runs while its factors are timed
    runs = {(n, i): run for n, c in chains.items() for i, run in enumerate(narrow_runs(c))}
    never = sizes[-1] + 1
    wins: dict[tuple, dict[int, bool]] = {key: {} for key in runs}
    for b in sizes:
        calls = capture_calls(model, list(chains), input_at_batch(example, b))
        for (name, i), run in runs.items():
            if name not in calls:
                continue

            def timed(together: bool, run=run, chain=chains[name], args=calls[name]):
                for layer in run:
                    layer.min_batch = 1 if together else never
                return chain(*args)

            t = compare({"fast": lambda t=timed: t(True), "direct": lambda t=timed: t(False)},
                        warmup=1, repeats=repeats, device=calls[name][0].device)  # fmt: skip
            wins[(name, i)][b] = t["fast"].ms <= t["direct"].ms
    for key, run in runs.items():
        start = _threshold(wins[key], sizes)
        for layer in run:
            layer.min_batch = start
    for name, chain in chains.items():
        chain.min_batch = outer[name]


def _whole_model(model, xb: torch.Tensor, layers: list, off: int, repeats: int):
    """The whole model's median milliseconds on ``xb`` with ``layers``' ``min_batch`` as fitted
    (``on``) and with each set to ``off``, interleaved; the fitted values are left in place."""
    fitted = [m.min_batch for m in layers]

    def run(on: bool):
        for m, mb in zip(layers, fitted, strict=True):
            m.min_batch = mb if on else off
        return model(xb)

    t = compare({"on": lambda: run(True), "off": lambda: run(False)}, warmup=1,
                repeats=max(repeats, 11), device=xb.device)  # fmt: skip
    for m, mb in zip(layers, fitted, strict=True):
        m.min_batch = mb
    return t["on"].ms, t["off"].ms


def _confirm(model, layers: dict[str, nn.Module], example, sizes: list[int], repeats: int):
    """At each batch size, smallest first, the switches of ``layers`` that are active there
    (``min_batch`` above it) kept only if the whole model runs faster with them than without;
    otherwise they end at that size (``min_batch`` set to it)."""
    for b in sizes:
        active = [m for m in layers.values() if m.min_batch > b]
        if not active:
            continue
        on, off = _whole_model(model, input_at_batch(example, b), active, 1, repeats)
        if not on < off:
            for m in active:
                m.min_batch = b


def _confirm_running(model, layers: dict[str, nn.Module], example, sizes: list[int],
                     repeats: int):  # fmt: skip
    """At each batch size below the largest, smallest first, the layers of ``layers`` that run
    their algorithm there (``min_batch`` at most it) kept running it only if the whole model runs
    faster so than with all of them direct there; otherwise they run it only from the next size
    on. At the largest size, the one the plan was made and its assembled model timed for, each
    layer takes long enough to be timed alone as it runs in the model."""
    for b, after in zip(sizes, sizes[1:], strict=False):
        running = [m for m in layers.values() if m.min_batch <= b]
        if not running:
            continue
        on, off = _whole_model(model, input_at_batch(example, b), running, b + 1, repeats)
        if on > off:
            for m in running:
                m.min_batch = after


def _fit(model, layers: dict[str, nn.Module], example, sizes: list[int], repeats: int):
    """``min_batch`` of each of ``layers`` (set in place), each timed alone on its arguments in
    ``model``: its input, and a residual block's shortcut where it is given one (which the
    kernels add as they write)."""
    wins: dict[str, dict[int, bool]] = {n: {} for n in layers}
    for layer in layers.values():
        layer.min_batch = 1  # the algorithm itself is timed, at every size
    for b in sizes:
        calls = capture_calls(model, list(layers), input_at_batch(example, b))
        for name, args in calls.items():
            layer = layers[name]
            forms = {"fast": lambda m=layer, a=args: m(*a),
                     "direct": lambda m=layer, a=args: m._packed_direct(*a)}  # fmt: skip
            t = compare(forms, warmup=1, repeats=repeats, device=args[0].device)
            wins[name][b] = t["fast"].ms <= t["direct"].ms
    for name, layer in layers.items():
        layer.min_batch = _threshold(wins[name], sizes)


def gemv_wins(
    model: nn.Module, example: torch.Tensor, batch_sizes, repeats: int = 5
) -> dict[str, dict[int, bool]]:
    """For each :class:`leanconv.nn.GemvLinear` of ``model``: at each batch size it runs the
    kernel at (those of ``batch_sizes`` and :data:`~leanconv.algorithms.gemv.MAX_ROWS` whose
    input has at most that many rows), whether it ran at least as fast as ``F.linear`` on its
    real input there (``example`` repeated or cut to the size). A layer whose input never has few
    enough rows gets an empty dict."""
    layers = _switchable(model, GemvLinear)
    sizes = sorted({int(b) for b in batch_sizes if 1 <= int(b) <= gemv.MAX_ROWS} | {gemv.MAX_ROWS})
    wins: dict[str, dict[int, bool]] = {n: {} for n in layers}
    for b in sizes if layers else ():
        inputs = capture_inputs(model, list(layers), input_at_batch(example, b), strict=False)
        for name, x in inputs.items():
            m = layers[name]
            with torch.no_grad():  # as timed: the kernel does not run while autograd records
                runs = gemv.usable(x, m.weight, m.bias)
            if not runs:
                continue  # F.linear runs here either way
            forms = {"fast": lambda m=m, x=x: m(x),
                     "direct": lambda m=m, x=x: F.linear(x, m.weight, m.bias)}  # fmt: skip
            t = compare(forms, warmup=1, repeats=repeats, device=x.device)
            wins[name][b] = t["fast"].ms <= t["direct"].ms
    return wins
