"""File helpers shared by every stage: atomic writes, hashes, parquet with provenance.

Every artefact is written to a temp file beside its destination and renamed into place, so an
interrupted stage never leaves a half-written output and never clobbers the previous good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class BadRowError(ValueError):
    """A malformed input row; the message names the file, the row and the field."""

    def __init__(self, file: str | os.PathLike, row: int | str, field: str, problem: str):
        self.file, self.row, self.field, self.problem = str(file), row, field, problem
        super().__init__(f"{file}: row {row}: field '{field}': {problem}")


class MissingInput(FileNotFoundError):
    """A stage input that is not there: what is missing, and the command that makes it."""

    def __init__(self, path: str | os.PathLike, what: str, make: str):
        self.path, self.what, self.make = str(path), what, make
        super().__init__(f"{path}: {what} not found; make it with `{make}`")


def require_input(path: str | os.PathLike, what: str, make: str) -> Path:
    """`path` if it exists, else MissingInput naming it and the command that makes it."""
    p = Path(path)
    if not p.exists():
        raise MissingInput(p, what, make)
    return p


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """A new empty temp file beside `dest` to write to; it replaces `dest` when the block ends
    without an error and is removed otherwise (`dest` then stays as it was)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(dest: str | os.PathLike, table, metadata: dict[str, Any] | None = None) -> Path:
    """Write a pyarrow Table (or a list of dicts) atomically; `metadata` lands in the schema as
    JSON under the key `codeblock` (config hash, input hashes, counts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist(list(table))
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[b"codeblock"] = json.dumps(metadata, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp)
    return Path(dest)


class ParquetStream:
    """Write a parquet file batch by batch, atomically: rows go to a temp file beside `dest`,
    which is renamed over `dest` only when the `with` block ends without an error (on an error
    the temp file is removed and `dest` is untouched). Set `.metadata` before the block ends: it
    lands in the file's key-value metadata under `codeblock`, as `write_parquet` puts it. Rows
    are buffered into row groups of `group_rows`, so memory holds one group, not the file."""

    def __init__(self, dest: str | os.PathLike, schema, group_rows: int = 4096):
        self.dest, self.schema, self.group_rows = Path(dest), schema, group_rows
        self.metadata: dict[str, Any] = {}
        self.rows = 0
        self._buf: list[dict] = []

    def __enter__(self) -> ParquetStream:
        import pyarrow.parquet as pq

        self._target = atomic_path(self.dest)
        tmp = self._target.__enter__()
        try:
            self._writer = pq.ParquetWriter(tmp, self.schema)
        except BaseException as e:
            self._target.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def write(self, rows: list[dict]) -> None:
        self._buf.extend(rows)
        self.rows += len(rows)
        if len(self._buf) >= self.group_rows:
            self._flush()

    def write_table(self, table) -> None:
        """Append a pyarrow Table of this schema as it is (after any buffered rows)."""
        self._flush()
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buf:
            self._writer.write_table(pa.Table.from_pylist(self._buf, schema=self.schema))
            self._buf = []

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._flush()
                if self.metadata:
                    self._writer.add_key_value_metadata(
                        {"codeblock": json.dumps(self.metadata, sort_keys=True, default=str)})
            self._writer.close()
        except BaseException as e:
            self._target.__exit__(type(e), e, e.__traceback__)
            raise
        self._target.__exit__(exc_type, exc, tb)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    import pyarrow.parquet as pq

    # the file's key-value metadata: `write_parquet` (schema metadata) and `ParquetStream`
    # (added at close, so absent from the embedded Arrow schema) both put `codeblock` there
    meta = pq.read_metadata(path).metadata or {}
    raw = meta.get(b"codeblock")
    return json.loads(raw) if raw else {}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder (relative names + file hashes, sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()
