"""HumanEval+ and MBPP+ scored verdict for verdict as evalplus 0.3.1 scores them.

The data semantics are evalplus's own code, not a re-implementation:
- inputs: MBPP+ argument lists are turned into tuples, sets and complex numbers by evalplus's
  `mbpp_deserialize_inputs` (here, in the pipeline: the file is data, not code);
- ground truth: the canonical program (`prompt + canonical_solution`) runs once per task in the
  sandbox through evalplus's `trusted_exec`, which records each input's running time; MBPP+'s
  output-not-None tasks keep only whether an output exists, as in evalplus's `get_groundtruth`;
- per-input time limits: `max(min_time_limit, gt_time_limit_factor * t)` (evalplus's defaults
  1 s and 4x), and a program budget of `min(60, sum(limits)) + 1` s plus the 1 s evalplus's
  `untrusted_check` waits on top;
- checking: evalplus's `unsafe_execute` runs inside the sandbox (`sandbox/sbx_evalplus.py`), once
  for the base inputs and once, in a separate program, for the plus inputs, with `fast_check` as
  `evalplus.evaluate` uses it. Its special oracles (HumanEval/32 find_zero, MBPP+ set-equality,
  not-None and per-task oracles) and its exact / type / `np.allclose(atol)` comparison apply.

Statuses are evalplus's: "pass", "fail", "timeout" (a program that ended without reporting, as
evalplus's dead child process, is "timeout"). pass@k counts a sample for HumanEval+ / MBPP+ when
base and plus both pass, and for the base benchmark when base passes.
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeblock.evaluate.executor import Executor, Task, Verdict

GT_TIMEOUT_S = 600.0  # the canonical program's whole run (evalplus gives it no limit)
GT_MEMORY_MB = 16384  # ditto; evalplus computes it in its own process, unbounded
PROGRAM_CAP_S = 60.0  # evalplus's EVALPLUS_TIMEOUT_PER_TASK default
PARTS = ("base", "plus")


def check_memory_mb() -> int:
    """Address-space limit of a check: evalplus's own EVALPLUS_MAX_MEMORY_BYTES (default 4 GiB)."""
    import os

    return int(os.environ.get("EVALPLUS_MAX_MEMORY_BYTES", 4 << 30)) >> 20


def harness_version() -> str:
    from importlib.metadata import version

    return f"evalplus-{version('evalplus')}"


