import json

import pyarrow.parquet as pq
import pytest

from codeblock.core.io import BadRowError
from codeblock.core.params import SourceConfig
from codeblock.data.build import run_data
from codeblock.data.hub import OPENCODEINSTRUCT
from codeblock.data.schema import judge_mean


def oci_row(i, **over):
    """A row in nvidia/OpenCodeInstruct's exact column schema."""
    row = {
        "id": f"oci{i:04d}",
        "input": f"Write a function add_{i}(a, b) that returns a + b + {i}.",
        "output": f"Here you go.\n\n```python\ndef add_{i}(a, b):\n    return a + b + {i}\n```\n",
        "domain": "generic",
        "generation_algorithm": "self-instruct",
        "llm_judgement": json.dumps({
            "requirement_conformance": {"score": 5, "justification": "ok"},
            "logical_correctness": {"score": 4, "justification": "ok"},
            "edge_case_consideration": {"score": 3, "justification": "ok"},
        }),
        "unit_tests": json.dumps([f"assert add_{i}(1, 2) == {3 + i}"]),
        "tests_execution_status": json.dumps(["pass"]),
        "average_test_score": "1.0",
    }
    row.update(over)
    return row


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_pool(cfg):
    return pq.read_table(cfg.paths.pool).to_pylist()


def test_opencodeinstruct_local_jsonl(cfg, tmp_path):
    src = write_jsonl(tmp_path / "oci.jsonl", [oci_row(i) for i in range(5)])
    cfg.data.sources = [SourceConfig(kind="local", name="oci", path=str(src), columns={
        "input": "instruction", "output": "response", "llm_judgement": "judge_score",
        "average_test_score": "test_score"})]
    res = run_data(cfg)
    rows = read_pool(cfg)
    assert res["counts"] == {"oci": {"kept": 5}}
    assert [r["id"] for r in rows] == [f"oci/oci{i:04d}" for i in range(5)]
    assert rows[0]["judge_score"] == pytest.approx(4.0)
    assert rows[0]["test_score"] == 1.0
    assert rows[0]["source"] == "oci" and rows[0]["domain"] == "generic"
    assert rows[2]["instruction"].startswith("Write a function add_2")


def test_hub_source_uses_opencodeinstruct_preset(cfg):
    from datasets import Dataset

    calls = []

    def fake_load(name, split, streaming):
        calls.append((name, split, streaming))
        return Dataset.from_list([oci_row(i) for i in range(10)])

    cfg.data.sources = [SourceConfig(kind="hub", name=OPENCODEINSTRUCT, split="train", limit=4)]
    res = run_data(cfg, load_hub=fake_load)
    assert calls == [(OPENCODEINSTRUCT, "train", True)]  # a limit streams instead of downloading 5M rows
    rows = read_pool(cfg)
    assert len(rows) == 4 and res["counts"]["OpenCodeInstruct"]["kept"] == 4
    assert rows[0]["id"] == "OpenCodeInstruct/oci0000"
    assert rows[0]["judge_score"] == pytest.approx(4.0)


def test_local_parquet_and_saved_dataset_with_column_mapping(cfg, tmp_path):
    from datasets import Dataset

    rows = [{"uid": i, "question": f"q{i}?", "answer": f"```python\nx = {i}\n```"} for i in range(3)]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "x.parquet"))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    cfg.data.sources = [
        SourceConfig(kind="local", name="pq", path=str(tmp_path / "x.parquet")),  # aliases: uid/question/answer
        SourceConfig(kind="local", name="saved", path=str(tmp_path / "saved"),
                     columns={"uid": "id", "question": "instruction", "answer": "response"}),
    ]
    run_data(cfg)
    got = read_pool(cfg)
    assert [r["id"] for r in got] == ["pq/0", "pq/1", "pq/2", "saved/0", "saved/1", "saved/2"]
    assert got[4]["instruction"] == "q1?" and got[4]["judge_score"] is None


