"""The evaluate stage end to end on a tiny random model: generation, cache, results, MLflow, adapters;
and the sanitizer that turns raw generations into programs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codeblock.core.config import load_config
from codeblock.evaluate import sanitize as S

REPO = Path(__file__).resolve().parents[1]


def test_pick_code_prefers_entry_point_block_and_handles_truncation():
    raw = ("Here is a helper:\n```python\ndef helper():\n    return 1\n```\nAnd the answer:\n"
           "```python\nimport math\n\ndef area(r):\n    return math.pi * r * r\n\nprint(area(2))\n"
           "if __name__ == '__main__':\n    area(input())\n```\nDone.")
    prog = S.to_program(raw, "area", "instruct")
    assert "def area" in prog and "import math" in prog
    assert "print(" not in prog and "__main__" not in prog and "helper" not in prog
    truncated = "```python\ndef f(x):\n    return x + 1\n\ndef g(y):\n    return (y +"
    prog = S.to_program(truncated, "f", "instruct")
    assert "def f" in prog and "def g" not in prog
    compile(prog, "<p>", "exec")
    # no fence at all: the text itself is the code
    assert "def f" in S.to_program("def f(x):\n    return x\n", "f", "instruct")
    # instruct answers get the problem's header imports
    prog = S.to_program("```python\ndef f(xs: List[int]):\n    return xs\n```", "f", "instruct",
                        "from typing import List\n\n\ndef f(xs: List[int]):\n")
    assert prog.startswith("from typing import List")


def test_completion_stops_and_stop_rules():
    prompt = "def add(a, b):\n    \"\"\"Add.\"\"\"\n"
    raw = "    return a + b\n\n\ndef unrelated():\n    pass\nprint(add(1, 2))\n"
    prog = S.to_program(raw, "add", "completion", prompt)
    assert "unrelated" not in prog and "return a + b" in prog
    from codeblock.evaluate.generate import finalize, is_done

    assert not is_done("```python\ndef f():", "instruct") and is_done("```python\nx=1\n```", "instruct")
    assert finalize("```python\nx=1\n```\nmore text ```", "instruct") == "```python\nx=1\n```"
    # the one fence parser: a ``` inside a longer fence does not close it; CRLF; ~~~ fences
    assert not is_done("````python\ns = '```'\n```\n", "instruct")
    assert finalize("````\ns = '```'\n```\n````\nafter", "instruct") == "````\ns = '```'\n```\n````"
    assert finalize("```py\r\nx=1\r\n```\r\nafter", "instruct") == "```py\r\nx=1\r\n```"
    assert finalize("~~~\nx=1\n~~~\n", "instruct") == "~~~\nx=1\n~~~"
    assert is_done("    return 1\ndef g", "completion")


@pytest.fixture()
def cfg(tmp_path):
    c = load_config(REPO / "params.yaml", [
        "eval.use_hub=false", "model.name_or_path=tiny-random", f"model.hf_cache_dir={tmp_path / 'hf'}",
        "model.device=cpu", "model.torch_threads=1", "eval.max_new_tokens=12", "eval.batch_size=2", "eval.limit=3",
        f"paths.reports_dir={tmp_path / 'reports'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'ml.db'}",
        f"tracking.artifact_dir={tmp_path / 'art'}", "tracking.log_system_metrics=false",
        "eval.benchmarks=[humaneval, mbpp, bigcodebench_hard]",
    ])
    c.paths.raw_dir = str(REPO / "data" / "raw")
    return c


@pytest.mark.slow
def test_run_evaluate_tiny_model_cache_results_mlflow(cfg, monkeypatch):
    import mlflow

    from codeblock.evaluate import generate as G
    from codeblock.evaluate.pipeline import run_evaluate

    res = run_evaluate(cfg, method="base", progress=False)
    out = Path(cfg.paths.reports_dir) / "eval" / "base"
    results = json.loads((out / "results.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"pass_at_1/humaneval", "pass_at_1/mbpp", "pass_at_1/avg"}  # unavailable: not scored
    assert results["unavailable"]["bigcodebench_hard"].startswith("unavailable: ")
    he = results["benchmarks"]["humaneval"]
    assert he["n_problems"] == 3 and len(he["tasks"]) == 3 and len(he["dataset_sha256"]) == 64
    assert all(t["status"] in ("passed", "failed", "timeout") for t in he["tasks"])
    assert all(t["error"] for t in he["tasks"] if t["status"] != "passed")
    assert results["harness"]["harness_version"] and results["decoding"]["temperature"] == 0.0
    assert results["harness"]["limits"]["memory_mb"] == cfg.eval.memory_mb
    assert res["metrics"] == metrics
    gen = Path(he["generations"])
    assert gen.exists() and len(gen.read_text().splitlines()) == 3

    # a second run reuses the cached generations: no backend is built at all
    def boom(*a, **k):
        raise AssertionError("the model was loaded although generations are cached")

    monkeypatch.setattr(G, "make_backend", boom)
    res2 = run_evaluate(cfg, method="base", progress=False)
    assert res2["metrics"] == metrics

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")
    names = [r.info.run_name for r in runs]
    assert names.count("evaluate-base") == 2 and names.count("eval/humaneval") == 2
    child = next(r for r in runs if r.info.run_name == "eval/humaneval")
    assert "pass_at_1/humaneval" in child.data.metrics and child.data.tags.get("mlflow.parentRunId")
    assert not any("@" in k for r in runs for k in r.data.metrics)


def test_run_evaluate_peft_adapter_folder(cfg, tmp_path):
    from peft import LoraConfig, get_peft_model

    from codeblock.core.models import load_model
    from codeblock.evaluate.pipeline import run_evaluate

    base = load_model(cfg.model)
    adapter = tmp_path / "runs" / "codeblock" / "model"
    get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    assert (adapter / "adapter_config.json").exists()
    cfg.eval.benchmarks = ["humaneval"]
    cfg.eval.limit = 2
    cfg.tracking.enabled = False
    res = run_evaluate(cfg, model_path=str(adapter), method="codeblock", progress=False)
    assert "pass_at_1/humaneval" in res["metrics"]
    assert json.loads(Path(res["outputs"][0]).read_text())["model"]["path"] == str(adapter)
