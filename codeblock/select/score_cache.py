"""The score cache: identity, shard files, index, and reading scores back.

`paths.scores_dir/<model_key>/shard-XXXXX.parquet`, `score.shard_size` samples per shard in
filtered-pool order, columns
    id (str), sample_hash (str), input_ids (list<int32>), response_start (int32),
    response_end (int32), gce (list<float32>, one per token in [response_start, response_end)),
    ce (list<float32>: the same in plain cross-entropy -log p; excess mode: CE_base - CE_ref, the
    score of Token Cleaning and Rho-1)
and, in excess mode, base_gce and ref_gce. `model_key` is a short hash of the scoring identity:
the model's identity (`codeblock.core.models.model_identity`: GGUF/weights hash, or hub id), dtype,
mode, q, max_length and, for excess, the reference's identity. The shard layout depends on the
pool and `score.shard_size` only, never on the number of processes, so a run resumes with any
number of ranks. A shard is written atomically once complete; `index.json` in the same folder
lists the shards of the last complete run; `load_scores(cfg)` reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from codeblock.core.io import read_parquet_metadata, sha256_file

log = logging.getLogger("codeblock.select.score")

SCORE_VERSION = 2  # bump when the computation changes: it is part of the cache key
SHARD_GLOB = "shard-*.parquet"


def sample_hash(instruction: str, response: str) -> str:
    return hashlib.sha256((instruction + "\x00" + response).encode("utf-8")).hexdigest()[:16]


def scoring_identity(cfg) -> dict[str, Any]:
    """Everything that changes the numbers; hashed into the cache folder name."""
    from codeblock.core.models import model_identity, resolve_device, resolve_dtype

    sc = cfg.score
    ident: dict[str, Any] = {
        "version": SCORE_VERSION,
        "model": model_identity(cfg.model),
        "dtype": str(resolve_dtype(cfg.model, resolve_device(cfg.model))).replace("torch.", ""),
        "mode": sc.mode,
        "q": sc.gce_q,
        "max_length": sc.max_length,
    }
    if sc.mode == "excess":
        if sc.ref_model:
            ident["ref"] = model_identity(cfg.model, sc.ref_model)
        else:
            ident["ref"] = {
                "warmup_of": ident["model"], "samples": sc.ref_warmup_samples, "steps": sc.ref_warmup_steps,
                "lr": sc.ref_warmup_lr, "seed": sc.seed, "batch_tokens": sc.batch_tokens,
                "data": sha256_file(cfg.paths.filtered) if Path(cfg.paths.filtered).exists() else None,
            }
    return ident


def model_key(cfg) -> str:
    ident = scoring_identity(cfg)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def scores_dir(cfg) -> Path:
    return Path(cfg.paths.scores_dir) / model_key(cfg)


def shard_path(folder: Path, k: int) -> Path:
    return folder / f"shard-{k:05d}.parquet"


def shard_table(rows: list[dict], excess: bool):
    import pyarrow as pa

    fields = [
        ("id", pa.string()), ("sample_hash", pa.string()), ("input_ids", pa.list_(pa.int32())),
        ("response_start", pa.int32()), ("response_end", pa.int32()), ("gce", pa.list_(pa.float32())),
        ("ce", pa.list_(pa.float32())),
    ]
    if excess:
        fields += [("base_gce", pa.list_(pa.float32())), ("ref_gce", pa.list_(pa.float32()))]
    schema = pa.schema(fields)
    cols = {name: [r[name] for r in rows] for name, _ in fields}
    return pa.Table.from_pydict(cols, schema=schema)


def shard_is_done(path: Path, ids: list[str], hashes: list[str], key: str) -> bool:
    import pyarrow.parquet as pq

    if not path.exists():
        return False
    try:
        if read_parquet_metadata(path).get("model_key") != key:
            return False
        t = pq.read_table(path, columns=["id", "sample_hash"])
    except Exception as e:  # a foreign or damaged file: recompute it
        log.warning("score cache: %s unreadable (%s); recomputing", path, e)
        return False
    return t.column("id").to_pylist() == ids and t.column("sample_hash").to_pylist() == hashes


def reusable_rows(folder: Path, needed: dict[str, str], skip: set[Path]) -> dict[str, dict]:
    """Rows of stale shards whose (id, sample_hash) is still needed: per-sample cache hits."""
    import pyarrow.parquet as pq

    found: dict[str, dict] = {}
    if not needed:
        return found
    for path in sorted(folder.glob(SHARD_GLOB)):
        if path in skip:
            continue
        try:
            for r in pq.read_table(path).to_pylist():
                if needed.get(r["id"]) == r["sample_hash"]:
                    found[r["id"]] = r
        except Exception:
            continue
    return found


def mean_gce(folder: Path, n_shards: int) -> float:
    import pyarrow.parquet as pq

    total, count = 0.0, 0
    for k in range(n_shards):
        for g in pq.read_table(shard_path(folder, k), columns=["gce"]).column("gce").to_pylist():
            total += float(np.sum(g))
            count += len(g)
    return total / count if count else 0.0


def _index_files(cfg) -> list[Path]:
    folder = scores_dir(cfg)
    index = folder / "index.json"
    if not index.exists():
        raise FileNotFoundError(f"{folder}: no scores for this model/mode (run `codeblock score`)")
    return [folder / name for name in json.loads(index.read_text())["shards"]]


def _read_shard(path: Path) -> list[tuple[str, dict]]:
    """(id, score row) of one shard, in its order (the row layout of `load_scores`)."""
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["id", "input_ids", "response_start", "response_end", "gce", "ce"])
    ids = t.column("id").to_pylist()
    inp = t.column("input_ids").to_pylist()
    rs = t.column("response_start").to_pylist()
    re_ = t.column("response_end").to_pylist()
    gce = t.column("gce").to_pylist()
    ce = t.column("ce").to_pylist()
    return [(id_, {"input_ids": np.asarray(inp[i], dtype=np.int32), "response_start": int(rs[i]),
                   "response_end": int(re_[i]), "gce": np.asarray(gce[i], dtype=np.float32),
                   "ce": np.asarray(ce[i], dtype=np.float32)}) for i, id_ in enumerate(ids)]


def load_scores(cfg) -> dict[str, dict]:
    """id -> {"input_ids": np.int32 array, "response_start": int, "response_end": int,
    "gce", "ce": np.float32 arrays (one per token in [response_start, response_end))}, from the cache
    of the configured scoring identity (run `codeblock score` first)."""
    out: dict[str, dict] = {}
    for path in _index_files(cfg):
        out.update(_read_shard(path))
    return out


class ScoreLookup:
    """`load_scores(cfg)`'s rows by id (`.get`), read from the cache one shard at a time: only the
    ids are held for the whole cache, so a reader that walks the pool in order (select, which
    reads segments in the filtered pool's order, as the shards are) reads each shard once."""

    def __init__(self, cfg):
        import pyarrow.parquet as pq

        self._files = _index_files(cfg)
        self._where: dict[str, tuple[int, int]] = {}
        for k, path in enumerate(self._files):
            for i, id_ in enumerate(pq.read_table(path, columns=["id"]).column("id").to_pylist()):
                self._where[id_] = (k, i)
        self._shard, self._rows = -1, []

    def __len__(self) -> int:
        return len(self._where)

    def get(self, id_: str, default=None):
        loc = self._where.get(id_)
        if loc is None:
            return default
        if loc[0] != self._shard:
            self._shard, self._rows = loc[0], _read_shard(self._files[loc[0]])
        return self._rows[loc[1]][1]
