"""Exact and near-duplicate detection: normalised-text keys, word-shingle MinHash + LSH (numpy).

A near-duplicate candidate found through LSH is confirmed by the exact Jaccard of the shingle sets
(see `near_duplicates`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np
from tqdm import tqdm

SHINGLE_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
MINHASH_SEED = 0x5EED


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_key(instruction: str, response: str) -> str:
    return hashlib.sha256((normalise(instruction) + "\x00" + normalise(response)).encode()).hexdigest()


def shingles(text: str, size: int) -> np.ndarray:
    """Distinct 64-bit hashes of the word/punctuation `size`-grams of the normalised text."""
    toks = SHINGLE_TOKEN_RE.findall(normalise(text))
    if not toks:
        return np.zeros(0, dtype=np.uint64)
    grams = {" ".join(toks[i:i + size]) for i in range(max(1, len(toks) - size + 1))}
    return np.array(
        sorted(int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") for g in grams),
        dtype=np.uint64,
    )


def lsh_bands(n_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands * rows = n_perm whose LSH threshold (1/b)^(1/r) is the largest one
    at or below threshold - 0.1: generous recall; every candidate is then checked exactly."""
    best = (n_perm, 1)
    for r in range(1, n_perm + 1):
        if n_perm % r == 0:
            b = n_perm // r
            if (1.0 / b) ** (1.0 / r) <= threshold - 0.1:
                best = (b, r)
    return best


class MinHasher:
    """MinHash signatures with multiply-add hashing mod 2**64 (a bijection per permutation)."""

    def __init__(self, n_perm: int, seed: int = MINHASH_SEED):
        rng = np.random.default_rng(seed)
        self.a = (rng.integers(1, 2**63, size=n_perm, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=n_perm, dtype=np.uint64)

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        if hashes.size == 0:
            return np.full(self.a.shape, np.iinfo(np.uint64).max, dtype=np.uint64)
        with np.errstate(over="ignore"):
            return (self.a[:, None] * hashes[None, :] + self.b[:, None]).min(axis=1)


def jaccard(x: np.ndarray, y: np.ndarray) -> float:
    if x.size == 0 and y.size == 0:
        return 1.0
    inter = np.intersect1d(x, y, assume_unique=True).size
    return inter / (x.size + y.size - inter)


def near_duplicates(texts: list[str], threshold: float, shingle_size: int, n_perm: int,
                    progress: bool = True) -> dict[int, tuple[int, float]]:
    """Greedy near-duplicate removal over `texts` in priority order (index 0 first).
    Returns {dropped index: (index of the kept text it duplicates, Jaccard)}."""
    hasher = MinHasher(n_perm)
    bands, rows = lsh_bands(n_perm, threshold)
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    sets: list[np.ndarray] = []
    dropped: dict[int, tuple[int, float]] = {}
    for i, text in enumerate(tqdm(texts, desc="near-dup", unit="row", disable=not progress)):
        sh = shingles(text, shingle_size)
        sets.append(sh)
        sig = hasher.signature(sh)
        keys = [sig[b * rows:(b + 1) * rows].tobytes() for b in range(bands)]
        cands = {j for b, k in enumerate(keys) for j in buckets[b].get(k, ())}
        best = max(((jaccard(sh, sets[j]), j) for j in cands), default=(0.0, -1))
        if best[1] >= 0 and best[0] >= threshold:
            dropped[i] = (best[1], best[0])
            continue
        for b, k in enumerate(keys):
            buckets[b].setdefault(k, []).append(i)
    return dropped
