"""ParquetStream: batch-by-batch parquet writing that is atomic (temp file, rename) and keeps the
`codeblock` metadata readable exactly as write_parquet's."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codeblock.core.io import ParquetStream, read_parquet_metadata, write_parquet

SCHEMA = pa.schema([("id", pa.string()), ("ids", pa.list_(pa.int32()))])


def rows(a: int, b: int) -> list[dict]:
    return [{"id": f"r{i}", "ids": list(range(i % 7))} for i in range(a, b)]


def test_streamed_file_equals_one_shot_file(tmp_path):
    with ParquetStream(tmp_path / "s.parquet", SCHEMA, group_rows=10) as sink:
        for a in range(0, 45, 4):  # uneven batches across row groups of 10
            sink.write(rows(a, min(a + 4, 45)))
        sink.metadata = {"stage": "x", "metrics": {"n": sink.rows}}
    write_parquet(tmp_path / "w.parquet", pa.Table.from_pylist(rows(0, 45), schema=SCHEMA), {"stage": "x", "metrics": {"n": 45}})
    assert pq.read_table(tmp_path / "s.parquet").equals(pq.read_table(tmp_path / "w.parquet"), check_metadata=False)
    assert read_parquet_metadata(tmp_path / "s.parquet") == read_parquet_metadata(tmp_path / "w.parquet") == \
        {"stage": "x", "metrics": {"n": 45}}
    meta = pq.ParquetFile(tmp_path / "s.parquet").metadata  # flushed once >= 10 rows were buffered
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [12, 12, 12, 9]


def test_write_table_keeps_row_order_after_buffered_rows(tmp_path):
    with ParquetStream(tmp_path / "s.parquet", SCHEMA, group_rows=10) as sink:
        sink.write(rows(0, 3))  # buffered, below group_rows: flushed before the table
        sink.write_table(pa.Table.from_pylist(rows(3, 20), schema=SCHEMA))
        sink.write(rows(20, 22))
    assert pq.read_table(tmp_path / "s.parquet").to_pylist() == rows(0, 22) and sink.rows == 22


def test_an_error_mid_stream_leaves_the_old_file_and_no_temp(tmp_path):
    dest = tmp_path / "out.parquet"
    write_parquet(dest, pa.Table.from_pylist(rows(0, 3), schema=SCHEMA), {"stage": "old"})
    with pytest.raises(RuntimeError, match="worker died"):
        with ParquetStream(dest, SCHEMA, group_rows=2) as sink:
            sink.write(rows(0, 5))  # two row groups already flushed to the temp file
            raise RuntimeError("worker died")
    assert read_parquet_metadata(dest) == {"stage": "old"} and pq.read_table(dest).num_rows == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_failing_one_shot_writes_leave_the_old_file_and_no_temp(tmp_path, monkeypatch):
    from codeblock.core.io import atomic_write_bytes

    dest, blob = tmp_path / "out.parquet", tmp_path / "out.bin"
    write_parquet(dest, pa.Table.from_pylist(rows(0, 3), schema=SCHEMA), {"stage": "old"})
    atomic_write_bytes(blob, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(blob, "not bytes")
    with pytest.raises(OSError, match="disk full"):
        with monkeypatch.context() as m:
            def full(table, where, **kw):
                open(where, "wb").write(b"PAR1 half")
                raise OSError("disk full")
            m.setattr(pq, "write_table", full)
            write_parquet(dest, pa.Table.from_pylist(rows(0, 9), schema=SCHEMA), {"stage": "new"})
    assert blob.read_bytes() == b"old"
    assert read_parquet_metadata(dest) == {"stage": "old"} and pq.read_table(dest).num_rows == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "out.parquet"]


def test_a_writer_that_cannot_open_leaves_no_temp(tmp_path):
    with pytest.raises((TypeError, pa.ArrowException, ValueError)):
        with ParquetStream(tmp_path / "x.parquet", "not a schema"):
            pass
    assert list(tmp_path.iterdir()) == []
