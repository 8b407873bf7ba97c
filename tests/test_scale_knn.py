"""Long-tail kNN at scale: blocked float32 brute force equals scikit-learn's exact cosine kNN
(on the offline pool's instructions and on dense vectors) and its memory does not grow with n."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from codeblock.select.embed import embed_texts, knn_longtail

ROOT = Path(__file__).resolve().parents[1]


def oracle(x, k: int) -> np.ndarray:
    """mean cosine distance to the k nearest other rows, by scikit-learn (self is one of the
    k + 1 nearest at distance 0, or tied with a duplicate: dropping one 0 is the same multiset)."""
    dist, _ = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x).kneighbors(x)
    return np.sort(dist, axis=1)[:, 1:].mean(axis=1)


@pytest.mark.skipif(not (ROOT / "data" / "raw" / "dataframebench").exists(), reason="offline data not fetched")
def test_knn_on_the_offline_pool_equals_sklearn():
    from codeblock.data.offline import iter_dataframebench

    texts = [r["instruction"] for _, r in iter_dataframebench(ROOT / "data" / "raw")]
    assert len(texts) > 500
    emb = embed_texts(texts, "tfidf")
    ref = oracle(emb, 10)
    # the default blocks (one block here) and tiny blocks that cut every row several times
    np.testing.assert_allclose(knn_longtail(emb, 10, progress=False), ref, atol=2e-6)
    np.testing.assert_allclose(knn_longtail(emb, 10, chunk=64, block=100, progress=False), ref, atol=2e-6)


def test_dense_blocks_equal_sklearn_and_memory_stays_bounded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[7] = x[3]  # a duplicate: distance 0 to each other
    ref = oracle(x, 5)
    tracemalloc.start()
    got = knn_longtail(x, 5, chunk=128, block=256, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(got, ref, atol=2e-6)
    assert got[3] == pytest.approx(got[7]) and got[3] < ref.mean()
    # O(chunk x (block + k)) floats, not O(chunk x n): a 128 x 3000 float64 block alone is 3 MB
    assert peak < 1.5e6, peak
    assert knn_longtail(x[:1], 5, progress=False).tolist() == [1.0]
    np.testing.assert_allclose(knn_longtail(x[:4], 10, progress=False), oracle(x[:4], 3), atol=2e-6)  # k capped
