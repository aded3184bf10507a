"""cuDNN against leanconv's fast layers and ``accelerate()`` on a GPU, ratios in the same run.

    python benchmarks/bench_gpu.py [--device cuda] [--batch 1 8 64] [--repeats 20] [--no-tf32]
    python benchmarks/bench_gpu.py --device cpu --quick     # smoke test with tiny sizes

Run by ``benchmarks/gpu.sh`` (which makes sure torch is a CUDA build). Three parts:

0. The machine: GPU name and capability, torch / CUDA / cuDNN versions and the TF32 settings
   (cuDNN convolutions use TF32 for float32 by default on Ampere and later: see the error column).
1. Layers: the 3x3 stride-1 layers of ResNet-18 and VGG-16 at 224 input (the table of
   ``bench_winograd.py``) and one large-kernel layer (64 channels, 15x15, 56x56; a case of
   ``bench_fft.py``), at each batch. cuDNN ``F.conv2d`` in NCHW float32, channels_last float32,
   and channels_last under ``torch.autocast(dtype=float16)`` and ``bfloat16`` (the cast of the
   input and weight per call is part of autocast's time) against ``nn.WinogradConv2d`` F(2x2),
   F(4x4), F(6x6) (``nn.FFTConv2d`` for the large kernel) in float32, and in float16 where the
   layer accepts it (input cast once, outside the timing). One table: each row's median ms, its
   max error relative to the largest output magnitude against float64 ``F.conv2d`` on the same
   device, and ``t(cuDNN variant) / t(row)`` for the four cuDNN variants (> 1: the row is faster).
2. Models: ``zoo.create("resnet18")`` and ``"vgg16"`` at 224: native float32 NCHW,
   channels_last, channels_last under autocast float16 / bfloat16, and
   ``leanconv.accelerate(model, x, tolerance=1e-4)`` tuned on the device; ratios
   ``t(native float32) / t(variant)``, error against the float64 model on the same device.

All candidates of one case are timed by ``leanconv.bench.timing.compare`` (interleaved
round-robin, medians, device synchronised before each clock read). Every output is checked to be
on the input's device in the expected dtype. ``--device cuda`` without CUDA: a message, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_winograd import LAYERS  # noqa: E402

import leanconv  # noqa: E402
from leanconv import zoo  # noqa: E402
from leanconv.bench.timing import compare  # noqa: E402
from leanconv.nn import FFTConv2d, WinogradConv2d  # noqa: E402
from leanconv.selection.benchmark import relative_errors  # noqa: E402

FFT_LAYER = ("large-kernel 15x15", 64, 56, 15)  # name, channels, size, kernel (bench_fft.py)
CUDNN = ["NCHW fp32", "CL fp32", "CL fp16 autocast", "CL bf16 autocast"]
CL = torch.channels_last


def machine(device: torch.device, threads: int) -> str:
    lines = [f"torch {torch.__version__}, device {device}"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines += [
            f"GPU: {torch.cuda.get_device_name(device)} (capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)",
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"cudnn.benchmark={torch.backends.cudnn.benchmark}, "
            f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
            f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}",
        ]
    else:
        cpu = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        lines.append(
            f"CPU: {cpu}, {threads} threads, oneDNN {torch.backends.mkldnn.is_available()}"
        )
    return "\n".join(lines)


def max_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    err = relative_errors(y.to(ref.dtype), ref).max().item()
    return err if err == err else float("inf")


def checked(
    name: str,
    fn: Callable[[], torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
    ref: torch.Tensor,
    fns: dict,
    errors: dict,
    skipped: list,
) -> None:
    """Run ``fn`` once: kept for timing (with its error) if it runs and returns a tensor on
    ``device`` in ``dtype``; otherwise recorded in ``skipped`` with the reason."""
    try:
        with torch.no_grad():
            y = fn()
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        skipped.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        return
    if y.device != device or y.dtype != dtype:
        skipped.append(f"{name}: output on {y.device} {y.dtype}, expected {device} {dtype}")
        return
    fns[name] = fn
    errors[name] = max_error(y, ref)


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device_type=device.type, dtype=dtype)


def cudnn_variants(device, x, w, pad, ref, fns, errors, skipped) -> None:
    xc, wc = x.contiguous(memory_format=CL), w.contiguous(memory_format=CL)

    def amp(dtype):
        def fn():
            with autocast(device, dtype):
                return F.conv2d(xc, wc, padding=pad)

        return fn

    checked(CUDNN[0], lambda: F.conv2d(x, w, padding=pad), device, x.dtype, ref, fns, errors,
            skipped)  # fmt: skip
    checked(CUDNN[1], lambda: F.conv2d(xc, wc, padding=pad), device, x.dtype, ref, fns, errors,
            skipped)  # fmt: skip
    checked(CUDNN[2], amp(torch.float16), device, torch.float16, ref, fns, errors, skipped)
    checked(CUDNN[3], amp(torch.bfloat16), device, torch.bfloat16, ref, fns, errors, skipped)


def ours_variant(name, build, conv, x, device, ref, fns, errors, skipped) -> None:
    """``build(conv)`` in ``conv``'s dtype, fed ``x`` cast to it once."""
    try:
        layer = build(conv).eval()
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        skipped.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        return
    xi = x.to(conv.weight.dtype)
    checked(name, lambda: layer(xi), device, conv.weight.dtype, ref, fns, errors, skipped)