def _b64(obj: Any) -> str:
    return base64.b64encode(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def deserialized_inputs(problem) -> dict[str, list]:
    """{"base": [...], "plus": [...]} as evalplus passes them to the function."""
    ex = problem.extras
    if ex["dataset"] == "mbpp":
        from evalplus.data.mbpp import mbpp_deserialize_inputs

        return {part: mbpp_deserialize_inputs(problem.task_id, ex[f"{part}_input"]) for part in PARTS}
    return {part: ex[f"{part}_input"] for part in PARTS}


@dataclass
class GroundTruth:
    expected: dict[str, str]  # part -> pickled outputs, opaque to the pipeline
    times: dict[str, list[float]]
    inputs: dict[str, str]  # part -> pickled deserialized inputs
    error: str = ""


def time_limits(times: Sequence[float]) -> list[float]:
    from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT

    return [max(DEFAULT_MIN_TIME_LIMIT, DEFAULT_GT_TIME_LIMIT_FACTOR * t) for t in times]


def program_budget(limits: Sequence[float]) -> float:
    """Wall-clock seconds evalplus's `untrusted_check` gives the checking process (fast_check)."""
    return min(PROGRAM_CAP_S, sum(limits)) + 1.0 + 1.0


def _read_cache(path: Path | None) -> dict[str, dict]:
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache is recomputed (and rewritten), never trusted


def ground_truth(executor: Executor, problems: Sequence, progress: bool = True,
                 cache: Path | None = None) -> dict[str, GroundTruth]:
    """Expected outputs and running times of every problem's canonical program, in the sandbox.
    With `cache` (a JSON file keyed by the dataset's hash), tasks computed before are reused, as
    evalplus reuses its ground-truth pickle; the running times are this machine's."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS

    inputs = {p.task_id: {k: _b64(v) for k, v in deserialized_inputs(p).items()} for p in problems}
    cached = _read_cache(cache)
    todo = [p for p in problems if p.task_id not in cached]
    tasks = [
        Task(p.task_id, p.reference, "", "evalplus_gt", p.entry_point, timeout_s=GT_TIMEOUT_S, max_report=1 << 30,
             memory_mb=GT_MEMORY_MB,
             payload={"evalplus": {"base_inputs": inputs[p.task_id]["base"], "plus_inputs": inputs[p.task_id]["plus"],
                                   "output_not_none": p.extras["dataset"] == "mbpp"
                                   and p.entry_point in MBPP_OUTPUT_NOT_NONE_TASKS}})
        for p in todo
    ]
    fresh = {}
    verdicts = executor.run(tasks, progress=progress, desc="evalplus ground truth") if tasks else []
    for p, v in zip(todo, verdicts):
        if v.passed and isinstance(v.data, dict):
            fresh[p.task_id] = {"expected": {k: v.data[k] for k in PARTS}, "times": {k: v.data[f"{k}_time"] for k in PARTS}}
        else:
            fresh[p.task_id] = {"error": f"{v.error}: {v.detail}"[:500]}
    if cache is not None and any("error" not in g for g in fresh.values()):
        from codeblock.core.io import write_json

        write_json(cache, {**cached, **{t: g for t, g in fresh.items() if "error" not in g}})
    out = {}
    for p in problems:
        g = cached.get(p.task_id) or fresh[p.task_id]
        out[p.task_id] = GroundTruth(g.get("expected", {}), g.get("times", {}), inputs[p.task_id], g.get("error", ""))
    return out


def check_tasks(problem, gt: GroundTruth, solution: str, key: str, memory_mb: int) -> list[Task]:
    """The two sandbox programs (base, plus) that check one solution."""
    out = []
    for part in PARTS:
        limits = time_limits(gt.times[part])
        out.append(Task(
            f"{key}/{part}", solution, "", "evalplus", problem.entry_point, timeout_s=program_budget(limits),
            # as in evalplus, the inputs and expected outputs are loaded first and the reliability
            # guard then caps the address space at EVALPLUS_MAX_MEMORY_BYTES; ours is only the outer bound
            memory_mb=GT_MEMORY_MB, env={"EVALPLUS_MAX_MEMORY_BYTES": str(memory_mb << 20)},
            payload={"evalplus": {"dataset": problem.extras["dataset"], "inputs": gt.inputs[part],
                                  "expected": gt.expected[part], "time_limits": limits,
                                  "atol": problem.extras["atol"], "fast_check": True, "part": part}}))
    return out


def status_of(v: Verdict) -> str:
    """evalplus's status of one checked program."""
    if isinstance(v.data, dict) and v.data.get("evalplus") in ("pass", "fail", "timeout"):
        return v.data["evalplus"]
    if v.status == "timeout" or v.error == "no_verdict":
        return "timeout"  # evalplus: a checking process that never reported
    return "fail"


def score(executor: Executor, problems: Sequence, solutions: Sequence[tuple[Any, int, str]],
          progress: bool = True, desc: str = "execute", memory_mb: int | None = None,
          cache: Path | None = None) -> list[dict[str, Any]]:
    """One record per (problem, sample index, solution): base/plus statuses and details, and the
    ground truth's total running time per part (`*_gt_s`)."""
    gts = ground_truth(executor, problems, progress, cache)
    memory_mb = memory_mb or check_memory_mb()
    tasks, where = [], []
    results: list[dict[str, Any]] = []
    for p, j, sol in solutions:
        rec = {"task_id": p.task_id, "sample": j, "solution": sol, "base_status": "fail", "plus_status": "fail",
               "base_detail": "", "plus_detail": "", "base_error": None, "plus_error": None}
        gt = gts[p.task_id]
        rec.update({f"{k}_gt_s": round(sum(v), 3) for k, v in gt.times.items()})
        if gt.error:
            rec.update(base_detail=f"ground truth failed: {gt.error}", plus_detail="ground truth failed",
                       base_error="ground_truth_failed", plus_error="ground_truth_failed")
        else:
            for t in check_tasks(p, gt, sol, f"{p.task_id}#{j}", memory_mb):
                tasks.append(t)
                where.append((len(results), t.key.rsplit("/", 1)[1]))
        results.append(rec)
    for (i, part), v in zip(where, executor.run(tasks, progress=progress, desc=desc)):
        results[i][f"{part}_status"] = status_of(v)
        results[i][f"{part}_detail"] = v.detail
        results[i][f"{part}_error"] = v.error
    return results
