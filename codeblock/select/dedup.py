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


# odd 64-bit multipliers, one per position inside an n-gram (a fixed draw: hashes are stable)
_POSITION_MULT = (np.random.default_rng(0x5A1E).integers(1, 2**63, size=64, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)


def _token_hash(tok: str, cache: dict[str, int]) -> int:
    h = cache.get(tok)
    if h is None:
        h = cache[tok] = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
    return h


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every output bit depends on every input bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def shingles(text: str, size: int, cache: dict[str, int] | None = None) -> np.ndarray:
    """Distinct 64-bit hashes of the word/punctuation `size`-grams of the normalised text (a text
    shorter than `size` tokens is one gram). Each distinct token is hashed once (blake2b, kept in
    `cache` across texts); a gram's hash is the position-weighted sum of its token hashes, mixed.
    Vectorised: about 5x faster than hashing every gram's string, and the exact Jaccard of two
    texts is the same (64-bit collisions aside)."""
    toks = SHINGLE_TOKEN_RE.findall(normalise(text))
    if not toks:
        return np.zeros(0, dtype=np.uint64)
    if size > len(_POSITION_MULT):
        raise ValueError(f"filter.near_dup_shingle must be <= {len(_POSITION_MULT)}, not {size}")
    cache = {} if cache is None else cache
    get = cache.get
    vals = [get(t) for t in toks]  # most tokens were seen before: one dict lookup each
    if None in vals:
        vals = [v if v is not None else _token_hash(t, cache) for v, t in zip(vals, toks)]
    h = np.array(vals, dtype=np.uint64)
    n = max(1, len(toks) - size + 1)
    acc = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(min(size, len(toks))):
            acc += h[k:k + n] * _POSITION_MULT[k]
    return np.unique(_mix(acc))


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


# A candidate is checked exactly only when its MinHash estimate of the Jaccard reaches
# threshold - ESTIMATE_MARGIN. The estimate's standard deviation is sqrt(J(1 - J) / n_perm):
# 0.027 at J = 0.9 with 128 permutations, so the margin is ~7 sigma and a true near duplicate is
# practically never skipped, while the many partial overlaps LSH also returns (J ~ 0.5) cost one
# vectorised comparison instead of a set intersection each (benchmarks/bench_pool.py: the exact
# checks were most of the filter's time on a 300K pool).
ESTIMATE_MARGIN = 0.2


def near_duplicates(texts: list[str], threshold: float, shingle_size: int, n_perm: int,
                    progress: bool = True) -> dict[int, tuple[int, float]]:
    """Greedy near-duplicate removal over `texts` in priority order (index 0 first).
    Returns {dropped index: (index of the kept text it duplicates, Jaccard)}."""
    hasher = MinHasher(n_perm)
    bands, rows = lsh_bands(n_perm, threshold)
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    sets: list[np.ndarray] = []
    sigs = np.empty((len(texts), n_perm), dtype=np.uint64)
    dropped: dict[int, tuple[int, float]] = {}
    token_hashes: dict[str, int] = {}
    for i, text in enumerate(tqdm(texts, desc="near-dup", unit="row", disable=not progress)):
        sh = shingles(text, shingle_size, token_hashes)
        sets.append(sh)
        sig = sigs[i] = hasher.signature(sh)
        keys = [sig[b * rows:(b + 1) * rows].tobytes() for b in range(bands)]
        cands = np.fromiter({j for b, k in enumerate(keys) for j in buckets[b].get(k, ())}, dtype=np.int64)
        if cands.size:
            cands = cands[(sigs[cands] == sig).mean(axis=1) >= threshold - ESTIMATE_MARGIN]
        best = max(((jaccard(sh, sets[j]), int(j)) for j in np.sort(cands)), default=(0.0, -1))
        if best[1] >= 0 and best[0] >= threshold:
            dropped[i] = (best[1], best[0])
            continue
        for b, k in enumerate(keys):
            buckets[b].setdefault(k, []).append(i)
    return dropped
