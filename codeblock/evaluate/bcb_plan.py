"""BigCodeBench (full and hard) scored verdict for verdict as bigcodebench 0.2.5 scores them.

The checking is bigcodebench's own code, run inside our sandbox (`sandbox/sbx_bigcodebench.py`),
with the arguments `bigcodebench.evaluate` passes by default:
- program: the sample's solution (or the task's `complete_prompt` + its completion), "calibrated"
  as `evaluate(calibrated=True)` does: `code_prompt + "\\n    pass\\n" + solution`, so the task's
  own imports precede the answer;
- check: bigcodebench's `untrusted_check(program, test, entry_point, 30 GiB, 30 GiB, 10 MiB,
  min_time_limit=1, gt_time)` itself, in the sandbox's pid 1 (its process layout decides races;
  `sandbox/sbx_bigcodebench.py`): its child's suite alarm is `timeout = max(TIMEOUT_LIMIT (240 s),
  max(min_time_limit, gt_time)) + 1`, and it joins the child for `timeout + 1` s, where gt_time is
  the ground truth's test time, or 20 s when none is known (evaluate's fallback). The ground
  truth's own run is capped by the same 240 s, so under the defaults every check gets 241 s:
  scoring needs no ground-truth run (the self-check runs it). The executor's wall clock is a
  backstop BACKSTOP_S above that;
- modules: the fork servers import only what `bigcodebench.evaluate`'s worker processes have
  imported (`bigcodebench.eval`, `bigcodebench.gen.util`), not matplotlib or pandas: upstream's
  child imports pyplot (reliability_guard) and the program's libraries inside its `timeout + 1`,
  so that is what the time after the suite alarm leaves (about 0.6 s for pyplot here) and what
  decides "fail" or "timeout" for a program that trips the alarm;
- statuses: bigcodebench's "pass" / "fail" / "timeout"; a program that ends without reporting is
  "timeout", as `untrusted_check`'s dead child is;
- ground truth (self-check): `complete_prompt + "\\n" + canonical_solution` through
  `trusted_exec`, as `trusted_check` (`--check-gt-only`) runs it: a time, or a failure per task.

The fork servers run `eval.bigcodebench_python` (the evaluation venv of `bcb_env`), or the
project's interpreter when it is empty.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from codeblock.evaluate.executor import Executor, Task, Verdict
from codeblock.evaluate.results import group_by_task

MAX_AS_MB = 30 * 1024  # evaluate's max_as_limit, max_data_limit (MiB)
MAX_DATA_MB = 30 * 1024
MAX_STACK_MB = 10  # evaluate's max_stack_limit (MiB)
MIN_TIME_LIMIT = 1.0  # evaluate's min_time_limit
DEFAULT_GT_TIME = 20.0  # evaluate's gt_time_limit when the ground truth has no time
TASK_LIMIT_S = 240.0  # bigcodebench.eval.utils.TIMEOUT_LIMIT
CPU_FACTOR = 64  # bigcodebench sets no CPU-time limit; ours only stops a runaway multi-threaded program
PRELOAD = ("bigcodebench.eval", "bigcodebench.gen.util")  # what evaluate's workers have imported
BACKSTOP_S = 10.0  # above untrusted_check's join: its manager's start and shutdown, terminate, kill


def harness_version() -> str:
    from importlib.metadata import version

    return f"bigcodebench-{version('bigcodebench')}"


def check_timeout(gt_time: float | None = None, task_limit: float = TASK_LIMIT_S) -> float:
    """The `timeout` `untrusted_check` computes (its child's test-suite alarm; the child gets one
    second more)."""
    gt = gt_time if gt_time else DEFAULT_GT_TIME
    return max(task_limit, max(MIN_TIME_LIMIT, gt)) + 1.0


def calibrate(problem, solution: str) -> str:
    """evaluate(calibrated=True): the task's code prompt and a `pass` body before the solution."""
    return problem.extras["code_prompt"] + "\n    pass\n" + solution


