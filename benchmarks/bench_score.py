"""Scoring throughput: teacher-forced GCE, tokens/s, token-budget batches vs one sample at a time.

Both paths score the same (instruction, response) pairs (the filtered pool, or the canonical pool
when no filtered file exists) with the same model, through `codeblock.select.score.run_score` with the
cache in a temporary folder, so tokenization, padding, the forward pass and the shard writes are
all counted:
  ours       score.batch_tokens from params.yaml (length-bucketed batches)
  reference  batch_tokens = 1: every sample in a batch of its own (no padding at all)
It checks that both give the same GCE (atol 1e-4) and prints tokens/s for each and the ratio
ours/reference (> 1.0 means batching helps). Usage:

    .venv/bin/python benchmarks/bench_score.py [--n 24] [--model tiny-random] [-S key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from codeblock.core.config import load_config
    from codeblock.select.score import load_scores, run_score

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="samples scored by each path")
    ap.add_argument("--model", default=None, help="model.name_or_path (default: params.yaml)")
    ap.add_argument("-S", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(REPO / "params.yaml", args.overrides)
    cfg.tracking.enabled = False
    if args.model:
        cfg.model.name_or_path = args.model
    src = Path(cfg.paths.filtered) if Path(cfg.paths.filtered).exists() else Path(cfg.paths.pool)
    rows = pq.read_table(src, columns=["id", "instruction", "response"]).to_pylist()
    step = max(1, len(rows) // args.n)
    rows = rows[::step][: args.n]  # spread over the pool: every source and length
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "subset.parquet"
        import pyarrow as pa

        pq.write_table(pa.Table.from_pylist(rows), sub)
        cfg.paths.filtered = str(sub)
        results = {}
        for name, budget in (("ours", cfg.score.batch_tokens), ("reference", 1)):
            cfg.score.batch_tokens = budget
            cfg.paths.scores_dir = str(Path(tmp) / name)
            t0 = time.perf_counter()
            m = run_score(cfg, progress=False)["metrics"]
            wall = time.perf_counter() - t0
            results[name] = (m["tokens_scored"] / m["seconds"], wall, load_scores(cfg))
            print(f"{name:10s} batch_tokens={budget:6d}  {m['tokens_scored']} tokens  "
                  f"{results[name][0]:8.1f} tokens/s (forward)  {wall:6.1f}s wall (incl. load)")
    ours, ref = results["ours"][2], results["reference"][2]
    worst = max(float(np.max(np.abs(ours[k]["gce"] - ref[k]["gce"]), initial=0.0)) for k in ours)
    print(f"max |gce difference| = {worst:.2e} (must be < 1e-4)")
    print(f"ratio ours/reference = {results['ours'][0] / results['reference'][0]:.2f}x")
    if worst >= 1e-4:
        raise SystemExit("batched and unbatched scores differ")


if __name__ == "__main__":
    main()