def table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def layer_case(name, c, size, k, n, args, device, builders) -> tuple[list[str], list[str]]:
    """Rows of the layer table for one layer at batch ``n``, and the skipped variants."""
    torch.manual_seed(0)
    pad = k // 2
    x = torch.randn(n, c, size, size, device=device)
    conv = nn.Conv2d(c, c, k, padding=pad, bias=False, device=device)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(c, c, k, k, device=device) / (k * c**0.5))
        ref = F.conv2d(x.double(), conv.weight.double(), padding=pad)
    w = conv.weight.detach()
    fns: dict[str, Callable] = {}
    errors: dict[str, float] = {}
    skipped: list[str] = []
    cudnn_variants(device, x, w, pad, ref, fns, errors, skipped)
    half = copy.deepcopy(conv).half()
    for label, build in builders:
        ours_variant(f"{label} fp32", build, conv, x, device, ref, fns, errors, skipped)
        ours_variant(f"{label} fp16", build, half, x, device, ref, fns, errors, skipped)
    del ref
    times = compare(fns, warmup=args.warmup, repeats=args.repeats, device=device)
    rows = []
    for impl, t in times.items():
        ratios = [
            f"{times[base].median / t.median:.2f}x" if base in times else "-" for base in CUDNN
        ]
        rows.append(table_row([name, str(n), impl, f"{t.ms:.3f}", f"{errors[impl]:.1e}", *ratios]))
    return rows, skipped


def layers(args, device) -> None:
    cases = [(name, c, size, 3) for name, c, size in LAYERS]
    if args.layers:
        cases = [case for case in cases if case[0] in args.layers]
    fft_case = FFT_LAYER
    if args.quick:  # tiny: one 3x3 layer and the large kernel, fewer channels, 28x28
        cases = [(f"{LAYERS[0][0]} (quick: 32ch)", 32, 28, 3)]
        fft_case = (f"{FFT_LAYER[0]} (quick: 16ch, 28x28)", 16, 28, 15)
    cases.append(fft_case)
    winograd = [
        (f"Winograd F({m}x{m})", lambda conv, m=m: WinogradConv2d.from_conv(conv, tile=m))
        for m in args.tiles
    ]
    fft = [("FFTConv2d", FFTConv2d.from_conv)]
    print("\n## Layers\n")
    print(
        "Median ms per call; error: max |y - ref| / max |ref| against float64 F.conv2d on the "
        "same device; ratio columns: t(cuDNN variant) / t(row), > 1: the row is faster.\n"
    )
    head = ["layer", "N", "impl", "ms", "max rel err", *(f"{v} / row" for v in CUDNN)]
    print(table_row(head))
    print(table_row(["---"] * len(head)))
    notes = []
    for name, c, size, k in cases:
        for n in args.batch:
            rows, skipped = layer_case(
                name, c, size, k, n, args, device, fft if k > 3 else winograd
            )
            print("\n".join(rows), flush=True)
            notes += [f"{name} N={n}: skipped {s}" for s in skipped]
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if notes:
        print("\nSkipped variants (not accepted by the layer or the device):")
        print("\n".join(f"- {note}" for note in dict.fromkeys(notes)))


