"""`codeblock evaluate --samples`: other tools' samples.jsonl scored with evalplus's semantics,
eval_results.json in evalplus's shape, bad rows named before any work; the evalplus checker's
statuses (pass / fail / timeout) on a small evalplus-schema file made here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from codeblock.core.config import load_config
from codeblock.core.io import BadRowError
from codeblock.evaluate import samples as SM

pytest.importorskip("evalplus")
REPO = Path(__file__).resolve().parents[1]

PROMPT = 'def scale(xs, k):\n    """Multiply every number by k."""\n'
ROWS = [
    {"task_id": "HumanEval/0", "prompt": PROMPT, "entry_point": "scale",
     "canonical_solution": "    return [x * k for x in xs]\n", "base_input": [[[1, 2], 3], [[0.5], 2]],
     "plus_input": [[[1.5, 2.5], 0.1], [[], 7]], "atol": 0},
    {"task_id": "HumanEval/1", "prompt": "def pair(a):\n", "entry_point": "pair",
     "canonical_solution": "    return (a, a)\n", "base_input": [[1], ["x"]], "plus_input": [[[1, 2]]], "atol": 0},
]


@pytest.fixture()
def cfg(tmp_path):
    path = tmp_path / "HumanEvalPlus-mini.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in ROWS)
    c = load_config(REPO / "params.yaml", ["eval.use_hub=false", "tracking.enabled=false", "eval.workers=2",
                                              "eval.preload=[]"])
    c.eval.humaneval_plus_path = str(path)
    c.paths.reports_dir = str(tmp_path / "reports")
    return c


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_samples_scored_like_evalplus(cfg, tmp_path, monkeypatch):
    from codeblock.evaluate.executor import Executor
    from codeblock.evaluate.pipeline import run_evaluate

    f = write(tmp_path / "model_samples.jsonl", [
        {"task_id": "HumanEval/0", "completion": "    return [x * k for x in xs]\n"},  # prompt + completion
        {"task_id": "HumanEval/0", "solution": "def scale(xs, k):\n    return [x * k + 1e-3 for x in xs]\n"},
        {"task_id": "HumanEval/0", "solution": "def scale(xs, k):\n    return [float(x * k) for x in xs]\n"},
        {"task_id": "HumanEval/1", "solution": "def pair(a):\n    return [a, a]\n"},  # list != tuple
        {"task_id": "HumanEval/1", "solution": "import time\ntime.sleep(60)\n"},  # hangs at import: timeout
    ])
    res = run_evaluate(cfg, samples_path=str(f), progress=False)
    out = Path(cfg.paths.reports_dir) / "eval" / "samples-model_samples"
    ev = json.loads((out / "eval_results.json").read_text())
    got = {k: [(r["base_status"], r["plus_status"]) for r in v] for k, v in ev["eval"].items()}
    # exact -> type check -> allclose: 1e-3 noise fails; int results returned as float pass on exact
    # equality (3 == 3.0) on base, and plus has float outputs anyway
    assert got == {"HumanEval/0": [("pass", "pass"), ("fail", "fail"), ("pass", "pass")],
                   "HumanEval/1": [("fail", "fail"), ("timeout", "timeout")]}
    assert ev["hash"] == SM.dataset_md5(cfg.eval.humaneval_plus_path) and len(ev["hash"]) == 32
    blk = res["results"]["benchmarks"]["humaneval_plus"]
    assert blk["harness"].startswith("evalplus-0.3") and blk["n_samples"] == 5
    assert res["results"]["harness"]["official"]["evalplus"].startswith("0.3")
    assert res["metrics"]["pass_at_1/humaneval_plus"] == pytest.approx((2 / 3 + 0) / 2)
    assert res["metrics"]["base_pass_at_1/humaneval_plus"] == pytest.approx((2 / 3 + 0) / 2)
    assert str(out / "eval_results.json") in res["outputs"]

    # the ground truth is cached per dataset hash: a second run executes only the samples
    (cache,) = (Path(cfg.paths.reports_dir) / "evalplus_ground_truth").glob("humaneval_plus-*.json")
    assert set(json.loads(cache.read_text())) == {"HumanEval/0", "HumanEval/1"}
    runs, real_run = [], Executor.run
    monkeypatch.setattr(Executor, "run", lambda self, tasks, **kw: runs.append(kw.get("desc")) or real_run(self, tasks, **kw))
    again = run_evaluate(cfg, samples_path=str(f), progress=False)
    assert runs == ["execute humaneval_plus"] and again["metrics"] == res["metrics"]


def test_bad_samples_fail_before_work(cfg, tmp_path):
    with pytest.raises(BadRowError, match=r"row 2: field 'task_id'"):
        SM.read_samples(write(tmp_path / "a.jsonl", [{"task_id": "HumanEval/0", "solution": ""}, {"solution": "x"}]))
    with pytest.raises(BadRowError, match=r"row 1: field 'solution'.*neither"):
        SM.read_samples(write(tmp_path / "b.jsonl", [{"task_id": "HumanEval/0", "code": "x"}]))
    with pytest.raises(BadRowError, match=r"row 1: field '<line>'"):
        SM.read_samples(write(tmp_path / "c.jsonl", ["{not json"]))
    with pytest.raises(ValueError, match="cannot tell the benchmark"):
        SM.infer_benchmarks(["Other/1"])
    from codeblock.evaluate.pipeline import run_evaluate

    f = write(tmp_path / "d.jsonl", [{"task_id": "HumanEval/99", "solution": "x = 1\n"}])
    with pytest.raises(BadRowError, match=r"task ids not in .*HumanEval/99"):
        run_evaluate(cfg, samples_path=str(f), progress=False)
