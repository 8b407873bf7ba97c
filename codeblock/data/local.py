"""Local sources: .jsonl / .jsonl.gz / .json files, .parquet files, or a saved `datasets` folder.

Each yields (row number, raw dict) pairs (or (row number, BadRowError) for a line that is not
a JSON object); row numbers are 1-based line numbers for JSONL (what an
editor shows) and 0-based indices for parquet and datasets folders.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codeblock.core.io import BadRowError, MissingInput


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            # A malformed line is yielded as its error, so the caller's bad-row policy decides
            # whether to stop or to skip it and read on.
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, BadRowError(path, lineno, "<json>", f"invalid JSON at column {e.colno}: {e.msg}")
                continue
            if not isinstance(obj, dict):
                yield lineno, BadRowError(path, lineno, "<json>", f"expected an object, got {type(obj).__name__}")
                continue
            yield lineno, obj


def iter_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    i = 0
    for batch in pf.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            yield i, row
            i += 1


def iter_saved_dataset(path: Path, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise ValueError(f"{path}: saved DatasetDict has no split '{split}' (has {list(ds)})")
        ds = ds[split]
    yield from enumerate(ds)


def iter_local(path: str | Path, split: str = "train") -> Iterator[tuple[int, dict[str, Any]]]:
    p = Path(path)
    if not p.exists():
        raise MissingInput(p, "local data source (data.sources[].path)", "fix data.sources in params.yaml")
    if p.is_dir():
        return iter_saved_dataset(p, split)
    name = p.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")):
        return iter_jsonl(p)
    if name.endswith(".parquet"):
        return iter_parquet(p)
    raise ValueError(f"{p}: unsupported local format (use .jsonl[.gz], .parquet or a saved datasets folder)")
