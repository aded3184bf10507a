"""Choosing a convolution algorithm per layer on the machine at hand.

It stands above :mod:`leanconv.nn` (it builds and times the fast modules: packed, Winograd, FFT)
and :mod:`leanconv.algorithms` (the functions they run): ``accelerate(model, example)`` (the
tuner) and ``benchmark_conv`` (every algorithm against ``F.conv2d`` on one convolution).
"""
