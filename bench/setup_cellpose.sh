#!/usr/bin/env bash
# Create bench/.venv-cellpose: the reference cellpose 3.1.1.2 used by bench/bench_flows*.py.
#
# Usage: bash bench/setup_cellpose.sh [--force]
#
# Idempotent: if the venv already imports cellpose 3.1.1.2 (dynamics + metrics), it does
# nothing. torch is pinned to the CPU wheel (2.13.0, found on disk through pip's find-links)
# so pip never pulls a CUDA build. No GUI extras are installed, and no model is downloaded:
# the import check runs with CELLPOSE_LOCAL_MODELS_PATH pointing at a throwaway directory.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BENCH_DIR}/.venv-cellpose"
PYTHON="${PYTHON:-python3.11}"
CELLPOSE_VERSION="3.1.1.2"
TORCH_VERSION="2.13.0"

check() {
    local models_dir
    models_dir="$(mktemp -d)"
    CELLPOSE_LOCAL_MODELS_PATH="${models_dir}" "${VENV}/bin/python" - <<EOF
import importlib.metadata as md
from cellpose import dynamics, metrics  # noqa: F401
import numpy, torch
assert md.version("cellpose") == "${CELLPOSE_VERSION}", md.version("cellpose")
assert torch.__version__.split("+")[0] == "${TORCH_VERSION}", torch.__version__
assert not torch.version.cuda, f"CUDA torch installed: {torch.version.cuda}"
print(f"cellpose {md.version('cellpose')}, numpy {numpy.__version__}, torch {torch.__version__}")
EOF
    local status=$?
    rm -rf "${models_dir}"
    return ${status}
}

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "${VENV}"
fi

if [[ -x "${VENV}/bin/python" ]] && check >/dev/null 2>&1; then
    echo "bench/.venv-cellpose already set up: $(check)"
    exit 0
fi

echo "creating ${VENV}"
"${PYTHON}" -m venv "${VENV}"
"${VENV}/bin/python" -m pip install --quiet --upgrade pip
# torch first, alone and pinned, so the resolver can only ever see the CPU wheel on disk.
"${VENV}/bin/python" -m pip install --quiet "torch==${TORCH_VERSION}"
"${VENV}/bin/python" -m pip install --quiet \
    "cellpose==${CELLPOSE_VERSION}" "numpy<2.1" "torch==${TORCH_VERSION}" psutil
check
echo "bench/.venv-cellpose ready"
