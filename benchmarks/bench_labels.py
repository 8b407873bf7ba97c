"""Memory of one training process's label set vs the pool size: the old in-memory load against
the memory-mapped Arrow file that training reads (`codeblock.train.labelset`).

For each `--rows N` a synthetic label parquet is written (N rows, `--tokens` tokens a row on
average, 2% supervised), then, each in a FRESH process (so the numbers do not mix):
  old     the previous loader: the parquet read into Python lists, then numpy arrays per row
  mmap    `prepare_label_set` once (the main process), then a "rank" process opens the Arrow file,
          builds the token-budget micro-batches and pads EVERY batch through the collator, as an
          epoch would
Reported per process: peak RSS (VmHWM), and for mmap the anonymous part (RssAnon: private memory;
the rest is page cache of the mapped file, shared by all ranks and reclaimable).

    .venv/bin/python benchmarks/bench_labels.py --rows 2000 20000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_synthetic(path: Path, rows: int, tokens: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    with pq.ParquetWriter(path, schema) as w:
        for s in range(0, rows, 1000):
            ids, xs, ys = [], [], []
            for i in range(s, min(rows, s + 1000)):
                n = int(rng.integers(tokens // 2, tokens * 3 // 2))
                x = rng.integers(10, 49000, n).astype(np.int32)
                y = np.full(n, -100, np.int32)
                pos = rng.choice(np.arange(n // 3, n), size=max(1, n // 50), replace=False)
                y[pos] = x[pos]
                ids.append(f"s{i}")
                xs.append(x)
                ys.append(y)
            w.write_table(pa.table({"id": ids, "input_ids": xs, "labels": ys}, schema=schema))


def child(mode: str, parquet: str, arrow: str, max_length: int) -> dict:
    import numpy as np

    from codeblock.train.collate import MicroBatchCollator, MicroBatches, token_budget_batches

    base = _status("VmRSS")
    if mode == "old":
        import pyarrow.parquet as pq

        t = pq.read_table(parquet)
        x, y = t.column("input_ids").to_pylist(), t.column("labels").to_pylist()
        del t
        xs = [np.asarray(r[:max_length], dtype=np.int64) for r in x]
        ys = [np.asarray(r[:max_length], dtype=np.int64) for r in y]
        del x, y
        lengths = [len(r) for r in xs]
        n = min(len(xs), len(ys), len(lengths))
    else:
        from codeblock.train.labelset import open_label_set

        data = open_label_set(arrow)
        lengths = data.lengths
        coll = MicroBatchCollator(pad_token_id=0)
        ds = MicroBatches(data, token_budget_batches(lengths, 8192))
        for i in range(len(ds)):
            coll([ds[i]])
        n = len(data)
    return {"mode": mode, "rows": n, "peak_rss_mb": _status("VmHWM") - base, "rss_anon_mb": _status("RssAnon")}


def measure(rows: int, tokens: int, max_length: int, tmp: Path) -> list[dict]:
    from codeblock.train.labelset import prepare_label_set

    parquet, arrow = tmp / f"labels-{rows}.parquet", tmp / f"labels-{rows}.arrow"
    write_synthetic(parquet, rows, tokens)
    prepare_label_set(parquet, arrow, max_length, vocab_size=49152)
    out = []
    for mode in ("old", "mmap"):
        cmd = [sys.executable, __file__, "--child", mode, str(parquet), str(arrow), str(max_length)]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--tokens", type=int, default=1024, help="mean tokens a row")
    ap.add_argument("--max-length", type=int, default=2048)
    args = ap.parse_args(argv)
    print(f"{'rows':>8s} {'loader':>7s} {'peak RSS above start MB':>24s} {'private RSS MB':>15s}")
    with tempfile.TemporaryDirectory() as d:
        for n in args.rows:
            for r in measure(n, args.tokens, args.max_length, Path(d)):
                print(f"{n:8d} {r['mode']:>7s} {r['peak_rss_mb']:24.0f} {r['rss_anon_mb']:15.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
