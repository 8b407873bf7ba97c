"""Score-stage time vs torch's CPU threads, on a quiet machine and next to a competing CPU load.

    .venv/bin/python benchmarks/bench_threads.py [--n 24] [--threads -1 0] [--load 2]

Each run is a fresh `codeblock score` process (the default model, `--n` rows of the offline pool,
a new cache folder) with `model.torch_threads` set to each value of `--threads` (-1 = torch's
default: every core; 0 = the documented default, half the CPUs; n = n threads), once alone and
once while `--load` busy-looping processes compete for the CPUs. OMP_NUM_THREADS is removed from
the environment so torch's own default applies to -1. Prints wall seconds of the stage process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prepare(work: Path, n: int) -> Path:
    import pyarrow.parquet as pq

    from codeblock.core.config import load_config
    from codeblock.data.build import run_data

    pool = work / "pool.parquet"
    cfg = load_config(ROOT / "params.yaml", [f"paths.pool={pool}", "tracking.enabled=false",
                                             f"paths.raw_dir={ROOT / 'data' / 'raw'}"])
    run_data(cfg)
    filtered = work / "filtered.parquet"
    pq.write_table(pq.read_table(pool).slice(0, n), filtered)
    return filtered


def score_once(filtered: Path, work: Path, threads: int, tag: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    cmd = [sys.executable, "-m", "codeblock.cli", "score", "--no-progress", "--params", str(ROOT / "params.yaml"),
           "-S", f"paths.filtered={filtered}", "-S", f"paths.scores_dir={work / ('scores-' + tag)}",
           "-S", f"model.torch_threads={threads}", "-S", "tracking.enabled=false", "-S", "model.device=cpu",
           "-S", f"model.hf_cache_dir={ROOT / 'models' / 'hf'}",
           "-S", f"model.name_or_path={ROOT / 'models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--threads", type=int, nargs="+", default=[-1, 0])
    ap.add_argument("--load", type=int, default=2, help="busy-looping processes of the competing load")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        filtered = prepare(work, args.n)
        print(f"score stage, {args.n} rows, default model, {os.cpu_count()} CPU(s); wall seconds")
        print(f"{'torch_threads':>13s} {'alone':>8s} {'+' + str(args.load) + ' busy procs':>14s}")
        for t in args.threads:
            alone = score_once(filtered, work, t, f"{t}-alone")
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
            try:
                loaded = score_once(filtered, work, t, f"{t}-load")
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
            print(f"{t:13d} {alone:8.1f} {loaded:14.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
