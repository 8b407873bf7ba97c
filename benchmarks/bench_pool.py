"""The CPU stages at pool scale: time and peak memory per stage for a synthetic pool of N pairs,
and the projected time of the scoring stage that a GPU would run.

    .venv/bin/python benchmarks/bench_pool.py -S filter.embedder=tfidf_rp   # N = 300,000: ~35 min, 2 cores
    .venv/bin/python benchmarks/bench_pool.py                    # the same with MiniLM: needs a GPU
    .venv/bin/python benchmarks/bench_pool.py --n 20000 -S filter.embedder=tfidf
    .venv/bin/python benchmarks/bench_pool.py --n 20000 --params-b 1.5 --score-tokens-per-s 60000

Pool: the offline rows (`codeblock data` with params.yaml's offline sources), combined two by two
(pair m = instruction and response of row a followed by those of row b, a != b) so N distinct
pairs survive exact and near-duplicate removal. Stages, each in a FRESH process (its own peak
RSS, memory returned between stages as in the pipeline), on the same code the pipeline runs:

    data      combine the offline rows (built once beforehand, not timed) into the N-pair pool
    filter    decontamination, quality, exact + MinHash dedup, embeddings (filter.embedder) and the
              long-tail kNN, rank; filter.keep = --keep (default: every candidate)
    segment   tokenization, tree-sitter items, def-use graph (segment.workers processes)
    scores    a synthetic score cache (a gamma draw per response token, standing in for the
              GPU score stage), written in the cache's own layout (shards + index.json)
    select    `codeblock select` itself: segments and scores streamed from disk, data-flow
              rerank, budgeted selection, labels

The table gives seconds, peak RSS of the stage process (and of its worker processes), and the
cost per pair, and that cost times 300K (linear; the long-tail kNN inside `filter` grows as N^2,
so project from the largest N you can run). The projection of the score stage uses the token count of the segmented pool:
tokens / --score-tokens-per-s when given (measure it with benchmarks/bench_score.py), else
2 x parameters x tokens / (--gpus x --gpu-tflops x --mfu), a forward pass only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("data", "filter", "segment", "scores", "select")


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def synthesize(base: list[dict], n: int, seed: int = 0) -> list[dict]:
    """n distinct pairs, each two base rows joined (row a, then row b)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    m = len(base)
    out, seen = [], set()
    while len(out) < n:
        a, b = (int(x) for x in rng.integers(0, m, 2))
        if a == b or (a, b) in seen:
            continue
        seen.add((a, b))
        ra, rb = base[a], base[b]
        out.append({**ra, "id": f"syn{len(out)}", "instruction": ra["instruction"] + "\n\nThen: " + rb["instruction"],
                    "response": ra["response"] + "\n\n" + rb["response"], "source": "synthetic"})
    return out


def stage_offline(cfg) -> dict:
    """The offline rows the synthetic pool is built from (not part of the table)."""
    from codeblock.data.build import run_data

    offline = Path(cfg.paths.pool).with_name("offline.parquet")
    if not offline.exists():
        cfg.paths.pool = str(offline)
        run_data(cfg)
    return {"rows_in": 0, "rows_out": 0}


