"""Label sets for the sparse-loss trainer: validated once, then read lazily from a memory map.

A label set (`labels_dir/<method>/labels.parquet`, written by `select` or a baseline) has one row
per sample: `id`, `input_ids` (list<int32>), `labels` (list<int32>, -100 = not supervised; a
supervised label equals the input id at the same position, as in every causal-LM dataset).

`prepare_label_set(parquet, arrow, max_length, vocab_size)` streams the parquet in record batches
and checks every row before training starts (the error names the file, the row and the field):
a non-empty unique id, labels as long as input_ids, at least 2 tokens, every input id in
[0, vocab_size) (an id outside the vocabulary is a device assert on a GPU and a hang on the other
ranks), every supervised label equal to its input id. It truncates to `max_length`, never
supervises position 0, DROPS the samples left with no supervised token (counted) and writes the
kept rows to an uncompressed Arrow IPC file (atomically; reused while the parquet's sha256,
max_length and vocab_size are unchanged).

`open_label_set(arrow)` memory-maps that file: a row is read from the page cache when a batch
needs it, so a process holds only the row offsets (8 bytes a row) whatever the pool size, and
the processes of a multi-GPU run share one copy of the pages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codeblock.core.io import BadRowError, sha256_file, write_json
from codeblock.train.sparse_loss import IGNORE_INDEX

REQUIRED_COLUMNS = ("id", "input_ids", "labels")
FORMAT_VERSION = 1
READ_BATCH_ROWS = 2048


@dataclass
class LabelSet:
    """Kept samples: `ids[i]`, `input_ids[i]`, `labels[i]` (int64 arrays) - in-memory lists or
    lazy columns of a memory-mapped Arrow file (`open_label_set`)."""

    ids: Sequence[str]
    input_ids: Sequence[np.ndarray]
    labels: Sequence[np.ndarray]
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        if isinstance(self.input_ids, RaggedColumn):
            return self.input_ids.lengths().tolist()
        return [len(x) for x in self.input_ids]


class RaggedColumn(Sequence):
    """Row i of a list<int32> column of an Arrow table, as an int64 numpy array, without
    materialising the column (zero-copy views into the memory map)."""

    def __init__(self, column):
        self._offsets, self._values, starts = [], [], [0]
        for chunk in column.chunks:
            self._offsets.append(chunk.offsets.to_numpy(zero_copy_only=True))
            self._values.append(chunk.values.to_numpy(zero_copy_only=True))
            starts.append(starts[-1] + len(chunk))
        self._starts = np.asarray(starts, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        c = int(np.searchsorted(self._starts, i, side="right")) - 1
        j = i - int(self._starts[c])
        off = self._offsets[c]
        return self._values[c][off[j]:off[j + 1]].astype(np.int64)

    def lengths(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o in self._offsets]) if self._offsets else np.zeros(0, np.int64)


class StringColumn(Sequence):
    def __init__(self, column):
        self._col = column

    def __len__(self) -> int:
        return len(self._col)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._col[i].to_pylist()
        return self._col[i].as_py()

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


def _check_row(path: Path, row: int, sid: Any, x, y, vocab_size: int, seen: set[str]):
    if not isinstance(sid, str) or not sid:
        raise BadRowError(path, row, "id", f"expected a non-empty string, got {sid!r}")
    if sid in seen:
        raise BadRowError(path, row, "id", f"duplicate id {sid!r}")
    seen.add(sid)
    if x is None or y is None or len(x) != len(y):
        raise BadRowError(path, row, "labels", f"length {None if y is None else len(y)} != input_ids length "
                                               f"{None if x is None else len(x)}")
    if len(x) < 2:
        raise BadRowError(path, row, "input_ids", f"needs at least 2 tokens, got {len(x)}")
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    bad = np.flatnonzero((x < 0) | (x >= vocab_size)) if vocab_size else np.flatnonzero(x < 0)
    if bad.size:
        t = int(bad[0])
        raise BadRowError(path, row, "input_ids", f"token id {x[t]} at position {t} is outside the model's "
                                                  f"vocabulary [0, {vocab_size}) (labels from another tokenizer?)")
    sup = y != IGNORE_INDEX
    if np.any(sup & (y != x)):
        t = int(np.flatnonzero(sup & (y != x))[0])
        raise BadRowError(path, row, "labels", f"label {y[t]} at position {t} differs from input id {x[t]} "
                                               "(labels must be unshifted copies of input_ids or -100)")
    return x, y, bool(sup[1:].any())


def iter_checked_rows(path: str | Path, max_length: int, vocab_size: int = 0, stats: dict | None = None):
    """Yield (row, id, input_ids, labels) of the kept samples, validated and truncated; `stats`
    is filled with the counts as the file is read (module docstring)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: label set not found (run `codeblock select` or a baseline first)")
    pf = pq.ParquetFile(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise BadRowError(path, "-", missing[0], f"missing column (have {pf.schema_arrow.names})")
    st = stats if stats is not None else {}
    st.update({"rows": 0, "kept": 0, "dropped_no_supervision": 0, "dropped_truncated": 0, "truncated": 0,
               "supervised_tokens": 0, "input_tokens": 0})
    seen: set[str] = set()
    row = 0
    for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=list(REQUIRED_COLUMNS)):
        cols = batch.to_pydict()
        for sid, x, y in zip(cols["id"], cols["input_ids"], cols["labels"]):
            x, y, had = _check_row(path, row, sid, x, y, vocab_size, seen)
            if len(x) > max_length:
                x, y = x[:max_length], y[:max_length]
                st["truncated"] += 1
            y = y.copy()
            y[0] = IGNORE_INDEX  # position 0 is never predicted
            n_sup = int((y != IGNORE_INDEX).sum())
            if n_sup == 0:
                st["dropped_truncated" if had else "dropped_no_supervision"] += 1
            else:
                st["kept"] += 1
                st["supervised_tokens"] += n_sup
                st["input_tokens"] += len(x)
                yield row, sid, x, y
            row += 1
        st["rows"] = row
    st["dropped"] = st["dropped_no_supervision"] + st["dropped_truncated"]


