#!/usr/bin/env bash
# Every CUDA path of the project once, a PASS/FAIL table (bench/gpu_check.py says what it runs).
#   bash bench/gpu_check.sh                              # a CUDA GPU: under 8 minutes, no internet
#   TRITON_INTERPRET=1 bash bench/gpu_check.sh --tiny    # anywhere (CI): tiny sizes, the Triton interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" bench/gpu_check.py "$@"
