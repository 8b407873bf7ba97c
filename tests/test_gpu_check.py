"""benchmarks/gpu_check.sh on CPU with tiny shapes: it runs, reports every check, and imports
nothing of the orchestration stack (the GPU box has only torch, transformers, peft, accelerate,
pyarrow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("prefect", "mlflow", "dvc", "evaluate", "datasets", "sklearn", "codeblock.core", "codeblock.stages")


def test_gpu_check_runs_on_cpu_tiny_without_the_stack(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": f"{sys.executable} -X importtime", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--device", "cpu", "--tiny", "--warmup", "0",
                          "--steps", "1", "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    imported = {m.group(1).strip() for m in re.finditer(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s+(.+)$", res.stderr, re.M)}
    assert "codeblock.train.sparse_loss" in imported  # the trainer's own sparse path is what is timed
    bad = sorted(m for m in imported if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN))
    assert bad == []
    rows = json.loads(out.read_text())["rows"]
    checks = {r["check"]: r for r in rows}
    assert set(checks) == {"train full", "train sparse", "score", "generate (batch 2)"}
    # 2 sequences x 64 response tokens: all supervised vs about 2% of them
    assert checks["train full"]["supervised_tokens"] == 128
    assert 0 < checks["train sparse"]["supervised_tokens"] < 13
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert "step time sparse/full" in res.stdout

