"""Sharded generation: `codeblock evaluate` through the stage launcher with two CPU processes
(gloo, `accelerate launch`) writes the generations and results of one process, each rank
generating its own batches; a one-process run resumes a partial two-process cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_scale_score import free_port

from codeblock.core.launch import launch_stage

ROOT = Path(__file__).resolve().parents[1]
TWO = f"{Path(sys.executable).with_name('accelerate')} launch --config_file {ROOT / 'configs/accelerate/cpu_gloo_2proc.yaml'}"


def ref(tmp_path: Path, tiny: str, reports: str) -> dict:
    ov = {"paths.raw_dir": ROOT / "data" / "raw", "paths.reports_dir": tmp_path / reports,
          "model.name_or_path": tiny, "model.hf_cache_dir": ROOT / "models" / "hf", "model.device": "cpu",
          "eval.use_hub": "false", "model.torch_threads": 1, "eval.max_new_tokens": 12, "eval.batch_size": 2,
          "eval.limit": 5, "eval.benchmarks": "[humaneval, mbpp]", "tracking.enabled": "false"}
    return {"params": str(ROOT / "params.yaml"), "overrides": [f"{k}={v}" for k, v in ov.items()]}


def cache_rows(reports: Path) -> dict[str, dict]:
    files = sorted((reports / "generations").glob("*/*.jsonl"))
    assert len(files) == 2, files  # one cache per benchmark, parts merged into it
    assert not list((reports / "generations").glob("*/*.parts"))
    return {r["task_id"]: r for f in files for r in map(json.loads, f.read_text().splitlines())}


def verdicts(res: dict) -> dict:
    results = json.loads(Path(res["outputs"][0]).read_text())
    return {n: [(t["task_id"], t["status"], t["error"]) for t in b["tasks"]] for n, b in results["benchmarks"].items()}


@pytest.mark.slow  # ~1-2 min on 2 cores: three launches, each importing torch and transformers
def test_two_processes_generate_and_score_as_one(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    logs: list[str] = []
    one = launch_stage("evaluate", ref(tmp_path, tiny_model_dir, "one"), log=logs.append)
    two = launch_stage("evaluate", ref(tmp_path, tiny_model_dir, "two"), log=logs.append,
                       prefix=f"{TWO} --main_process_port {free_port()}")
    assert one["metrics"] and two["metrics"] == one["metrics"]  # rank 0's result came back, not rank 1's
    assert verdicts(two) == verdicts(one)
    a, b = cache_rows(tmp_path / "one"), cache_rows(tmp_path / "two")
    assert len(a) == 10 and {t: r["samples"] for t, r in b.items()} == {t: r["samples"] for t, r in a.items()}
    # each rank generated its own share: batches (2, 2, 1 tasks) x 2 benchmarks dealt round-robin
    by_rank = {r["rank"]: sum(1 for x in b.values() if x["rank"] == r["rank"]) for r in b.values()}
    assert by_rank == {0: 5, 1: 5} and {r["world"] for r in b.values()} == {2}
    assert any("rank 0 writes the results" in line for line in logs)  # rank 1 ended cleanly, without results

    # an interrupted two-process run (half of its humaneval cache lost) resumes under one process
    he = next((tmp_path / "two" / "generations" / "humaneval").glob("*.jsonl"))
    lines = he.read_text().splitlines()
    he.write_text("\n".join(lines[:2]) + "\n")
    again = launch_stage("evaluate", ref(tmp_path, tiny_model_dir, "two"), log=logs.append)
    assert verdicts(again) == verdicts(one)
    c = cache_rows(tmp_path / "two")
    assert {t: r["samples"] for t, r in c.items()} == {t: r["samples"] for t, r in a.items()}
    assert sum(1 for r in c.values() if r["world"] == 1) == 3  # only the three lost tasks were generated
