"""The compiled kernels, built on first use: Winograd (``kernels/winograd_transforms.c``, the tile
transforms of the three-stage path, and ``kernels/winograd_fused.c``, the one-pass path) and the
narrow direct convolution (``kernels/narrow_direct.c``, :mod:`leanconv.algorithms.narrow`).

The C sources are compiled once per machine with the system C compiler (``$CC``, else ``cc`` or
``gcc``; ``-O3 -march=native -fopenmp``) into the leanconv cache directory and loaded with
:mod:`ctypes`. The library's name carries a hash of the source, the flags and the CPU, so a cache
shared between machines never loads code built for another processor; it is written under a
temporary name and renamed, so concurrent first uses cannot load half a file. Where no compiler
works, or with ``LEANCONV_NATIVE=0``, :func:`library` returns ``None`` and the Winograd code runs
its PyTorch implementation instead (the narrow layers run oneDNN); :func:`status` says which and
why.

OpenMP threads come from ``libgomp.so.1``, the runtime PyTorch has already loaded, so the kernels
share PyTorch's thread pool instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from .. import cache
from ._geometry import symmetric_output_size

SOURCES = tuple(
    Path(__file__).with_name("kernels") / name
    for name in ("winograd_transforms.c", "winograd_fused.c", "narrow_direct.c", "gemv.c")
)
#: Files the sources include: part of the build's hash, not compiled on their own.
HEADERS = tuple(
    Path(__file__).with_name("kernels") / name for name in ("narrow_width.h", "narrow_reduce.h")
)
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=c99")

__all__ = [
    "available",
    "build_id",
    "fused",
    "fused_written_out",
    "gemv",
    "input_transform",
    "library",
    "narrow",
    "narrow_chain",
    "narrow_padded",
    "narrow_reduce_from",
    "narrow_vector",
    "narrow_widest",
    "output_transform",
    "status",
    "vector_width",
]

_reason = "not built yet"
_build = "none"


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(dict.fromkeys(lines))


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, compiling them first if needed; ``None`` where they cannot be used."""
    global _reason, _build
    if os.environ.get("LEANCONV_NATIVE", "1") == "0":
        _reason = "disabled by LEANCONV_NATIVE=0"
        return None
    compiler = _compiler()
    if compiler is None:
        _reason = "no C compiler found (set CC)"
        return None
    source = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    key = hashlib.sha256(
        source + " ".join(FLAGS).encode() + _cpu_signature().encode() + compiler.encode()
    ).hexdigest()[:16]
    folder = cache.cache_dir() / "kernels"
    target = folder / f"kernels-{key}.so"
    try:
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".so.partial")
            os.close(fd)
            try:
                subprocess.run(
                    [compiler, *FLAGS, *map(str, SOURCES), "-o", tmp],
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        lib = ctypes.CDLL(str(target))
    except subprocess.CalledProcessError as err:
        _reason = f"{compiler} failed: {err.stderr.strip()[:300]}"
        return None
    except (OSError, subprocess.SubprocessError) as err:
        _reason = f"could not build or load {target.name}: {err}"
        return None
    _declare(lib)
    _reason, _build = f"compiled kernels loaded from {target}", key
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    long, integer, ptr = ctypes.c_long, ctypes.c_int, ctypes.c_void_p
    lib.winograd_input.restype = integer
    lib.winograd_input.argtypes = [ptr] + [long] * 9 + [ptr] + [long] * 5 + [integer] * 4
    lib.winograd_input.argtypes += [ptr, ptr, integer]
    lib.winograd_output.restype = None
    lib.winograd_output.argtypes = [ptr, long, ptr, ptr] + [long] * 11 + [integer] * 4
    lib.winograd_output.argtypes += [ptr, ptr, ptr, integer, integer]
    lib.winograd_fused.restype = integer
    lib.winograd_fused.argtypes = [ptr] + [long] * 8 + [ptr] + [long] * 3 + [ptr, ptr]
    lib.winograd_fused.argtypes += [long] * 9
    lib.winograd_fused.argtypes += [integer] * 4 + [ptr] * 5 + [integer] * 4
    lib.winograd_fused_vector.restype = integer
    lib.winograd_fused_vector.argtypes = []
    lib.winograd_fused_written_out.restype = integer
    lib.winograd_fused_written_out.argtypes = [integer] * 4 + [ptr] * 4
    lib.narrow_conv.restype = None
    lib.narrow_conv.argtypes = [ptr] + [long] * 6 + [ptr, long, long, ptr, integer, ptr, ptr]
    lib.narrow_conv.argtypes += [long] * 6 + [integer] * 9
    lib.narrow_vector.restype = integer
    lib.narrow_vector.argtypes = [long]
    lib.narrow_widest.restype = integer
    lib.narrow_widest.argtypes = [integer]
    lib.narrow_reduce_from.restype = long
    lib.narrow_reduce_from.argtypes = [long]
    lib.narrow_chain.restype = integer
    lib.narrow_chain.argtypes = [ptr] + [long] * 6 + [integer, ptr, ptr, ptr, ptr, ptr]
    lib.narrow_chain.argtypes += [long] * 4 + [integer]
    lib.gemv_linear.restype = None
    lib.gemv_linear.argtypes = [ptr, long, long, ptr, long, long, ptr, ptr, long, integer]


def build_id() -> str:
    """Which compiled kernels run (a hash of their sources, flags, compiler and CPU), or
    ``"none"``: timings cached for one build do not stand for another."""
    library()
    return _build


def available() -> bool:
    return library() is not None


def status() -> str:
    """Whether the compiled kernels are in use, and why not."""
    library()
    return _reason


def usable(*tensors: torch.Tensor) -> bool:
    """The kernels apply: plain float32 CPU tensors (no tensor subclass, no tracing or compiling,
    which cannot see inside a foreign call), and the library is built."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    plain = (torch.Tensor, torch.nn.Parameter)
    return all(
        type(t) in plain and t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors
    ) and (library() is not None)


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _check(condition: bool, what: str) -> None:
    if not condition:  # a wrong pointer or size would corrupt memory: never reach C with one
        raise ValueError(f"a native kernel called with {what}")


def _check_operands(
    strided: torch.Tensor, buffers: tuple[torch.Tensor, ...], size: int, which: str
) -> None:
    """float32 everywhere, ``buffers`` contiguous, the first buffer holding ``size`` values."""
    _check(all(t.dtype == torch.float32 for t in (strided, *buffers)), "non-float32 data")
    _check(all(t.is_contiguous() for t in buffers), "strided buffers")
    _check(buffers[0].numel() == size, f"a wrong {which} size")


def input_transform(
    x: torch.Tensor,
    v: torch.Tensor,
    pad: tuple[int, int],
    first: tuple[int, int],
    images: int,
    rows: int,
    nw: int,
    tile: tuple[int, int],
    bt_h: torch.Tensor,
    bt_w: torch.Tensor,
) -> bool:
    """``v[p] = B_h^T d_p B_w`` for the tiles ``d_p`` of ``x`` (N, C, H, W, any strides) padded
    by ``pad = (top, left)`` (and with zeros below and right): ``rows`` tile rows of ``nw`` tiles
    of ``images`` images from image ``first[0]``, tile row ``first[1]``. ``v`` is a contiguous
    ``[tiles, a_h * a_w * C]``. Returns whether every value of ``v`` is finite (False when these
    tiles of ``x`` hold NaN or infinity, or overflow float32)."""
    lib = library()
    n, c, height, width = x.shape
    ah, aw = bt_h.shape[0], bt_w.shape[0]
    _check_operands(x, (v, bt_h, bt_w), images * rows * nw * ah * aw * c, "output")
    _check(first[0] + images <= n and max(ah, aw) <= 16, "tiles outside the input")
    sn, sc, sh, sw = x.stride()
    bad = lib.winograd_input(
        _ptr(x), sn, sc, sh, sw, c, height, width, pad[0], pad[1], _ptr(v),
        first[0], first[1], images, rows, nw, tile[0], tile[1], ah, aw,
        _ptr(bt_h), _ptr(bt_w), torch.get_num_threads(),
    )  # fmt: skip
    return not bad


def output_transform(
    m: torch.Tensor,
    out: torch.Tensor,
    first: tuple[int, int],
    images: int,
    rows: int,
    nw: int,
    tile: tuple[int, int],
    at_h: torch.Tensor,
    at_w: torch.Tensor,
    bias: torch.Tensor | None = None,
    relu: bool = False,
    residual: torch.Tensor | None = None,
) -> None:
    """``out[tile p] = A_h^T m[p] A_w`` for ``m`` as ``[tiles, a_h * a_w * K]`` (the tiles that
    :func:`input_transform` made), written to ``out`` (N, K, H_o, W_o, any strides) and clipped at
    its bottom and right edges; plus ``bias`` (K values), plus ``residual`` (``out``'s shape and
    strides) and through ReLU when asked."""
    lib = library()
    n, k, height, width = out.shape
    ah, aw = at_h.shape[1], at_w.shape[1]
    _check_operands(out, (m, at_h, at_w), images * rows * nw * ah * aw * k, "input")
    _check(first[0] + images <= n and max(ah, aw) <= 16, "tiles outside the output")
    _check(nw * tile[1] >= width, "tiles that do not cover the output")
    if bias is not None:
        _check_operands(out, (bias,), k, "bias")
    _check_residual(residual, out)
    sn, sk, sh, sw = out.stride()
    lib.winograd_output(
        _ptr(m), k, _ptr(out), None if residual is None else _ptr(residual),
        sn, sk, sh, sw, height, width, first[0], first[1], images, rows,
        nw, tile[0], tile[1], ah, aw, _ptr(at_h), _ptr(at_w),
        None if bias is None else _ptr(bias), int(relu), torch.get_num_threads(),
    )  # fmt: skip


def vector_width() -> int:
    """Floats per vector in the compiled one-pass kernel (16 with AVX-512, 8 with AVX, else 4):
    the packed filter of :func:`fused` pads its channels to a multiple of it."""
    return library().winograd_fused_vector()


def fused_written_out(tile: tuple[int, int], matrices: tuple[torch.Tensor, ...]) -> bool:
    """Whether :func:`fused` runs ``matrices`` ``(B_h^T, B_w^T, A_h^T, A_w^T)`` (contiguous
    float32) of an ``m x m`` ``tile`` by one of the kernel's written-out rules (F(2, 3), F(4, 3)
    and F(6, 3) with the default points: the transforms with constant coefficients, in registers)
    rather than by its general sparse-row path."""
    bt_h, bt_w = matrices[:2]
    return bool(library().winograd_fused_written_out(
        tile[0], tile[1], bt_h.shape[0], bt_w.shape[0], *map(_ptr, matrices)))  # fmt: skip


def fused(
    x: torch.Tensor,
    u: torch.Tensor,
    out: torch.Tensor,
    pad: tuple[int, int],
    tile: tuple[int, int],
    tiles_per_block: int,
    matrices: tuple[torch.Tensor, ...],
    bias: torch.Tensor | None = None,
    relu: bool = False,
    residual: torch.Tensor | None = None,
    general: bool = False,
    slices: int = 1,
) -> bool:
    """Stride-1 Winograd of channels-last ``x`` (N, C, H, W with ``stride(1) == 1``) padded by
    ``pad = (top, left)`` into channels-last ``out`` (N, K, H_o, W_o) in one pass
    (``kernels/winograd_fused.c``), plus ``bias``, plus ``residual`` (``out``'s shape and
    strides), and ReLU. ``u`` is the transformed filter packed
    as a contiguous ``[T, Cp, Kp]`` (channels zero-padded to multiples of :func:`vector_width`),
    ``matrices`` ``(B_h^T, B_w^T, A_h^T, A_w^T)``; ``tiles_per_block`` a multiple of 6. The
    transforms run written out where :func:`fused_written_out` says so, unless ``general`` (the
    sparse-row path for any matrices: what ``benchmarks/bench_written_out.py`` compares).
    ``slices``: the threads' units of work are a block of tiles times one of this many slices of
    the output channels (each slice reads its columns of ``u`` only: with few tiles, the threads
    share the filter instead of each reading all of it). Returns whether every transformed input
    value is finite."""
    lib = library()
    n, c, height, width = x.shape
    _, k, out_h, out_w = out.shape
    bt_h, bt_w, at_h, at_w = matrices
    (mh, mw), ah, aw = tile, bt_h.shape[0], bt_w.shape[0]
    _check_operands(x, (u, *matrices), ah * aw * u.shape[1] * u.shape[2], "filter")
    _check(out.dtype == torch.float32 and out.shape[0] == n, "a wrong output")
    innermost = (x.stride(1) == 1 or c == 1) and (out.stride(1) == 1 or k == 1)
    _check(innermost, "channels that are not innermost")
    vw = vector_width()
    _check(u.shape[1] >= c and u.shape[2] >= k and u.shape[1] % vw == 0, "a wrong packing")
    _check(u.shape[2] % vw == 0 and tiles_per_block % 6 == 0, "a wrong packing")
    _check(slices >= 1, "a wrong split")
    _check(max(ah, aw) <= 16 and at_h.shape == (mh, ah) and at_w.shape == (mw, aw), "bad tiles")
    if bias is not None:
        _check_operands(out, (bias,), k, "bias")
    _check_residual(residual, out)
    sn, _, sh, sw = x.stride()
    on, _, oh, ow = out.stride()
    nh, nw = -(-out_h // mh), -(-out_w // mw)
    bad = lib.winograd_fused(
        _ptr(x), sn, sh, sw, c, height, width, pad[0], pad[1],
        _ptr(u), u.shape[1], u.shape[2], k,
        _ptr(out), None if residual is None else _ptr(residual),
        on, oh, ow, out_h, out_w, n, nh, nw, tiles_per_block,
        mh, mw, ah, aw, *map(_ptr, matrices),
        None if bias is None else _ptr(bias), int(relu), int(general), slices,
        torch.get_num_threads(),
    )  # fmt: skip
    if bad & 2:
        raise MemoryError("native Winograd kernel: a thread could not allocate its tile buffers")
    return not bad


#: The most kernel rows the narrow kernel takes.
NARROW_MAX_ROWS = 64


def narrow_vector(channels: int) -> int:
    """Output channels per vector of the narrow kernel for a layer of ``channels`` output
    channels: 16 where the machine has 16-float vectors and the layer more than 8 channels, else
    8. Its weights and bias are packed to a multiple of it."""
    lib = library()
    return 8 if lib is None else int(lib.narrow_vector(channels))


def narrow_padded(channels: int) -> int:
    """``channels`` output channels rounded up to whole vectors of :func:`narrow_vector`: the
    packed weight's last dimension, Kp."""
    vector = narrow_vector(channels)
    return -(-channels // vector) * vector


def narrow(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    bias: torch.Tensor | None = None,
    relu: bool = False,
    residual: torch.Tensor | None = None,
) -> None:
    """The direct convolution of ``x`` (N, C, H, W with channels innermost, ``stride(1) == 1``)
    into ``out`` (N, K, H_o, W_o, channels innermost) by ``kernels/narrow_direct.c``: ``w`` packed
    as a contiguous ``[kh, kw, C, Kp]`` (Kp: K rounded up to :func:`narrow_vector`, zeros), the
    symmetric ``padding``, ``bias`` Kp values, ``residual`` (shape and strides of ``out``) added,
    then ReLU when asked."""
    lib = library()
    n, c, height, width = x.shape
    _, k, out_h, out_w = out.shape
    kh, kw, wc, kp = w.shape
    _check_operands(x, (w,), kh * kw * c * kp, "filter")
    _check(out.dtype == torch.float32 and out.shape[0] == n and wc == c, "a wrong output")
    _check((x.stride(1) == 1 or c == 1) and (out.stride(1) == 1 or k == 1),
           "channels that are not innermost")  # fmt: skip
    _check(kp == narrow_padded(k), "a wrong packing")
    _check(1 <= kh <= NARROW_MAX_ROWS, "too many kernel rows")
    expect = symmetric_output_size((height, width), (kh, kw), stride, padding, dilation)
    _check(expect == (out_h, out_w), "an output of the wrong size")
    if bias is not None:
        _check_operands(out, (bias,), kp, "bias")
    _check_residual(residual, out)
    sn, _, sh, sw = x.stride()
    on, _, oh, ow = out.stride()
    lib.narrow_conv(
        _ptr(x), sn, sh, sw, c, height, width, _ptr(w), kp, k,
        None if bias is None else _ptr(bias), int(relu), _ptr(out),
        None if residual is None else _ptr(residual),
        on, oh, ow, out_h, out_w, n, kh, kw, *stride, *padding, *dilation,
        torch.get_num_threads(),
    )  # fmt: skip


@contextlib.contextmanager
def _kernel_setting(name: str, value: int):
    """Within the block, the kernel setting whose setter is ``name`` (it returns the previous
    value) holds ``value``; the previous one is restored on exit."""
    setter = getattr(library(), name)
    old = setter(value)
    try:
        yield
    finally:
        setter(old)


def narrow_reduce_from(channels: int):
    """Within the block, the narrow kernel's channel-reducing path (at most 4 output channels,
    vectorised over the input channels) takes layers from ``channels`` input channels on (0:
    none): for tests and benchmarks that compare it with the output-channel path."""
    return _kernel_setting("narrow_reduce_from", channels)


def narrow_widest(width: int):
    """Within the block, the narrow kernel's vectors are at most ``width`` floats (8, or the
    machine's widest, 16 with AVX-512): for tests and benchmarks that compare the widths. Weights
    must be packed (:func:`leanconv.algorithms.narrow.pack`) and run under the same width."""
    return _kernel_setting("narrow_widest", width)


#: The most convolutions :func:`narrow_chain` runs in one pass (``CHAIN_MAX`` in the kernel).
NARROW_CHAIN_MAX = 4


def narrow_chain(
    x: torch.Tensor, convs: list[tuple], out: torch.Tensor, residual: torch.Tensor | None = None
) -> None:
    """Narrow convolutions in a row in one pass (``narrow_chain`` in ``kernels/narrow_direct.c``):
    ``out = conv_n(... conv_1(x))``, 2 to :data:`NARROW_CHAIN_MAX` of them, each given as ``(w,
    bias, out_channels, stride, padding, dilation, relu)`` as :func:`narrow` takes them (``w``
    packed, ``bias`` Kp values or None); each reads the previous one's ``out_channels``
    channels. ``x``, ``out`` and ``residual`` (added to the last one's output before its ReLU)
    as in :func:`narrow`."""
    lib = library()
    n, c, height, width = x.shape
    _check(2 <= len(convs) <= NARROW_CHAIN_MAX, "a chain of the wrong length")
    spec, weights, biases = [], [], []
    channels, size = c, (height, width)
    for w, b, k, stride, padding, dilation, relu in convs:
        kh, kw, wc, kp = w.shape
        _check_operands(x, (w,), w.numel(), "filter")
        _check(kp == narrow_padded(k), "a wrong packing")
        _check(wc == channels and 1 <= kh <= NARROW_MAX_ROWS, "a wrong filter")
        if b is not None:
            _check_operands(x, (b,), kp, "bias")
        size = symmetric_output_size(size, (kh, kw), stride, padding, dilation)
        _check(min(size) >= 1, "an empty output")
        spec += [kp, k, int(relu), kh, kw, *stride, *padding, *dilation, *size]
        weights.append(_ptr(w))
        biases.append(None if b is None else _ptr(b))
        channels = k
    _check(out.dtype == torch.float32 and tuple(out.shape) == (n, channels, *size),
           "a wrong output")  # fmt: skip
    _check((x.stride(1) == 1 or c == 1) and (out.stride(1) == 1 or channels == 1),
           "channels that are not innermost")  # fmt: skip
    _check_residual(residual, out)
    sn, _, sh, sw = x.stride()
    on, _, oh, ow = out.stride()
    spec = (ctypes.c_long * len(spec))(*spec)
    weights = (ctypes.c_void_p * len(convs))(*weights)
    biases = (ctypes.c_void_p * len(convs))(*biases)
    failed = lib.narrow_chain(
        _ptr(x), sn, sh, sw, c, height, width, len(convs), spec, weights, biases,
        _ptr(out), None if residual is None else _ptr(residual), on, oh, ow, n,
        torch.get_num_threads(),
    )  # fmt: skip
    if failed:
        raise MemoryError("native narrow kernel: a thread could not allocate its row buffers")


def _check_residual(residual: torch.Tensor | None, out: torch.Tensor) -> None:
    """A residual the kernel reads at the output's offsets: float32 on the CPU, with the
    output's shape and strides."""
    if residual is not None:
        _check(residual.dtype == torch.float32 and residual.device == out.device
               and residual.shape == out.shape and residual.stride() == out.stride(),
               "a residual without the output's shape and strides")  # fmt: skip


def gemv(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None = None):
    """``out = x w^T + bias`` by ``kernels/gemv.c``: ``x`` (N, K) and ``out`` (N, O) with unit
    column stride, ``w`` a contiguous (O, K), ``bias`` O contiguous values; all float32."""
    lib = library()
    n, k = x.shape
    o = w.shape[0]
    _check_operands(x, (w,), o * k, "weight")
    _check(out.dtype == torch.float32 and tuple(out.shape) == (n, o), "an output of a wrong size")
    _check((x.stride(1) == 1 or k == 1) and (out.stride(1) == 1 or o == 1), "strided columns")
    if bias is not None:
        _check_operands(out, (bias,), o, "bias")
    lib.gemv_linear(
        _ptr(x), x.stride(0), n, _ptr(w), k, o, None if bias is None else _ptr(bias),
        _ptr(out), out.stride(0), torch.get_num_threads(),
    )  # fmt: skip
