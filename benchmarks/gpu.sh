#!/usr/bin/env bash
# GPU benchmark: cuDNN against leanconv's fast layers and accelerate() (benchmarks/bench_gpu.py).
#
#     bash benchmarks/gpu.sh [extra bench_gpu.py arguments, e.g. --no-tf32 --batch 1 8]
#
# 1. Creates/uses .venv as the Makefile does (python3 -m venv; pip install -c constraints.txt
#    -e '.[dev]'; the same .venv/.installed stamp, so `make` and this script share the venv).
# 2. constraints.txt pins torch==<version> and the project's machines resolve it to the CPU build
#    (the Makefile says so). If torch cannot see CUDA while nvidia-smi sees a GPU, installs the
#    CUDA wheel of the same torch version:
#        pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
#    TORCH_CUDA     CUDA tag of the wheel (default cu128)
#    TORCH_INDEX_URL index to take it from (default https://download.pytorch.org/whl/$TORCH_CUDA)
#    TORCH_SPEC     requirement (default torch==<pinned version>+$TORCH_CUDA)
#    PYTHON         interpreter that creates .venv (default python3)
# 3. Runs bench_gpu.py --device cuda, output tee'd to benchmarks/results/gpu-<date>.md
#    (benchmarks/results/ is created with a .gitignore of its own: results are not committed).
# Exits 2 without measuring when no GPU is visible.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PY=$VENV/bin/python
STAMP=$VENV/.installed

# --- 1. the venv, as `make install` does -------------------------------------------------------
if [[ ! -f $STAMP || pyproject.toml -nt $STAMP || constraints.txt -nt $STAMP ]]; then
    test -x "$PY" || "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -c constraints.txt -e '.[dev]'
    touch "$STAMP"
fi

# --- 2. a CUDA build of the pinned torch --------------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: no GPU visible (nvidia-smi missing or sees no device); nothing measured." >&2
    echo "gpu.sh: for a CPU smoke test: $PY benchmarks/bench_gpu.py --device cpu --quick" >&2
    exit 2
fi

cuda_ok() {
    "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}

if ! cuda_ok; then
    pinned=$(sed -n 's/^torch==\([^[:space:];#]*\).*/\1/p' constraints.txt | head -n 1)
    pinned=${pinned%%+*}
    if [[ -z $pinned ]]; then
        echo "gpu.sh: no torch==<version> line in constraints.txt" >&2
        exit 1
    fi
    TORCH_CUDA=${TORCH_CUDA:-cu128}
    TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/$TORCH_CUDA}
    TORCH_SPEC=${TORCH_SPEC:-torch==$pinned+$TORCH_CUDA}
    echo "gpu.sh: torch in $VENV cannot see the GPU (CPU build?): installing $TORCH_SPEC" \
        "from $TORCH_INDEX_URL" >&2
    "$PY" -m pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
    if ! cuda_ok; then
        echo "gpu.sh: torch still cannot use the GPU after installing $TORCH_SPEC:" >&2
        "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' >&2
        nvidia-smi >&2 || true
        echo "gpu.sh: set TORCH_CUDA / TORCH_INDEX_URL / TORCH_SPEC to a wheel that matches" \
            "the driver" >&2
        exit 1
    fi
fi

# --- 3. the benchmark ---------------------------------------------------------------------------
mkdir -p benchmarks/results
[[ -f benchmarks/results/.gitignore ]] || printf '*\n' >benchmarks/results/.gitignore
out=benchmarks/results/gpu-$(date +%Y-%m-%d-%H%M%S).md
{
    echo "<!-- bash benchmarks/gpu.sh $*; $(date -u '+%Y-%m-%d %H:%M UTC');" \
        "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown) -->"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    echo '```'
    echo
} | tee "$out"
PYTHONUNBUFFERED=1 "$PY" benchmarks/bench_gpu.py --device cuda "$@" 2>&1 | tee -a "$out"
echo "gpu.sh: written to $out" >&2
