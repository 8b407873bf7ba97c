"""`codeblock evaluate` wall time with one process and with N processes (sharded generation).

    .venv/bin/python benchmarks/bench_eval_ranks.py [--profile smoke] [--limit 8] [--procs 1 2] \\
        [-S eval.max_new_tokens=64 ...]

Each run is a fresh stage process (or an `accelerate launch` of N CPU processes over gloo,
`configs/accelerate/cpu_gloo_2proc.yaml` with `--num_processes N`) writing into a new reports
folder, so nothing is cached; MLflow is off. One process runs with `model.torch_threads` threads
(`--threads1`, 0 = torch's default: every core), N processes with one thread each, so both use
the same cores. Prints wall seconds per run and whether it wrote the same generations as the
first run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(procs: int, reports: Path, args) -> float:
    threads = args.threads1 if procs == 1 else 1
    common = ["-m", "codeblock.cli", "evaluate", "--no-progress", "--params", str(ROOT / "params.yaml"),
              *(["--profile", args.profile] if args.profile else []),
              *(["--limit", str(args.limit)] if args.limit is not None else []),
              "-S", f"paths.reports_dir={reports}", "-S", "tracking.enabled=false",
              "-S", f"model.torch_threads={threads}", *[x for s in args.set for x in ("-S", s)]]
    if procs == 1:
        cmd = [sys.executable, *common]
    else:
        cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
               str(ROOT / "configs/accelerate/cpu_gloo_2proc.yaml"), "--num_processes", str(procs),
               "--main_process_port", str(free_port()), *common]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{r.stderr[-3000:]}")
    return wall


def generations(reports: Path) -> dict[str, list[str]]:
    return {row["task_id"]: row["samples"] for f in sorted((reports / "generations").glob("*/*.jsonl"))
            for row in map(json.loads, f.read_text().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads1", type=int, default=0, help="model.torch_threads of the one-process run")
    ap.add_argument("-S", dest="set", action="append", default=[], help="extra override, as for codeblock")
    args = ap.parse_args()
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for procs in args.procs:
            reports = Path(tmp) / f"p{procs}"
            wall = run_once(procs, reports, args)
            gen = generations(reports)
            first = gen if first is None else first
            print(f"processes={procs} wall_s={wall:.1f} tasks={len(gen)} same_generations={gen == first}",
                  flush=True)


if __name__ == "__main__":
    main()
