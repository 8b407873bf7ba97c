"""`eval.backend: vllm`: one engine per process, data parallel over ranks (one GPU each).

Runs only where vLLM imports and a GPU is visible (two GPUs for the data-parallel test); skipped
elsewhere. vLLM does not promise batch-invariant greedy outputs, so the two-rank run is compared
with the one-rank run on what must not change (which tasks, which ranks, the results' shape), not
on the generated text (the transformers backend is: tests/test_scale_eval.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM is installed but no GPU is visible", allow_module_level=True)

from test_scale_eval import cache_rows, verdicts  # noqa: E402
from test_scale_score import free_port  # noqa: E402

from codeblock.core.launch import launch_stage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vllm_model(default_model_dir) -> str:
    """A tiny random Llama whose head size (256 / 4 heads = 64) every vLLM attention kernel takes."""
    from codeblock.core.models import build_tiny_random

    return str(build_tiny_random(ROOT / "models" / "hf", hidden=256, layers=2))


def ref(tmp_path: Path, model: str, reports: str) -> dict:
    ov = {"paths.raw_dir": ROOT / "data" / "raw", "paths.reports_dir": tmp_path / reports,
          "model.name_or_path": model, "model.hf_cache_dir": ROOT / "models" / "hf", "eval.backend": "vllm",
          "eval.use_hub": "false", "eval.max_new_tokens": 16, "eval.limit": 6, "eval.benchmarks": "[humaneval, mbpp]",
          "tracking.enabled": "false"}
    return {"params": str(ROOT / "params.yaml"), "overrides": [f"{k}={v}" for k, v in ov.items()]}


def test_vllm_backend_one_process(tmp_path, vllm_model):
    logs: list[str] = []
    res = launch_stage("evaluate", ref(tmp_path, vllm_model, "one"), log=logs.append, timeout=900)
    assert set(res["metrics"]) == {"pass_at_1/humaneval", "pass_at_1/mbpp", "pass_at_1/avg"}
    rows = cache_rows(tmp_path / "one")
    assert len(rows) == 12 and all(len(r["samples"]) == 1 and r["world"] == 1 for r in rows.values())
    assert not any("vLLM is not installed" in line for line in logs)  # the vLLM engine ran, not a fallback
    results = json.loads((tmp_path / "one" / "eval" / "base" / "results.json").read_text())
    assert results["decoding"]["backend"] == "vllm"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="data parallel vLLM needs two GPUs")
def test_vllm_data_parallel_two_ranks(tmp_path, vllm_model):
    one = launch_stage("evaluate", ref(tmp_path, vllm_model, "one"), timeout=900)
    launcher = f"{Path(sys.executable).with_name('torchrun')} --nproc_per_node 2 --master_port {free_port()}"
    two = launch_stage("evaluate", ref(tmp_path, vllm_model, "two"), prefix=launcher, timeout=900)
    assert set(two["metrics"]) == set(one["metrics"])
    assert {n: [t for t, _, _ in v] for n, v in verdicts(two).items()} == \
        {n: [t for t, _, _ in v] for n, v in verdicts(one).items()}
    rows = cache_rows(tmp_path / "two")
    assert len(rows) == 12 and {r["world"] for r in rows.values()} == {2}
    assert {r["rank"] for r in rows.values()} == {0, 1}  # both engines generated a share
    results = json.loads((tmp_path / "two" / "eval" / "base" / "results.json").read_text())
    assert results["decoding"]["backend"] == "vllm"
