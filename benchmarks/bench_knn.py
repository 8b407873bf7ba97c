"""The filter's long-tail kNN: faiss vs the blocked numpy brute force vs scikit-learn, same rows.

    .venv/bin/python benchmarks/bench_knn.py                  # 20,000 x 256 dense unit rows, k = 10
    .venv/bin/python benchmarks/bench_knn.py --n 100000 --dim 384

Rows are random unit vectors (the kNN cost does not depend on what they encode). Each backend
computes the same score, mean(1 - cos) to the k nearest other rows; the script checks that they
agree (max absolute difference) and prints seconds, rows/s and the ratio to the numpy path, all
measured in this run. scikit-learn's exact brute-force `NearestNeighbors` (cosine) runs only up
to --sklearn-max rows: it materialises n x chunk distance blocks in float64.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codeblock.select.embed import knn_longtail  # noqa: E402


def sklearn_longtail(x: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x).kneighbors(x)
    return np.sort(dist, axis=1)[:, 1:].mean(axis=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--sklearn-max", type=int, default=30_000)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    runs = {"numpy": lambda: knn_longtail(x, args.k, progress=False, backend="numpy"),
            "faiss": lambda: knn_longtail(x, args.k, progress=False, backend="faiss")}
    if args.n <= args.sklearn_max:
        runs["sklearn"] = lambda: sklearn_longtail(x, args.k)
    res, secs = {}, {}
    for name, fn in runs.items():
        t0 = time.perf_counter()
        res[name] = fn()
        secs[name] = time.perf_counter() - t0
    print(f"bench_knn: n = {args.n:,}, dim = {args.dim}, k = {args.k}, {os.cpu_count()} CPU(s), "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'backend':8s} {'seconds':>9s} {'rows/s':>10s} {'numpy / this':>13s} {'max |diff| vs numpy':>20s}")
    for name in runs:
        diff = float(np.abs(res[name] - res["numpy"]).max())
        print(f"{name:8s} {secs[name]:9.2f} {args.n / secs[name]:10,.0f} {secs['numpy'] / secs[name]:13.2f} {diff:20.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
