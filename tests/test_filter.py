"""Stage 1 (filter) on a fixture pool written here: quality gates, dedup, near-dup,
decontamination, keep count, long-tail order, report reasons, embedders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codeblock.core.config import load_config
from codeblock.core.io import read_parquet_metadata
from codeblock.data.decontam import Decontaminator
from codeblock.data.schema import ARROW_SCHEMA
from codeblock.select.dedup import lsh_bands, near_duplicates
from codeblock.select.embed import embed_texts, knn_longtail
from codeblock.select.filter import heuristic_quality, run_filter
from codeblock.stages import stage_hash

ROOT = Path(__file__).resolve().parents[1]

GOOD_CODE = "Here is the solution.\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
BROKEN_CODE = "Try this:\n\n```python\ndef add(a, b)\n    return a +\n```\n"
PROSE = "You should consider sorting the list first and then scanning it once from the left side."
LONG = (
    "To merge two sorted lists walk both with two indices and always append the smaller head element.\n\n"
    "```python\ndef merge(xs, ys):\n    out = []\n    i = j = 0\n    while i < len(xs) and j < len(ys):\n"
    "        if xs[i] <= ys[j]:\n            out.append(xs[i])\n            i += 1\n        else:\n"
    "            out.append(ys[j])\n            j += 1\n    out.extend(xs[i:])\n    out.extend(ys[j:])\n"
    "    return out\n```\nThe loop runs in linear time over both inputs and keeps the result sorted.\n"
)
BENCH_TEXT = (
    "Write a function that returns the longest palindromic substring of the given string s, "
    "breaking ties by the leftmost occurrence in the string."
)
SHORT_BENCH = "Write a python function to count the vowels of a word."  # 11 words < 13


def row(id_, instruction, response, source="fixture", judge=None, test=None):
    return {"id": id_, "instruction": instruction, "response": response, "source": source,
            "judge_score": judge, "test_score": test, "domain": None}


def fixture_rows() -> list[dict]:
    return [
        row("judge_good", "Add two numbers.", GOOD_CODE, "oci", judge=4.5, test=1.0),
        row("judge_failed_tests", "Multiply two numbers.", GOOD_CODE.replace("+", "*"), "oci", judge=5.0, test=0.5),
        row("judge_low", "Subtract two numbers.", GOOD_CODE.replace("+", "-"), "oci", judge=2.0, test=1.0),
        row("heur_good", "Merge two sorted lists into one sorted list.", LONG),
        row("heur_broken", "Add two numbers, broken.", BROKEN_CODE),
        row("heur_prose", "How should I find duplicates?", PROSE),
        row("heur_short", "Tiny.", "```python\nx=1\n```"),
        row("exact_dup", "add   TWO numbers.", GOOD_CODE.replace("Here", "here"), "oci", judge=4.5, test=1.0),
        row("near_dup", "Merge two sorted lists into one sorted list.", LONG.replace("linear time", "linear  time!")),
        row("contam_long", "Please " + BENCH_TEXT, GOOD_CODE.replace("add", "pal")),
        row("contam_short", "Task: write a Python function to count the vowels of a word, quickly.",
            GOOD_CODE.replace("add", "vowels")),
        row("unfenced", "Return the square of x.", "def square(x):\n    \"\"\"Square of x.\"\"\"\n    return x * x\n"),
        row("other_lang", "Print hello in C.", "```c\nint main() { printf(\"hi\"); }\n```\nThis prints hi."),
    ]


def fixture_benchmarks(cfg, names):
    for name in names:
        if name == "fixbench":
            yield ("fixbench", "FB/0", BENCH_TEXT)
            yield ("fixbench", "FB/1", SHORT_BENCH)
            yield ("fixbench", "FB/2", "too short text")
        elif name == "missing":
            raise FileNotFoundError("no such benchmark file")
        elif name == "empty":
            return
        else:
            raise KeyError(name)


def make_cfg(tmp_path, rows=None, **over):
    tmp_path.mkdir(parents=True, exist_ok=True)
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows if rows is not None else fixture_rows(), schema=ARROW_SCHEMA), pool)
    ov = {
        "paths.pool": str(pool),
        "paths.filtered": str(tmp_path / "out" / "filtered.parquet"),
        "paths.filter_report": str(tmp_path / "out" / "dropped.parquet"),
        "paths.models_dir": str(ROOT / "models"),
        "filter.embedder": "tfidf",
        "filter.decontam_benchmarks": "[fixbench, missing, empty]",
        "filter.knn_k": 3,
        "tracking.enabled": "false",
        "model.device": "cpu",
    }
    ov.update(over)
    return load_config(ROOT / "params.yaml", [f"{k}={v}" for k, v in ov.items()])


def reasons_by_id(cfg) -> dict[str, str]:
    rep = pq.read_table(cfg.paths.filter_report).to_pylist()
    return {r["id"]: r["reason"] for r in rep}


def test_filter_reasons_and_outputs(tmp_path):
    cfg = make_cfg(tmp_path)
    res = run_filter(cfg, problem_texts=fixture_benchmarks, progress=False)
    why = reasons_by_id(cfg)
    assert why == {
        "judge_failed_tests": "quality",
        "heur_broken": "quality",
        "heur_prose": "quality",
        "heur_short": "quality",
        "exact_dup": "exact_dup",
        "near_dup": "near_dup",
        "contam_long": "contaminated:fixbench",
        "contam_short": "contaminated:fixbench",
    }  # judge_low (judge 2.0) passes: min_judge_score defaults to 0
    kept = pq.read_table(cfg.paths.filtered).to_pylist()
    kept_ids = [r["id"] for r in kept]
    assert set(kept_ids) | set(why) == {r["id"] for r in fixture_rows()}
    assert not set(kept_ids) & set(why)
    # pool order is kept; new columns are present and typed
    order = [r["id"] for r in fixture_rows()]
    assert kept_ids == sorted(kept_ids, key=order.index)
    by_id = {r["id"]: r for r in kept}
    assert by_id["judge_good"]["quality"] == pytest.approx((4.5 - 1) / 4)
    assert by_id["judge_good"]["quality_source"] == "judge"
    assert by_id["heur_good"]["quality"] == pytest.approx(1.0)
    assert by_id["unfenced"]["quality_source"] == "heuristic"
    assert by_id["other_lang"]["quality"] == pytest.approx(1.0)  # C is not parse-checked
    assert all(0.0 <= r["longtail"] <= 2.0 for r in kept)
    assert sorted(r["rank"] for r in kept) == list(range(len(kept)))
    # unavailable benchmarks are reported, never silently ignored
    assert set(res["decontam_unavailable"]) == {"missing", "empty"}
    m = res["metrics"]
    assert m["decontam_unavailable"] == 2
    assert m["dropped_contaminated/fixbench"] == 2 and m["dropped_contaminated/missing"] == 0
    assert m["decontam_problems/fixbench"] == 3
    assert m["kept"] == len(kept) and m["dropped"] == len(why)
    assert m["pool_rows"] == m["kept"] + m["dropped"]
    meta = read_parquet_metadata(cfg.paths.filtered)
    assert meta["config_hash"] == stage_hash(cfg, "filter") and len(meta["input"]["sha256"]) == 64
    assert "missing" in meta["decontam_unavailable"]


def test_judge_gates(tmp_path):
    cfg = make_cfg(tmp_path, **{"filter.min_judge_score": 3.0, "filter.min_test_score": 0.4})
    run_filter(cfg, problem_texts=fixture_benchmarks, progress=False)
    why = reasons_by_id(cfg)
    assert why["judge_low"] == "quality"          # judge 2.0 < 3.0
    assert "judge_failed_tests" not in why        # test 0.5 >= 0.4 now
    cfg = make_cfg(tmp_path, **{"filter.min_judge_score": 0.0})
    run_filter(cfg, problem_texts=fixture_benchmarks, progress=False)
    assert "judge_low" not in reasons_by_id(cfg)


def test_keep_count_ranks_quality_then_longtail(tmp_path):
    cfg = make_cfg(tmp_path, **{"filter.keep": 2})
    res = run_filter(cfg, problem_texts=fixture_benchmarks, progress=False)
    kept = pq.read_table(cfg.paths.filtered).to_pylist()
    assert len(kept) == 2 and res["metrics"]["dropped_not_kept_rank"] >= 1
    why = reasons_by_id(cfg)
    # every kept row outranks every row dropped for rank: quality first, long-tail second
    full = make_cfg(tmp_path / "all")
    run_filter(full, problem_texts=fixture_benchmarks, progress=False)
    allrows = {r["id"]: r for r in pq.read_table(full.paths.filtered).to_pylist()}
    worst_kept = min((allrows[r["id"]]["quality"], allrows[r["id"]]["longtail"]) for r in kept)
    for id_, reason in why.items():
        if reason == "not_kept_rank":
            assert (allrows[id_]["quality"], allrows[id_]["longtail"]) <= worst_kept
    # the judge row (quality 0.875) loses to heuristic rows at 1.0
    assert "judge_good" in why and why["judge_good"] == "not_kept_rank"
    # a fraction
    cfg = make_cfg(tmp_path / "frac", **{"filter.keep": 0.5})
    res = run_filter(cfg, problem_texts=fixture_benchmarks, progress=False)
    n_cand = res["metrics"]["kept"] + res["metrics"]["dropped_not_kept_rank"]
    assert res["metrics"]["kept"] == round(0.5 * n_cand)


def test_heuristic_rater():
    assert heuristic_quality(GOOD_CODE, 40, 12000)[0] == pytest.approx(1.0)
    assert heuristic_quality(BROKEN_CODE, 40, 12000)[0] == pytest.approx(0.4)
    assert heuristic_quality(GOOD_CODE + BROKEN_CODE, 40, 12000)[0] == pytest.approx(0.7)
    assert heuristic_quality(PROSE, 40, 12000)[0] == 0.0
    assert heuristic_quality(GOOD_CODE, 40, 50)[0] == 0.0  # too long
    assert heuristic_quality("just_a_name_but_long_enough_to_pass_the_length_gate", 10, 100)[0] == 0.0
    assert heuristic_quality("import os\nprint(os.getcwd())\n", 10, 100)[0] == pytest.approx(1.0)


def test_heuristic_finds_code_in_crlf_unclosed_longer_fence_and_skips_shell():
    good = "def add(a, b):\n    return a + b\n"
    crlf = "Here:\r\n```python\r\n" + good.replace("\n", "\r\n") + "```\r\nDone."
    unclosed = "Here:\n```python\n" + good
    longer = "Here:\n```python\n" + good + "`````\nDone."
    for text in (crlf, unclosed, longer):
        assert heuristic_quality(text, 10, 1000)[0] == pytest.approx(1.0), repr(text)
    # an untagged shell block is not code, so it neither counts as code nor as unparsable Python
    shell = "Install:\n```\npip install numpy\n```\n"
    assert heuristic_quality(shell, 10, 1000) == (0.0, "no code")
    assert heuristic_quality(shell + "```python\n" + good + "```\n", 10, 1000)[0] == pytest.approx(1.0)


def test_near_duplicates_exact_jaccard_and_priority():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(500)]
    base = " ".join(rng.choice(vocab, 300))
    toks = base.split()
    slight = " ".join(toks[:150] + ["CHANGED"] + toks[151:])      # one token changed: J ~ 0.97
    heavy = " ".join(toks[:100] + list(rng.choice(vocab, 200)))   # J far below 0.9
    other = " ".join(rng.choice(vocab, 300))
    dropped = near_duplicates([base, other, slight, heavy], 0.9, 5, 128, progress=False)
    assert set(dropped) == {2}
    assert dropped[2][0] == 0 and 0.9 <= dropped[2][1] < 1.0
    # order decides which copy survives
    dropped = near_duplicates([slight, base], 0.9, 5, 128, progress=False)
    assert set(dropped) == {1} and dropped[1][0] == 0
    b, r = lsh_bands(128, 0.9)
    assert b * r == 128 and (1 / b) ** (1 / r) <= 0.8


def test_decontaminator_ngrams():
    dec = Decontaminator(n=13, min_words=8)
    dec.add("hb", "HB/0", BENCH_TEXT)
    dec.add("hb", "HB/1", SHORT_BENCH)
    dec.add("hb", "HB/2", "three word text")
    dec.finalize()
    words13 = " ".join(BENCH_TEXT.split()[3:16])
    found = dec.hit("prefix " + words13.upper() + " suffix")                 # case-insensitive
    assert found[:2] == ("hb", "HB/0") and len(found[2].split()) == 13
    assert dec.hit(" ".join(BENCH_TEXT.split()[3:15])) is None               # only 12 words
    assert dec.hit("We must write a python function to count the vowels of a word!")[:2] == ("hb", "HB/1")
    assert dec.hit("three word text") is None                                # below min_words


def test_decontaminator_ignores_boilerplate():
    template = "Write self contained Python code that completes the function given in the starter code below:"
    tasks = ["sort the rows of the table by the given column in descending order and drop empty cells",
             "count how many distinct colours appear in each image of the folder and plot a histogram",
             "merge the two frames on their shared key and report rows that have no partner at all"]
    dec = Decontaminator(n=13, min_words=8, common=3)
    for k, t in enumerate(tasks):
        dec.add("tb", f"T{k}", f"{template} {t}\nimport pandas as pd\nimport numpy as np\nfrom a.b import c, d, e, f, g, h, i, j, k, l, m\n")
    dec.finalize()
    assert dec.boilerplate > 0
    # the template alone, and the template plus one task word, are not contamination
    assert dec.hit(template) is None
    assert dec.hit(template + " sort") is None
    assert dec.hit("from a.b import c, d, e, f, g, h, i, j, k, l, m") is None  # import lines are not indexed
    # the task text itself is
    assert dec.hit("please " + tasks[1])[:2] == ("tb", "T1")
    # with common=0 the template is indexed like anything else
    plain = Decontaminator(n=13, min_words=8, common=0)
    plain.add("tb", "T0", f"{template} {tasks[0]}")
    plain.finalize()
    assert plain.hit(template) is not None


def test_bad_pool_rows(tmp_path):
    from codeblock.core.io import BadRowError

    rows = fixture_rows()
    rows[1]["id"] = rows[0]["id"]
    cfg = make_cfg(tmp_path, rows=rows)
    with pytest.raises(BadRowError, match="duplicate id"):
        run_filter(cfg, problem_texts=fixture_benchmarks, progress=False)


def test_filter_logs_mlflow(tmp_path, monkeypatch):
    # mlflow.set_tracking_uri (called by any earlier test) exports MLFLOW_TRACKING_URI, which
    # tracking.tracking_uri prefers over the config: clear it so this test's store is used
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = make_cfg(tmp_path, **{"tracking.enabled": "true",
                                "tracking.tracking_uri": f"sqlite:///{tmp_path / 'mlruns.db'}",
                                "tracking.artifact_dir": str(tmp_path / "art"),
                                "tracking.log_system_metrics": "false"})
    res = run_filter(cfg, problem_texts=fixture_benchmarks, progress=False)
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")
    assert len(runs) == 1
    logged = runs[0].data.metrics
    assert logged["dropped_near_dup"] == res["metrics"]["dropped_near_dup"] == 1
    assert logged["decontam_unavailable"] == 2


def test_tfidf_and_longtail():
    texts = ["sort a list of numbers", "sort a list of integers", "sort the list of numbers",
             "download a web page over http"]
    emb = embed_texts(texts, "tfidf")
    lt = knn_longtail(emb, 2, progress=False)
    assert lt.shape == (4,) and int(np.argmax(lt)) == 3  # the odd one out is the rarest
    assert knn_longtail(embed_texts(["only one"], "tfidf"), 10, progress=False).tolist() == [1.0]
    # dense brute force agrees with the chunked implementation
    dense = emb.toarray()
    sims = dense @ dense.T
    np.fill_diagonal(sims, -np.inf)
    ref = np.array([np.mean(1 - np.sort(s)[-2:]) for s in sims])
    np.testing.assert_allclose(knn_longtail(emb, 2, chunk=3, progress=False), ref, atol=1e-9)


@pytest.mark.skipif(not (ROOT / "models" / "minilm" / "config.json").exists(), reason="offline MiniLM not fetched")
def test_minilm_embedder():
    texts = ["Write a function to sort a list", "Sort the given list of numbers in ascending order",
             "How do I read a CSV file with pandas?"]
    emb = embed_texts(texts, "minilm", models_dir=ROOT / "models", progress=False)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > 0.5 > sims[0, 2]
    # batching does not change embeddings
    one = embed_texts(texts, "minilm", batch_size=1, models_dir=ROOT / "models", progress=False)
    np.testing.assert_allclose(one, emb, atol=1e-5)


@pytest.mark.skipif(not (ROOT / "data" / "raw" / "humaneval" / "HumanEval.jsonl.gz").exists(),
                    reason="offline HumanEval not fetched")
def test_registry_decontamination_and_unavailable_benchmark(tmp_path):
    """The evaluation registry feeds the index; a benchmark without data is reported, not ignored."""
    import gzip
    import json

    from codeblock.data.decontam import build_decontaminator

    first = json.loads(gzip.open(ROOT / "data" / "raw" / "humaneval" / "HumanEval.jsonl.gz", "rt").readline())
    rows = fixture_rows()[:4] + [row("he0", first["prompt"], "```python\n" + first["canonical_solution"] + "\n```\n" * 2)]
    cfg = make_cfg(tmp_path, rows=rows, **{"paths.raw_dir": str(ROOT / "data" / "raw"),
                                           "filter.decontam_benchmarks": "[humaneval, humaneval_plus]",
                                           "eval.humaneval_plus_path": str(tmp_path / "absent.jsonl.gz")})
    dec, unavailable = build_decontaminator(cfg)
    assert dec.counts["humaneval"] == 164 and list(unavailable) == ["humaneval_plus"]
    res = run_filter(cfg, progress=False)
    assert reasons_by_id(cfg)["he0"] == "contaminated:humaneval"
    assert res["metrics"]["decontam_unavailable"] == 1 and res["metrics"]["decontam_problems/humaneval_plus"] == 0


def test_refiltering_the_kept_pool_keeps_it(tmp_path):
    cfg = make_cfg(tmp_path)
    first = run_filter(cfg, problem_texts=fixture_benchmarks, progress=False)["metrics"]["kept"]
    cfg.paths.pool = cfg.paths.filtered
    cfg.paths.filtered = str(tmp_path / "again.parquet")
    cfg.paths.filter_report = str(tmp_path / "again-dropped.parquet")
    res = run_filter(cfg, problem_texts=fixture_benchmarks, progress=False)
    assert res["metrics"]["kept"] == first and res["metrics"]["dropped"] == 0
    assert pq.read_schema(cfg.paths.filtered).names.count("quality") == 1


def test_filter_rows_decides_without_files():
    """The pure decision function: every row either kept or dropped with one reason; the long-tail
    order comes from the embedding it is given (rarer instruction = higher score = kept first)."""
    from codeblock.select.filter import filter_rows

    cfg = load_config(ROOT / "params.yaml", ["filter.keep=2", "filter.knn_k=1"])
    dec = Decontaminator(n=13, min_words=8)
    dec.add("hb", "HB/0", BENCH_TEXT)
    dec.finalize()
    rows = [{"id": f"r{i}", "instruction": f"task {i}", "response": GOOD_CODE.replace("add", f"add{i}")}
            for i in range(4)]
    rows.append({"id": "dup", "instruction": "task 0", "response": rows[0]["response"]})
    rows.append({"id": "leak", "instruction": BENCH_TEXT, "response": GOOD_CODE})
    rows.append({"id": "broken", "instruction": "task b", "response": BROKEN_CODE})
    # r0, r1 share a direction (common); r2 and r3 each stand alone (rare): they rank first
    vec = {"task 0": [1, 0, 0], "task 1": [1, 0.05, 0], "task 2": [0, 1, 0], "task 3": [0, 0, 1]}

    def embed(texts):
        m = np.asarray([vec[t] for t in texts], dtype=np.float32)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    out = filter_rows(rows, cfg.filter, dec, embed)
    ids = {i: r["id"] for i, r in enumerate(rows)}
    assert [ids[i] for i in out.kept] == ["r2", "r3"]
    why = {ids[i]: reason for i, (reason, _) in out.dropped.items()}
    assert why == {"dup": "exact_dup", "leak": "contaminated:hb", "broken": "quality",
                   "r0": "not_kept_rank", "r1": "not_kept_rank"}
    assert set(out.kept) | set(out.dropped) == set(range(len(rows)))
