"""Selection throughput: tokenize + segment + data-flow + select, responses/s, vs a naive token sort.

Both paths start from the same (instruction, response) pairs (the offline pool, repeated to at least
--n responses) and the same synthetic per-token scores (scoring needs the model and is stage 3's cost,
not this one's), and both include tokenization:
  ours   codeblock.select.segment.segment_rows (batch fast-tokenizer encoding, tree-sitter items, def-use
         graph, Reach/Bridge; --workers processes) + codeblock.select.select_codeblock + labels
  naive  the per-token reference of Token Cleaning style selection in plain Python: one
         (score, sample, token) tuple per response token, a global sort, top-k, label lists
Prints responses/s of each and the ratio ours/naive (> 1 means ours is faster, even though it
does the structural analysis the naive one skips). Usage:

    .venv/bin/python benchmarks/bench_select.py [--n 2000] [--workers 2] [--pool data/pool/pool.parquet]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_rows(pool: Path, n: int) -> list[tuple[str, str, str]]:
    import pyarrow.parquet as pq

    t = pq.read_table(pool, columns=["id", "instruction", "response"])
    base = list(zip(*(t.column(c).to_pylist() for c in ("id", "instruction", "response"))))
    rows = []
    k = 0
    while len(rows) < n:
        rows.extend((f"{i}#{k}", ins, resp) for i, ins, resp in base)
        k += 1
    return rows


def fake_scores(seg: dict, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(1.0, 0.4, seg["response_end"] - seg["response_start"]).astype(np.float64)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the segment workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench_ours(cfg, rows, workers: int) -> tuple[float, dict]:
    from codeblock.select.labels import labels_for
    from codeblock.select.priority import select_codeblock
    from codeblock.select.segment import segment_rows

    c0 = cpu_seconds()
    t0 = time.perf_counter()
    segs = segment_rows(cfg, rows, workers=workers, progress=False)
    t1 = time.perf_counter()
    gce = [fake_scores(s, i) for i, s in enumerate(segs)]
    t2 = time.perf_counter()
    sel = select_codeblock(cfg, segs, gce)
    labels = [labels_for(s) for s in sel.samples]
    t3 = time.perf_counter()
    cpu = cpu_seconds() - c0 - (t2 - t1)  # the synthetic scores are not part of the method
    sup = sum(int((lab != -100).sum()) for lab in labels)
    tot = sum(s.n_response for s in sel.samples)
    return (t1 - t0) + (t3 - t2), {"segment_s": t1 - t0, "select_s": t3 - t2, "ratio": sup / tot, "cpu_s": cpu,
                                   "items": sum(len(s["item_tokens"]) for s in segs), "tokens": tot}


def bench_naive(cfg, rows) -> tuple[float, dict]:
    from codeblock.core.models import load_tokenizer
    from codeblock.core.tokenize import encode_pairs

    tok = load_tokenizer(cfg.model)
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    encs = []
    for a in range(0, len(rows), 64):
        encs.extend(encode_pairs(tok, [(ins, resp) for _, ins, resp in rows[a:a + 64]], cfg.score.max_length))
    t1 = time.perf_counter()
    scores = [fake_scores({"response_start": e.response_start, "response_end": e.response_end}, i).tolist()
              for i, e in enumerate(encs)]
    t2 = time.perf_counter()
    flat = []
    for i, (e, sc) in enumerate(zip(encs, scores)):
        for k, v in enumerate(sc):
            flat.append((v, i, e.response_start + k))
    flat.sort(key=lambda x: x[0], reverse=True)
    k = int(round(cfg.select.budget * len(flat)))
    labels = [[-100] * len(e.input_ids) for e in encs]
    for _, i, pos in flat[:k]:
        labels[i][pos] = encs[i].input_ids[pos]
    t3 = time.perf_counter()
    cpu = cpu_seconds() - c0 - (t2 - t1)
    return (t1 - t0) + (t3 - t2), {"tokenize_s": t1 - t0, "select_s": t3 - t2, "tokens": len(flat), "cpu_s": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="responses (the pool is repeated to reach it)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pool", default=str(REPO / "data/pool/pool.parquet"))
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    args = ap.parse_args()

    from codeblock.core.config import load_config
    from codeblock.core.models import load_tokenizer

    cfg = load_config(args.params)
    if not Path(cfg.model.name_or_path).is_absolute():
        cfg.model.name_or_path = str(REPO / cfg.model.name_or_path)
        cfg.model.hf_cache_dir = str(REPO / cfg.model.hf_cache_dir)
    from codeblock.core.models import resolve_model_path

    # convert/cache (and hash) the GGUF once, outside the timed region: both paths open the folder
    cfg.model.name_or_path = resolve_model_path(cfg.model.name_or_path, cfg.model)
    load_tokenizer(cfg.model)
    rows = load_rows(Path(args.pool), args.n)
    n = len(rows)
    print(f"{n} responses from {args.pool}, {args.workers} worker(s), model {cfg.model.name_or_path}")

    t_naive, info_n = bench_naive(cfg, rows)
    t_ours, info_o = bench_ours(cfg, rows, args.workers)
    print(f"naive per-token sort : {n / t_naive:8.0f} responses/s  ({t_naive:.2f}s: tokenize {info_n['tokenize_s']:.2f}s,"
          f" sort/select {info_n['select_s']:.2f}s, {info_n['tokens']} tokens)")
    print(f"codeblock            : {n / t_ours:8.0f} responses/s  ({t_ours:.2f}s: tokenize+segment+dataflow "
          f"{info_o['segment_s']:.2f}s, select+labels {info_o['select_s']:.2f}s, {info_o['items']} items, "
          f"supervised ratio {info_o['ratio']:.4f})")
    print(f"ratio ours/naive     : {t_naive / t_ours:8.2f}x wall-clock  (target >= 1000 responses/s: "
          f"{'met' if n / t_ours >= 1000 else 'NOT met'} on this run)")
    # CPU time does not depend on what else the machine runs: a contention-free view of the same run
    cpu_o, cpu_n = info_o["cpu_s"], info_n["cpu_s"]
    print(f"CPU per response     : codeblock {1e3 * cpu_o / n:.2f} ms, naive {1e3 * cpu_n / n:.2f} ms "
          f"(ratio {cpu_n / cpu_o:.2f}x); CPU-bound bound on {args.workers} free cores: "
          f"{args.workers * n / cpu_o:.0f} responses/s")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