def test_bad_row_error_names_file_row_field(cfg, tmp_path):
    rows = [oci_row(0), oci_row(1, output=""), oci_row(2)]
    src = write_jsonl(tmp_path / "bad.jsonl", rows)
    cfg.data.sources = [SourceConfig(kind="local", name="oci", path=str(src),
                                     columns={"input": "instruction", "output": "response"})]
    with pytest.raises(BadRowError) as e:
        run_data(cfg)
    assert str(src) in str(e.value) and "row 2" in str(e.value) and "'output'" in str(e.value)


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"llm_judgement": json.dumps({"requirement_conformance": 5, "logical_correctness": 9,
                                       "edge_case_consideration": 1})}, "llm_judgement.logical_correctness"),
        ({"llm_judgement": "{not json"}, "llm_judgement"),
        ({"average_test_score": "1.7"}, "average_test_score"),
        ({"input": None}, "input"),
    ],
)
def test_bad_quality_fields(cfg, tmp_path, bad, field):
    src = write_jsonl(tmp_path / "q.jsonl", [oci_row(0), oci_row(1, **bad)])
    cfg.data.sources = [SourceConfig(kind="local", name="oci", path=str(src),
                                     columns={"input": "instruction", "output": "response"})]
    with pytest.raises(BadRowError) as e:
        run_data(cfg)
    assert e.value.row == 2 and e.value.field == field


def test_skip_bad_rows_counts_them_and_keeps_old_output_on_error(cfg, tmp_path):
    src = tmp_path / "mixed.jsonl"
    lines = [json.dumps(oci_row(0)), "{broken json", json.dumps(oci_row(2, output=123)), json.dumps(oci_row(3))]
    src.write_text("\n".join(lines) + "\n")
    cfg.data.sources = [SourceConfig(kind="local", name="oci", path=str(src),
                                     columns={"input": "instruction", "output": "response"})]
    # error mode: nothing written
    with pytest.raises(BadRowError) as e:
        run_data(cfg)
    assert e.value.row == 2 and e.value.field == "<json>"
    # skip mode: the broken line and the bad field are skipped and counted, reading goes on
    cfg.data.on_bad_row = "skip"
    res = run_data(cfg)
    assert res["counts"]["oci"] == {"kept": 2, "skipped": 2}
    assert [r["id"] for r in read_pool(cfg)] == ["oci/oci0000", "oci/oci0003"]
    good = (tmp_path / "pool" / "pool.parquet").read_bytes()
    # a failing rebuild leaves the previous pool untouched (atomic write)
    cfg.data.on_bad_row = "error"
    with pytest.raises(BadRowError):
        run_data(cfg)
    assert (tmp_path / "pool" / "pool.parquet").read_bytes() == good


def test_judge_mean_accepts_plain_numbers():
    assert judge_mean({"requirement_conformance": 5, "logical_correctness": "4",
                       "edge_case_consideration": 3}, ("f", 1)) == pytest.approx(4.0)


def test_offline_builders_on_real_packages(cfg):
    cfg.data.sources = [
        SourceConfig(kind="offline", name="dataframebench_train", limit=20),
        SourceConfig(kind="offline", name="algorithms", limit=30),
        SourceConfig(kind="offline", name="stdlib", limit=10),
    ]
    res = run_data(cfg)
    assert {k: v["kept"] for k, v in res["counts"].items()} == {
        "dataframebench_train": 20, "algorithms": 30, "stdlib": 10}
    rows = read_pool(cfg)
    assert len({r["id"] for r in rows}) == 60
    for r in rows:
        assert "```python\n" in r["response"], r["id"]
        assert not r["response"].startswith("```")  # prose first, then code
        assert "{library_" not in r["instruction"]
    algo = [r for r in rows if r["source"] == "algorithms"]
    # the docstring became the instruction and left the code
    import ast
    for r in algo:
        code = r["response"].split("```python\n", 1)[1].split("```", 1)[0]
        ast.parse(code)
    std = [r for r in rows if r["source"] == "stdlib"]
    assert all(">>>" in r["instruction"] for r in std)


def test_full_offline_pool_is_deterministic(cfg):
    run_data(cfg)
    first = (read_pool(cfg))
    run_data(cfg)
    assert read_pool(cfg) == first
    assert len(first) > 1000
