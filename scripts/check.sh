#!/usr/bin/env bash
# Static checks, run by CI (.ci/run) before the tests; run them locally before a commit.
#   ruff check           lint (rules in pyproject.toml)
#   ruff format --check  formatting
#   lint-imports         the import layers and no cycles (contracts in pyproject.toml; README "Architecture")
#   mypy                 types of the core packages (files in pyproject.toml [tool.mypy])
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PATHS=(creditlab creditlab_demo tests benchmarks scripts examples)
echo "ruff check";          "$BIN/ruff" check "${PATHS[@]}"
echo "ruff format --check"; "$BIN/ruff" format --check "${PATHS[@]}"
echo "lint-imports";        "$BIN/lint-imports"
echo "mypy";                "$BIN/mypy"