def stage_data(cfg, n: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from codeblock.core.io import write_parquet

    base = pq.read_table(Path(cfg.paths.pool).with_name("offline.parquet"))
    rows = synthesize(base.to_pylist(), n)
    write_parquet(cfg.paths.pool, pa.Table.from_pylist(rows, schema=base.schema))
    return {"rows_in": base.num_rows, "rows_out": len(rows)}


def stage_filter(cfg) -> dict:
    from codeblock.select.filter import run_filter

    m = run_filter(cfg, progress=False)["metrics"]
    return {"rows_in": m["pool_rows"], "rows_out": m["kept"]}


def stage_segment(cfg) -> dict:
    from codeblock.select.segment import run_segment

    m = run_segment(cfg)["metrics"]
    return {"rows_in": m["samples"], "rows_out": m["samples"] - m["dropped_samples"]}


def stage_scores(cfg) -> dict:
    """A synthetic score cache for the segmented pool (a gamma draw per response token, standing
    in for stage 3), written as the score stage writes it: shards of score.shard_size rows and
    index.json, so select reads it through its own streaming reader."""
    import numpy as np
    import pyarrow.parquet as pq

    from codeblock.core.io import write_json, write_parquet
    from codeblock.select.score_cache import model_key, scores_dir, shard_path, shard_table

    folder, key = scores_dir(cfg), model_key(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pf = pq.ParquetFile(cfg.paths.segments)
    names, rows, tokens, n = [], [], 0, 0
    cols = ["id", "input_ids", "response_start", "response_end"]

    def flush():
        if rows:
            path = shard_path(folder, len(names))
            write_parquet(path, shard_table(rows, False), {"stage": "score", "model_key": key, "shard": len(names)})
            names.append(path.name)
            rows.clear()

    for b in pf.iter_batches(batch_size=cfg.score.shard_size, columns=cols):
        for r in b.to_pylist():
            m = r["response_end"] - r["response_start"]
            g = rng.gamma(1.0, 0.4, m).astype(np.float32)
            rows.append({**r, "sample_hash": "", "gce": g, "ce": g})
            tokens += len(r["input_ids"])
            n += 1
        flush()
    write_json(folder / "index.json", {"model_key": key, "samples": n, "shards": names})
    return {"rows_in": n, "rows_out": n, "pool_tokens": tokens}


def stage_select(cfg) -> dict:
    from codeblock.select.methods import run_select

    res = run_select(cfg, "codeblock")  # segments and the score cache, from disk, as `codeblock select`
    return {"rows_in": res["metrics"]["samples"], "rows_out": res["metrics"]["samples"]}


def child(stage: str, work: Path, overrides: list[str], n: int) -> dict:
    from codeblock.core.config import load_config

    cfg = load_config(ROOT / "params.yaml", overrides)
    t0 = time.perf_counter()
    info = {"offline": lambda: stage_offline(cfg), "data": lambda: stage_data(cfg, n), "filter": lambda: stage_filter(cfg),
            "segment": lambda: stage_segment(cfg), "scores": lambda: stage_scores(cfg),
            "select": lambda: stage_select(cfg)}[stage]()
    info.update(stage=stage, seconds=time.perf_counter() - t0, peak_rss_mb=_vm_hwm_mb(),
                workers_peak_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return info


def overrides_for(work: Path, args) -> list[str]:
    ov = [f"paths.pool={work / 'pool.parquet'}", f"paths.filtered={work / 'filtered.parquet'}",
          f"paths.filter_report={work / 'filter_report.json'}", f"paths.segments={work / 'segments.parquet'}",
          f"paths.labels_dir={work / 'labels'}", f"paths.scores_dir={work / 'scores'}",
          f"paths.data_dir={work}", "tracking.enabled=false", f"filter.keep={args.keep}",
          f"paths.raw_dir={ROOT / 'data' / 'raw'}", f"paths.models_dir={ROOT / 'models'}",
          f"model.hf_cache_dir={ROOT / 'models' / 'hf'}"]
    return ov + args.set


def project_score(tokens: int, args) -> str:
    if args.score_tokens_per_s > 0:
        s = tokens / args.score_tokens_per_s
        how = f"at {args.score_tokens_per_s:,.0f} tokens/s (measured)"
    else:
        flops = 2.0 * args.params_b * 1e9 * tokens
        s = flops / (args.gpus * args.gpu_tflops * 1e12 * args.mfu)
        how = f"forward FLOPs 2 x {args.params_b}B x tokens on {args.gpus} GPU(s) x {args.gpu_tflops} TFLOP/s x MFU {args.mfu}"
    return f"{tokens:,} tokens -> {s / 3600:.2f} h ({s:,.0f} s), {how}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300_000, help="pairs in the synthetic pool")
    ap.add_argument("--keep", type=float, default=1.0, help="filter.keep (<= 1: share of candidates)")
    ap.add_argument("--params-b", type=float, default=1.5, help="scoring model size, billions of parameters")
    ap.add_argument("--score-tokens-per-s", type=float, default=0.0, help="measured scoring throughput")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--gpu-tflops", type=float, default=989.0, help="peak bf16 TFLOP/s of one GPU (H100: 989)")
    ap.add_argument("--mfu", type=float, default=0.3)
    ap.add_argument("--work", default="", help="working folder (default: a temporary one)")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("-S", dest="set", action="append", default=[], help="params override, e.g. filter.embedder=tfidf")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        ov = overrides_for(work, args)
        if args.child:
            print(json.dumps(child(args.child, work, ov, args.n)))
            return 0
        rows = []
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        for stage in ("offline", *args.stages):
            cmd = [sys.executable, __file__, "--child", stage, "--work", str(work), "--n", str(args.n),
                   "--keep", str(args.keep), *[x for s in args.set for x in ("-S", s)]]
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
            if r.returncode:
                sys.stderr.write(r.stderr[-4000:])
                return r.returncode
            if stage != "offline":
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"  {stage}: done", file=sys.stderr, flush=True)

    print(f"bench_pool: N = {args.n:,} synthetic pairs, {os.cpu_count()} CPU(s), overrides {args.set or 'none'}")
    print(f"{'stage':8s} {'rows in':>9s} {'rows out':>9s} {'seconds':>9s} {'ms/pair':>8s} {'peak RSS MB':>12s} "
          f"{'workers MB':>11s} {'projected s at 300K':>20s}")
    for r in rows:
        per = r["seconds"] / max(args.n, 1)
        print(f"{r['stage']:8s} {r['rows_in']:9,d} {r['rows_out']:9,d} {r['seconds']:9.1f} {per * 1e3:8.2f} "
              f"{r['peak_rss_mb']:12.0f} {r['workers_peak_rss_mb']:11.0f} {per * 300_000:20,.0f}")
    total = sum(r["seconds"] for r in rows)
    print(f"{'total':8s} {'':9s} {'':9s} {total:9.1f} {total / max(args.n, 1) * 1e3:8.2f}")
    tokens = next((r.get("pool_tokens") for r in rows if r.get("pool_tokens")), 0)
    if tokens:
        print(f"score (projected, prompt + response tokens of the segmented pool): {project_score(tokens, args)}")
        print(f"        at 300K pairs: {project_score(int(tokens * 300_000 / args.n), args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
