"""Benchmark registry: offline sources, override paths, unavailable reporting, decontamination export."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from codeblock.core.config import load_config
from codeblock.core.io import BadRowError
from codeblock.evaluate import registry as R

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cfg():
    c = load_config(REPO / "params.yaml", ["eval.use_hub=false"])
    c.paths.raw_dir = str(REPO / "data" / "raw")
    return c


def test_registry_has_the_six_benchmarks_and_the_labelled_stand_in():
    for name in ["humaneval", "humaneval_plus", "mbpp", "mbpp_plus", "bigcodebench_hard", "bigcodebench_full"]:
        assert name in R.REGISTRY
    assert "stand-in" in R.display_name("dataframebench")
    assert R.display_name("humaneval") == "HumanEval"
    with pytest.raises(KeyError, match="unknown benchmark"):
        R.get("humaneval_pls")


def test_offline_humaneval_mbpp_dataframebench(cfg):
    he = R.load_benchmark(cfg, "humaneval")
    assert len(he.problems) == 164 and len(he.sha256) == 64
    p = he.problems[0]
    assert p.task_id == "HumanEval/0" and p.entry_point == "has_close_elements"
    assert p.reference.startswith(p.completion_prompt) and "def check" in p.test
    mb = R.load_benchmark(cfg, "mbpp")
    assert len(mb.problems) == 500 and {p.task_id for p in mb.problems} == {str(i) for i in range(11, 511)}
    assert all(p.entry_point for p in mb.problems)
    assert mb.problems[0].entry_point == "remove_Occ" and mb.problems[0].test.startswith("assert")
    df = R.load_benchmark(cfg, "dataframebench")
    assert len(df.problems) == 100
    assert "{library_import}" not in df.problems[0].prompt and "import pandas as pd" in df.problems[0].prompt
    assert "pandas" in df.problems[0].libs and df.problems[0].test_format == "unittest"


def test_missing_benchmark_is_unavailable_with_instructions(cfg, tmp_path):
    with pytest.raises(R.BenchmarkUnavailable, match=r"^unavailable: .*humaneval_plus_path"):
        R.load_benchmark(cfg, "humaneval_plus")
    cfg.paths.raw_dir = str(tmp_path)  # no offline files at all
    with pytest.raises(R.BenchmarkUnavailable, match="fetch-assets"):
        R.load_benchmark(cfg, "humaneval")
    cfg.eval.mbpp_plus_path = str(tmp_path / "nope.jsonl.gz")
    with pytest.raises(R.BenchmarkUnavailable, match="does not exist"):
        R.load_benchmark(cfg, "mbpp_plus")


def test_evalplus_override_file(cfg, tmp_path):
    row = {
        "task_id": "HumanEval/0", "prompt": "def add(a, b):\n    \"\"\"Add.\"\"\"\n", "entry_point": "add",
        "canonical_solution": "    return a + b\n", "base_input": [[1, 2]], "plus_input": [[1.5, 2.25], [-1, 1]],
        "atol": 0,
    }
    path = tmp_path / "HumanEvalPlus.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(row) + "\n")
    cfg.eval.humaneval_plus_path = str(path)
    lb = R.load_benchmark(cfg, "humaneval_plus")
    (p,) = lb.problems
    assert p.test_format == "evalplus" and p.extras["dataset"] == "humaneval"
    assert p.extras["base_input"] == [[1, 2]] and len(p.extras["plus_input"]) == 2
    assert p.reference == row["prompt"] + row["canonical_solution"]
    bad = dict(row, plus_input="[[1]]")
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(bad) + "\n")
    with pytest.raises(BadRowError, match="row 0: field 'plus_input'"):
        R.load_benchmark(cfg, "humaneval_plus")


def test_bigcodebench_local_file(cfg, tmp_path):
    row = {
        "task_id": "BigCodeBench/1", "complete_prompt": "import os\ndef task_func(x):\n    \"\"\"doc\"\"\"\n",
        "instruct_prompt": "Write task_func.", "code_prompt": "import os\ndef task_func(x):\n",
        "canonical_solution": "    return x\n", "entry_point": "task_func", "libs": "['os']",
        "test": "import unittest\nclass TestCases(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(task_func(1), 1)\n",
    }
    path = tmp_path / "bcb.jsonl"
    path.write_text(json.dumps(row) + "\n")
    cfg.eval.bigcodebench_hard_path = str(path)
    (p,) = R.load_benchmark(cfg, "bigcodebench_hard").problems
    assert p.libs == ["os"] and p.test_format == "bigcodebench"
    # bigcodebench's ground truth and its instruct prompt (prefix, newline, stripped task prompt)
    assert p.reference == row["complete_prompt"] + "\n" + row["canonical_solution"]
    assert p.prompt == R.BCB_INSTRUCTION + "\nWrite task_func.\n" and p.extras["code_prompt"] == row["code_prompt"]
    with open(path, "w") as fh:
        fh.write(json.dumps(dict(row, libs="['os'")) + "\n")
    with pytest.raises(BadRowError, match="row 0: field 'libs'"):
        R.load_benchmark(cfg, "bigcodebench_hard")


def test_iter_problem_texts_skips_unavailable(cfg, caplog):
    rows = list(R.iter_problem_texts(cfg, ["humaneval", "mbpp_plus", "mbpp"]))
    assert len(rows) == 164 + 500
    bench, tid, text = rows[0]
    assert bench == "humaneval" and tid == "HumanEval/0"
    assert "def has_close_elements" in text and "def check" in text  # statement + solution + tests
    assert any("mbpp_plus" in r.message for r in caplog.records)


def test_bcb_env_plan_pins_installs_and_nltk_data(tmp_path, capsys):
    """The eval-env command (dry run): a venv, bigcodebench's pins, bigcodebench itself without
    dependencies, then the NLTK corpora the tasks load, into <venv>/nltk_data."""
    from codeblock.evaluate import bcb_env

    dest = tmp_path / "venv-bcb"
    assert bcb_env.main(["--dry-run", "--dest", str(dest), "--python", "python3.10"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("+ ")]
    assert lines[0] == f"+ python3.10 -m venv {dest}"
    assert "numpy==1.21.2" in lines[2] and lines[3].endswith("--no-deps bigcodebench==0.2.5")
    assert lines[4] == (f"+ {dest}/bin/python -m nltk.downloader -d {dest}/nltk_data "
                        "stopwords punkt words vader_lexicon averaged_perceptron_tagger")
    assert not dest.exists()  # a dry run creates nothing