def executor_for(cfg, base: Executor) -> Executor:
    """Fork servers for BigCodeBench programs: eval.bigcodebench_python (empty: the project's own)."""
    python = cfg.eval.bigcodebench_python or None
    if python and "/" in python:  # the fork servers start in /: a relative venv path is made absolute
        from pathlib import Path

        if not Path(python).exists():
            raise FileNotFoundError(f"eval.bigcodebench_python={python} does not exist; build the evaluation "
                                    "venv with `python -m codeblock.evaluate.bcb_env --dest .venv-bcb`")
        python = str(Path(python).absolute())  # not resolved: a venv's python is a symlink
    return Executor(base.limits, workers=base.workers, isolation=cfg.eval.isolation, sandbox_uid=cfg.eval.sandbox_uid,
                    python=python, preload=list(PRELOAD))


def _limits(task_limit: float) -> dict[str, Any]:
    return {"max_as_limit": MAX_AS_MB, "max_data_limit": MAX_DATA_MB, "max_stack_limit": MAX_STACK_MB,
            "task_limit": task_limit}


def check_task(problem, program: str, key: str, gt_time: float | None = None,
               task_limit: float = TASK_LIMIT_S) -> Task:
    wall = check_timeout(gt_time, task_limit) + 1.0 + BACKSTOP_S
    return Task(key, program, problem.test, "bigcodebench", problem.entry_point, libs=list(problem.libs),
                timeout_s=wall, cpu_s=wall * CPU_FACTOR, memory_mb=MAX_AS_MB,
                payload={"bigcodebench": {"min_time_limit": MIN_TIME_LIMIT, "gt_time_limit": gt_time or DEFAULT_GT_TIME,
                                         **_limits(task_limit)}})


def ground_truth_task(problem, task_limit: float = TASK_LIMIT_S) -> Task:
    wall = max(task_limit, MIN_TIME_LIMIT) + 1.0 + 1.0  # trusted_check's timeout + 1 of join
    return Task(problem.task_id, problem.reference, problem.test, "bigcodebench_gt", problem.entry_point,
                libs=list(problem.libs), timeout_s=wall, cpu_s=wall * CPU_FACTOR, memory_mb=MAX_AS_MB,
                payload={"bigcodebench": {"task_id": problem.task_id, **_limits(task_limit)}})


def status_of(v: Verdict) -> str:
    """bigcodebench's status of one checked program."""
    if isinstance(v.data, dict) and v.data.get("bigcodebench") in ("pass", "fail", "timeout"):
        return v.data["bigcodebench"]
    if v.status == "timeout" or v.error == "no_verdict":
        return "timeout"  # untrusted_check: a child that never reported
    return "fail"


_NO_MODULE = re.compile(r"No module named '([\w.]+)'")


def error_class(v: Verdict, libs: Sequence[str], status: str) -> str | None:
    """Our error class: missing_library when a library the task declares is not importable from
    the sandbox's interpreter (an environment gap, not the program's fault), else the verdict's."""
    if status == "pass":
        return None
    texts = [v.detail, *((v.data or {}).get("details") or {}).values()] if isinstance(v.data, dict) else [v.detail]
    for t in texts:
        m = _NO_MODULE.search(str(t))
        if m and m.group(1).split(".")[0] in set(libs):
            return "missing_library"
    return v.error or f"bigcodebench_{status}"


