#!/usr/bin/env bash
# GPU check (benchmarks/gpu_check.py): sparse vs full train step, scoring and generation
# throughput on random-init Qwen2.5-Coder-0.5B/1.5B shapes. Needs torch, transformers, peft; no
# download, no other part of the project's stack. Stops after 10 minutes in any case.
#   bash benchmarks/gpu_check.sh                        # one GPU (about 3-5 minutes on an H100)
#   bash benchmarks/gpu_check.sh --device cpu --tiny    # the CPU smoke test of the same code
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --out gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout "${GPU_CHECK_TIMEOUT_S:-600}" ${PYTHON:-python3} benchmarks/gpu_check.py "$@"
