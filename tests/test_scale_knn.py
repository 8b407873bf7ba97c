"""Long-tail kNN at scale: both backends (blocked float32 numpy brute force, faiss's exact
inner-product index) equal scikit-learn's exact cosine kNN (on the offline pool's instructions
and on dense vectors), the numpy path's memory does not grow with n, and the `tfidf_rp` embedder
gives dense unit rows whose cosines follow exact TF-IDF's."""

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
    got = knn_longtail(x, 5, chunk=128, block=256, progress=False, backend="numpy")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(got, ref, atol=2e-6)
    assert got[3] == pytest.approx(got[7]) and got[3] < ref.mean()
    # O(chunk x (block + k)) floats, not O(chunk x n): a 128 x 3000 float64 block alone is 3 MB
    assert peak < 1.5e6, peak
    assert knn_longtail(x[:1], 5, progress=False).tolist() == [1.0]
    np.testing.assert_allclose(knn_longtail(x[:4], 10, progress=False), oracle(x[:4], 3), atol=2e-6)  # k capped


def test_faiss_backend_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2500, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[100:106] = x[5]  # seven identical rows: self may fall out of the k + 1 found by faiss
    ref = oracle(x, 4)
    got = knn_longtail(x, 4, progress=False, backend="faiss")
    np.testing.assert_allclose(got, ref, atol=2e-6)
    np.testing.assert_allclose(got, knn_longtail(x, 4, progress=False, backend="numpy"), atol=2e-6)
    assert got[5] == pytest.approx(0.0, abs=1e-6)  # four of its six twins are its nearest
    with pytest.raises(ValueError, match="dense"):
        knn_longtail(embed_texts(["a b", "a c"], "tfidf"), 1, backend="faiss")


def test_tfidf_rp_embedder_dense_unit_rows_close_to_tfidf():
    from codeblock.select.embed import RP_DIM

    base = ["sort a list of numbers in place", "sort a list of integers descending",
            "reverse the order of a list", "download a web page over http with retries",
            "parse a csv file into rows", "read a json file and print a key", ""]
    texts = [f"{t} {i}" if t else "" for i in range(30) for t in base]
    emb = embed_texts(texts, "tfidf_rp")
    assert isinstance(emb, np.ndarray) and emb.dtype == np.float32 and emb.shape == (len(texts), RP_DIM)
    norms = np.linalg.norm(emb, axis=1)
    np.testing.assert_allclose(norms[[i for i, t in enumerate(texts) if t]], 1.0, atol=1e-5)
    assert (norms[[i for i, t in enumerate(texts) if not t]] == 0).all()
    np.testing.assert_array_equal(emb, embed_texts(texts, "tfidf_rp"))  # seeded: same rows every time
    sims = emb[:7] @ emb[:7].T
    assert sims[0, 1] > sims[0, 3] and sims[0, 1] > sims[0, 4]  # the two sorts are nearer than http
    # the projection keeps TF-IDF's cosines up to a small error (the hashed TF-IDF is the reference)
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    from codeblock.select.embed import RP_HASH_FEATURES

    ref = TfidfTransformer(sublinear_tf=True).fit_transform(HashingVectorizer(
        ngram_range=(1, 2), n_features=RP_HASH_FEATURES, alternate_sign=False, norm=None).transform(texts))
    err = np.abs(emb @ emb.T - (ref @ ref.T).toarray())
    # ~1/sqrt(512) = 0.044 is the scale of the error; terms that share a coordinate make the tail
    assert err.mean() < 0.02 and np.percentile(err, 99) < 0.2