def score(executor: Executor, problems: Sequence, solutions: Sequence[tuple[Any, int, str]], progress: bool = True,
          desc: str = "execute", task_limit: float = TASK_LIMIT_S,
          gt_times: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """One record per (problem, sample index, program): bigcodebench's status and details. The
    programs are checked as given (calibrate them first, as evaluate does)."""
    gt_times = gt_times or {}
    tasks = [check_task(p, sol, f"{p.task_id}#{j}", gt_times.get(p.task_id), task_limit) for p, j, sol in solutions]
    out = []
    for (p, j, sol), v in zip(solutions, executor.run(tasks, progress=progress, desc=desc)):
        st = status_of(v)
        out.append({"task_id": p.task_id, "sample": j, "solution": sol, "status": st,
                    "details": (v.data or {}).get("details", {}) if isinstance(v.data, dict) else {},
                    "error": error_class(v, p.libs, st), "detail": v.detail, "duration_s": round(v.duration_s, 3)})
    return out


def ground_truth(executor: Executor, problems: Sequence, progress: bool = True,
                 task_limit: float = TASK_LIMIT_S) -> list[dict[str, Any]]:
    """Every problem's canonical program through trusted_exec: {task_id, time (None: failed),
    error, detail}, as `bigcodebench.evaluate --check-gt-only` computes its ground-truth pass rate."""
    tasks = [ground_truth_task(p, task_limit) for p in problems]
    out = []
    for p, v in zip(problems, executor.run(tasks, progress=progress, desc="bigcodebench ground truth")):
        t = v.data.get("time") if isinstance(v.data, dict) else None
        st = "pass" if v.passed and t is not None else "fail"
        err = error_class(v, p.libs, st)
        if st == "fail" and v.status == "timeout":
            err = "timeout"
        out.append({"task_id": p.task_id, "time": t, "error": err, "detail": v.detail[:500]})
    return out


def eval_results(records: list[dict[str, Any]]) -> dict[str, Any]:
    """bigcodebench's eval_results.json shape: {"date", "eval": {task_id: [{task_id, solution,
    status, details}]}}."""
    ev: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (r["task_id"], r["sample"])):
        ev.setdefault(r["task_id"], []).append({"task_id": r["task_id"], "solution": r["solution"],
                                                "status": r["status"], "details": r["details"]})
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "eval": ev}


def rows(cfg, executor: Executor, problems, progs, progress: bool, name: str, self_check: bool):
    """bigcodebench 0.2.5's verdicts (`bcb_plan`), from the interpreter of eval.bigcodebench_python.
    Self-check: the ground truth as `--check-gt-only` runs it, one row per task."""
    ex = executor_for(cfg, executor)
    if self_check:
        gts = ground_truth(ex, problems, progress)
        rows = [{"task_id": g["task_id"], "status": "passed" if g["time"] is not None else "failed",
                 "error": g["error"], "detail": g["detail"], "n": 1, "c": int(g["time"] is not None),
                 "gt_time_s": g["time"]} for g in gts]
        return rows, Counter(g["error"] or "passed" for g in gts), None, ex
    recs = score(ex, problems, [(p, j, calibrate(p, prog)) for p, j, prog in progs], progress=progress,
                   desc=f"execute {name}")
    by_task = group_by_task(recs)
    rows = []
    for p in problems:
        rs = by_task[p.task_id]
        bad = next((r for r in rs if r["status"] != "pass"), None)
        row = {"task_id": p.task_id, "status": "passed" if rs[0]["status"] == "pass" else "failed",
               "bigcodebench_status": rs[0]["status"], "error": rs[0]["error"],
               "detail": (bad["detail"] if bad else "")[:500], "n": len(rs), "c": sum(r["status"] == "pass" for r in rs)}
        if len(rs) > 1:
            row["samples"] = [{"status": r["status"], "error": r["error"]} for r in rs]
        rows.append(row)
    return rows, Counter(r["error"] or "passed" for r in recs), recs, ex


def info(ex: Executor, rows: list[dict], recs, self_check: bool) -> dict[str, Any]:
    """What a BigCodeBench block records besides the common fields."""
    info: dict[str, Any] = {"harness": harness_version(), "interpreter": ex.python,
                            "timeout_s": check_timeout() + 1.0, "memory_mb": MAX_AS_MB}
    if self_check:
        info["ground_truth_pass_rate"] = sum(r["c"] for r in rows) / max(1, len(rows))
        info["ground_truth_failed"] = {r["task_id"]: f"{r['error']}: {r['detail']}"[:300] for r in rows if not r["c"]}
    if recs:
        info["_eval_results"] = eval_results(recs)
    return info