def model_case(name, model, n, size, args, device) -> tuple[list[str], str]:
    torch.manual_seed(0)
    x = torch.randn(n, 3, size, size, device=device)
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
    model_cl = copy.deepcopy(model).to(memory_format=CL)
    xc = x.contiguous(memory_format=CL)
    fast, report = leanconv.accelerate(
        model, x, tolerance=1e-4, repeats=args.tune_repeats, use_cache=False
    )

    def amp(dtype):
        def fn():
            with autocast(device, dtype):
                return model_cl(xc)

        return fn

    fns: dict[str, Callable] = {}
    errors: dict[str, float] = {}
    skipped: list[str] = []
    checked("native fp32 NCHW", lambda: model(x), device, x.dtype, ref, fns, errors, skipped)
    checked("CL fp32", lambda: model_cl(xc), device, x.dtype, ref, fns, errors, skipped)
    checked("CL fp16 autocast", amp(torch.float16), device, torch.float16, ref, fns, errors,
            skipped)  # fmt: skip
    checked("CL bf16 autocast", amp(torch.bfloat16), device, torch.bfloat16, ref, fns, errors,
            skipped)  # fmt: skip
    checked("accelerate()", lambda: fast(x), device, x.dtype, ref, fns, errors, skipped)
    del ref
    times = compare(fns, warmup=args.warmup, repeats=args.repeats, device=device)
    base = times.get("native fp32 NCHW")
    rows = [
        table_row(
            [
                name,
                str(n),
                impl,
                f"{t.ms:.2f}",
                f"{errors[impl]:.1e}",
                f"{base.median / t.median:.2f}x" if base else "-",
            ]
        )  # fmt: skip
        for impl, t in times.items()
    ]
    won = [f"{lc.name}:{lc.chosen}" for lc in report.layers if lc.chosen != "native"]
    note = (
        f"{name} N={n}: accelerate() replaced {len(won)} of {len(report.layers)} convolutions"
        f"{' (reverted: slower end to end)' if report.reverted else ''}"
        f"{': ' + ', '.join(won) if won else ''}" + "".join(f"; skipped {s}" for s in skipped)
    )
    return rows, note


def models(args, device) -> None:
    names = ["resnet18"] if args.quick else args.models
    batches = [1] if args.quick else args.model_batch
    size = 56 if args.quick else args.size
    print(f"\n## Models ({size}x{size} input)\n")
    print(
        "Median ms per call; error against the float64 model on the same device; ratio: "
        "t(native fp32 NCHW) / t(row), > 1: the row is faster.\n"
    )
    head = ["model", "N", "variant", "ms", "max rel err", "native fp32 / row"]
    print(table_row(head))
    print(table_row(["---"] * len(head)))
    notes = []
    for name in names:
        torch.manual_seed(0)
        model = zoo.create(name).to(device).eval()
        for n in batches:
            rows, note = model_case(name, model, n, size, args, device)
            print("\n".join(rows), flush=True)
            notes.append(note)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print()
    print("\n".join(f"- {note}" for note in notes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="layers (1 8 64)")
    ap.add_argument("--model-batch", type=int, nargs="+", default=None, help="models (1 8 64)")
    ap.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    ap.add_argument("--size", type=int, default=224, help="model input size")
    ap.add_argument("--tiles", type=int, nargs="+", default=[2, 4, 6])
    ap.add_argument("--layers", nargs="*", default=None, help="layer names (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (cuda 20, cpu 5)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--tune-repeats", type=int, default=None, help="accelerate()'s repeats")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (cpu only)")
    ap.add_argument("--no-tf32", action="store_true", help="cuDNN/cuBLAS float32 without TF32")
    ap.add_argument("--skip-layers", action="store_true")
    ap.add_argument("--skip-models", action="store_true")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            print(
                f"bench_gpu.py: --device {args.device} asked, but CUDA is not available "
                f"(torch {torch.__version__} is {build}; "
                f"{torch.cuda.device_count()} GPU(s) visible). Run benchmarks/gpu.sh on a GPU "
                "machine (it installs the CUDA wheel of torch), or use --device cpu --quick "
                "for a smoke test.",
                file=sys.stderr,
            )
            sys.exit(2)
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            print(
                f"bench_gpu.py: --device {args.device} asked, but only "
                f"{torch.cuda.device_count()} GPU(s) are visible.",
                file=sys.stderr,
            )
            sys.exit(2)
        torch.cuda.set_device(device)
        if args.no_tf32:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    else:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    if args.batch is None:
        args.batch = [1] if args.quick else [1, 8, 64]
    if args.model_batch is None:
        args.model_batch = [1, 8] if args.quick else [1, 8, 64]
    if args.repeats is None:
        args.repeats = 3 if args.quick else (20 if gpu else 5)
    if args.warmup is None:
        args.warmup = 1 if args.quick else (5 if gpu else 2)
    if args.tune_repeats is None:
        args.tune_repeats = 3 if args.quick else 7
    if args.quick:
        args.tiles = args.tiles[:2]

    print("# leanconv: cuDNN / oneDNN against fast layers and accelerate()\n")
    print(machine(device, args.threads))
    print(
        f"\nrepeats {args.repeats} (interleaved, medians), warmup {args.warmup}"
        f"{'; --quick: tiny sizes, a smoke test, not figures' if args.quick else ''}"
    )
    if not args.skip_layers:
        layers(args, device)
    if not args.skip_models:
        models(args, device)
    print("\ndone")


if __name__ == "__main__":
    main()
