"""Choosing a convolution algorithm per layer on the machine at hand.

It stands above :mod:`leanconv.nn` (it builds and times the fast modules: packed, Winograd, FFT)
and :mod:`leanconv.algorithms` (the functions they run): ``accelerate(model, example)`` (the
tuner), ``benchmark_conv`` (every algorithm against ``F.conv2d`` on one convolution) and
:mod:`.eligibility` (which fast algorithm may replace a module: one rule per algorithm, shared
with the planner and the ``"auto"`` policy).
"""