def load_label_set(path: str | Path, max_length: int, vocab_size: int = 0) -> LabelSet:
    """The whole label set in memory (tests, small sets); training uses prepare/open_label_set."""
    out = LabelSet([], [], [])
    for _, sid, x, y in iter_checked_rows(path, max_length, vocab_size, out.stats):
        out.ids.append(sid)
        out.input_ids.append(x)
        out.labels.append(y)
    return out


def _schema():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())),
                      ("labels", pa.list_(pa.int32())), ("row", pa.int64())])


def prepare_label_set(parquet: str | Path, arrow: str | Path, max_length: int, vocab_size: int,
                      labels_sha256: str | None = None) -> dict[str, int]:
    """Validate `parquet` and write its kept rows to `arrow` (reused when up to date); the stats."""
    import pyarrow as pa

    arrow = Path(arrow)
    key = {"version": FORMAT_VERSION, "labels_sha256": labels_sha256 or sha256_file(parquet),
           "max_length": max_length, "vocab_size": vocab_size}
    meta = arrow.with_name(arrow.name + ".json")
    if arrow.exists() and meta.exists():
        old = json.loads(meta.read_text())
        if old.get("key") == key:
            return old["stats"]
    arrow.parent.mkdir(parents=True, exist_ok=True)
    tmp = arrow.with_name(f".{arrow.name}.{os.getpid()}.tmp")
    stats: dict[str, int] = {}
    buf: dict[str, list] = {"id": [], "input_ids": [], "labels": [], "row": []}
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, _schema()) as writer:
            def flush():
                if buf["id"]:
                    writer.write_batch(pa.record_batch(buf, schema=_schema()))
                    for v in buf.values():
                        v.clear()

            for row, sid, x, y in iter_checked_rows(parquet, max_length, vocab_size, stats):
                buf["id"].append(sid)
                buf["input_ids"].append(x.astype(np.int32))
                buf["labels"].append(y.astype(np.int32))
                buf["row"].append(row)
                if len(buf["id"]) >= READ_BATCH_ROWS:
                    flush()
            flush()
        os.replace(tmp, arrow)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_json(meta, {"key": key, "stats": stats, "source": str(parquet)})
    return stats


def open_label_set(arrow: str | Path) -> LabelSet:
    """Memory-map a file written by `prepare_label_set`."""
    import pyarrow as pa

    arrow = Path(arrow)
    table = pa.ipc.open_file(pa.memory_map(str(arrow), "r")).read_all()
    stats = json.loads(arrow.with_name(arrow.name + ".json").read_text())["stats"]
    return LabelSet(StringColumn(table.column("id")), RaggedColumn(table.column("input_ids")),
                    RaggedColumn(table.column("labels")), stats)
