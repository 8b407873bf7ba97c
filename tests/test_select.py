"""Stage 5: percentile utility, gated priority, budget filling, labels, statistics and files."""

from __future__ import annotations

import ast
import csv
import importlib
import inspect
import json
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codeblock.core.io import BadRowError
from codeblock.select.labels import fill_budget, join_scores, labels_for
from codeblock.select.methods import run_select
from codeblock.select.priority import gated_priority, percentile_rank, select_codeblock

STDLIB = ["textwrap", "json.decoder", "json.encoder", "string", "shlex", "difflib", "heapq", "bisect", "fractions",
          "statistics", "csv", "pprint", "argparse", "calendar", "configparser", "fnmatch", "glob", "gzip",
          "ipaddress", "locale", "mimetypes", "netrc", "numbers", "optparse", "os", "pathlib", "pickle", "platform",
          "posixpath", "quopri", "random", "reprlib", "sched", "secrets", "shutil", "smtplib", "tarfile", "tempfile",
          "threading", "tokenize", "trace", "uuid", "wave", "weakref", "zipfile"]


def stdlib_pairs(n: int) -> list[dict]:
    """Realistic instruction/response pairs: documented stdlib functions, prose + a fenced block."""
    out = []
    for modname in STDLIB:
        src = inspect.getsource(importlib.import_module(modname))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef) and ast.get_docstring(node):
                code = textwrap.dedent(ast.get_source_segment(src, node, padded=True) or "")
                if not code or len(code) > 3000:
                    continue
                doc = ast.get_docstring(node).strip().splitlines()[0]
                out.append({
                    "id": f"{modname}.{node.name}.{len(out)}",
                    "instruction": f"Write a Python function `{node.name}`: {doc}",
                    "response": f"Here is an implementation of `{node.name}`.\n\n```python\n{code}\n```\n\n"
                                f"The function {doc[:1].lower() + doc[1:]}",
                })
                if len(out) >= n:
                    return out
    return out


@pytest.fixture(scope="module")
def pool_segments(default_model_dir):
    """600 stdlib responses segmented with the real tokenizer, plus deterministic synthetic GCE."""
    from codeblock.core.config import load_config
    from codeblock.select.segment import segment_rows

    c = load_config(Path(__file__).resolve().parents[1] / "params.yaml")
    c.model.name_or_path = default_model_dir
    rows = stdlib_pairs(600)
    segs = segment_rows(c, [(r["id"], r["instruction"], r["response"]) for r in rows], workers=1, progress=False)
    rng = np.random.default_rng(0)
    scores = {
        r["id"]: {"input_ids": r["input_ids"], "response_start": r["response_start"],
                  "response_end": r["response_end"],
                  "gce": rng.gamma(1.0, 0.4, r["response_end"] - r["response_start"]).astype(np.float32)}
        for r in segs
    }
    return rows, segs, scores


def write_segments(cfg, segs):
    from codeblock.select.segment import arrow_schema

    Path(cfg.paths.segments).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(segs, schema=arrow_schema()), cfg.paths.segments)


# ---------------------------------------------------------------------------------------------
# pieces


def test_percentile_rank_and_gated_priority():
    u = np.array([0.1, np.nan, 0.5, 0.3, 0.5])
    pct = percentile_rank(u)
    # finite values ranked 1, 3.5, 2, 3.5 of 4 (ties share the average rank); NaN -> 0
    assert pct == pytest.approx([0.25, 0.0, 0.875, 0.5, 0.875])
    p = gated_priority(pct, np.array([1.0, 0, 0, 0, 1.0]), np.array([0, 0, 1.0, 0, 0]), 0.5, 0.5, 0.5)
    assert p == pytest.approx([0.0, 0.0, 0.875 * 1.5, 0.5, 0.875 * 1.5])


def test_fill_budget_takes_whole_units_with_half_unit_tolerance():
    sizes = np.array([10, 6, 3, 1])
    # 10 fits; 6 would overshoot 12 by 4 >= 3; 3 overshoots by 1 < 1.5 -> taken; then the budget is spent
    assert fill_budget(np.array([0, 1, 2, 3]), sizes, 12) == ([0, 2], 13)
    assert fill_budget(np.array([1, 0]), sizes, 5) == ([1], 6)  # 6 <= 5 + 6/2: taken; then spent
    assert fill_budget(np.array([0]), sizes, 4) == ([], 0)  # 10 > 4 + 5: never taken
    assert fill_budget(np.array([]), sizes, 5) == ([], 0)


def hand_segments():
    """Two samples (prompt 3 tokens + 10 response tokens) with items and U worked out by hand."""
    def row(i, items, core, prose, reach):
        return {"id": i, "input_ids": list(range(100, 113)), "response_start": 3, "response_end": 13,
                "item_tokens": items, "item_core": core, "item_reach": reach, "item_bridge": [0.0] * len(items),
                "prose_tokens": prose, "dropped": False}

    a = row("A", [[0, 1, 2], [3, 4], [5, 6, 7]], [[0, 1], [3], [6]], [8, 9], [0.0, 0.0, 1.0])
    b = row("B", [[0, 1], [2, 3, 4, 5, 6]], [[0, 1], [2, 3]], [7, 8, 9], [0.0, 0.0])
    ga = np.array([0.9, 0.9, 0, 0.2, 0, 0, 0.6, 0, 0.1, 0.95])  # U: A0 .9, A1 .2, A2 .6
    gb = np.array([0.4, 0.4, 0.8, 0.8, 0, 0, 0, 0.5, 0.7, 0.05])  # U: B0 .4, B1 .8
    return [a, b], [ga, gb]


def test_select_codeblock_by_hand(cfg):
    segs, gce = hand_segments()
    cfg.select.budget, cfg.select.nl_share, cfg.select.tau = 0.5, 0.2, 0.5
    # 20 response tokens -> budget 10: 2 prose tokens (A9 .95, B8 .7), 8 for code.
    # percentiles: A1 .2, B0 .4, A2 .6, B1 .8, A0 1.0 -> gate keeps A0, A2, B1.
    # alpha = 0.5: P(A2) = .6 * 1.5 = .9 > P(B1) = .8 -> A0 (3), A2 (6), B1 would reach 11 > 8 + 2.5: skipped
    cfg.select.alpha = 0.5
    sel = select_codeblock(cfg, segs, gce)
    assert sel.samples[0].selected.tolist() == [0, 1, 2, 5, 6, 7, 9]
    assert sel.samples[1].selected.tolist() == [8]
    # alpha = 0: P(B1) = .8 > P(A2) = .6 -> A0 (3), B1 (8 <= 10.5), budget spent
    cfg.select.alpha = 0.0
    sel = select_codeblock(cfg, segs, gce)
    assert sel.samples[0].selected.tolist() == [0, 1, 2, 9]
    assert sel.samples[1].selected.tolist() == [2, 3, 4, 5, 6, 8]
    assert (sel.samples[1].n_code, sel.samples[1].n_prose, sel.samples[1].n_items) == (5, 1, 1)
    lab = labels_for(sel.samples[1])
    assert lab[:3].tolist() == [-100] * 3  # prompt
    assert [int(x) for x in np.nonzero(lab != -100)[0]] == [3 + k for k in [2, 3, 4, 5, 6, 8]]
    assert all(lab[k] == 100 + k for k in np.nonzero(lab != -100)[0])
    items = sel.items.to_pylist()
    assert [round(x["U_pct"], 3) for x in items] == [1.0, 0.2, 0.6, 0.4, 0.8]
    assert [x["selected"] for x in items] == [True, False, False, False, True]


def test_per_sample_scope_by_hand(cfg):
    segs, gce = hand_segments()
    cfg.select.budget, cfg.select.nl_share, cfg.select.alpha, cfg.select.scope = 0.5, 0.2, 0.0, "per_sample"
    sel = select_codeblock(cfg, segs, gce)
    # each sample: budget 5 -> 1 prose token + 4 code; A: A0 (3 tokens); B: B1 (5 <= 4 + 2.5)
    assert sel.samples[0].selected.tolist() == [0, 1, 2, 9]
    assert sel.samples[1].selected.tolist() == [2, 3, 4, 5, 6, 8]


def test_join_scores_checks_tokenization():
    segs, gce = hand_segments()
    scores = {s["id"]: {"input_ids": s["input_ids"], "response_start": 3, "response_end": 13, "gce": g}
              for s, g in zip(segs, gce)}
    assert len(join_scores(segs, scores)) == 2
    bad = dict(scores)
    bad["B"] = dict(scores["B"], input_ids=[1] + scores["B"]["input_ids"][1:])
    with pytest.raises(BadRowError, match="tokenizations differ"):
        join_scores(segs, bad, "seg.parquet")
    with pytest.raises(BadRowError, match="no score"):
        join_scores(segs, {"A": scores["A"]})
    short = {**scores, "A": dict(scores["A"], gce=gce[0][:5])}
    with pytest.raises(BadRowError, match="5 scores for 10 tokens"):
        join_scores(segs, short)


# ---------------------------------------------------------------------------------------------
# on a realistic pool of 600 responses


def test_run_select_on_600_responses(cfg, pool_segments, monkeypatch):
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, which codeblock.core.tracking then prefers:
    # drop what an earlier test in this process left, so this test's own store is used
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, segs, scores = pool_segments
    assert len(segs) >= 500
    write_segments(cfg, segs)
    res = run_select(cfg, "codeblock", scores=scores)
    out = Path(cfg.paths.labels_dir) / "codeblock"
    stats = json.loads((out / "stats.json").read_text())
    assert stats == res["metrics"]
    assert abs(stats["supervised_ratio"] - cfg.select.budget) <= 0.1 * cfg.select.budget
    assert stats["samples"] == len(segs)
    assert stats["prose_tokens"] > 0 and stats["code_tokens"] > stats["prose_tokens"]
    assert stats["prose_tokens"] == pytest.approx(cfg.select.nl_share * cfg.select.budget * stats["response_tokens"],
                                                  rel=0.05)
    assert all(isinstance(v, (int, float)) for v in stats.values())

    t = pq.read_table(out / "labels.parquet")
    assert t.schema.field("input_ids").type == pa.list_(pa.int32())
    assert t.schema.field("labels").type == pa.list_(pa.int32())
    assert t.column_names == ["id", "input_ids", "labels"]
    by_id = {s["id"]: s for s in segs}
    for row in t.to_pylist():
        s = by_id[row["id"]]
        ids, lab, rs = row["input_ids"], row["labels"], s["response_start"]
        assert ids == s["input_ids"] and all(x == -100 for x in lab[:rs])
        chosen = {k - rs for k, x in enumerate(lab) if x != -100}
        assert all(lab[rs + k] == ids[rs + k] for k in chosen)
        for toks in s["item_tokens"]:  # whole items or nothing
            inter = chosen & set(toks)
            assert not inter or inter == set(toks)
        code = set().union(*map(set, s["item_tokens"])) if s["item_tokens"] else set()
        assert chosen - code <= set(s["prose_tokens"])

    with open(out / "ratios.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(segs) and float(rows[0]["ratio"]) >= 0
    assert sum(int(r["supervised_tokens"]) for r in rows) == stats["supervised_tokens"]
    items = pq.read_table(out / "items.parquet")
    assert items.num_rows == sum(len(s["item_tokens"]) for s in segs)
    assert int(pc_sum(items.column("selected"))) == stats["items_selected"]

    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment])
    assert "metrics.supervised_ratio" in runs.columns and runs["tags.mlflow.runName"].tolist() == ["select-codeblock"]


def pc_sum(col):
    import pyarrow.compute as pc

    return pc.sum(col).as_py()


def test_streamed_batches_give_the_labels_of_one_batch(cfg, pool_segments, monkeypatch):
    """select walks the segments in batches (twice): any batch size gives the same files, with
    dropped rows in between and budget groups (per-sample scope) across batch edges."""
    import codeblock.select.labels as L

    _, segs, scores = pool_segments
    segs = [dict(s, dropped=True) if k % 50 == 7 else s for k, s in enumerate(segs)]
    write_segments(cfg, segs)
    cfg.tracking.enabled = False
    out = {}
    for rows in (10**6, 37):
        monkeypatch.setattr(L, "SEGMENT_BATCH_ROWS", rows)
        for scope in ("global", "per_sample"):
            cfg.select.scope, cfg.paths.labels_dir = scope, str(Path(cfg.paths.labels_dir).parent / f"b{rows}")
            m = run_select(cfg, "codeblock", scores=scores)["metrics"]
            d = Path(cfg.paths.labels_dir) / "codeblock"
            out[rows, scope] = (m, pq.read_table(d / "labels.parquet").to_pylist(),
                                pq.read_table(d / "items.parquet").to_pandas(), (d / "prose_words.json").read_text())
    for scope in ("global", "per_sample"):
        one, many = out[10**6, scope], out[37, scope]
        assert one[0] == many[0] and one[1] == many[1] and one[2].equals(many[2]) and one[3] == many[3]
        assert one[0]["samples"] == sum(not s["dropped"] for s in segs) < len(segs) and one[0]["supervised_tokens"] > 0


def test_priority_prefers_high_utility_and_reach(cfg, pool_segments):
    _, segs, scores = pool_segments
    write_segments(cfg, segs)
    cfg.tracking.enabled = False
    run_select(cfg, "codeblock", scores=scores)
    items = pq.read_table(Path(cfg.paths.labels_dir) / "codeblock" / "items.parquet").to_pandas()
    sel = items[items.selected]
    assert (sel.U_pct >= cfg.select.tau).all()
    assert sel.P.min() >= items[~items.selected & (items.P > 0)].P.quantile(0.5)
    assert sel.reach.mean() > items.reach.mean()


def test_per_sample_scope_on_pool_and_budget_knob(cfg, pool_segments):
    _, segs, scores = pool_segments
    write_segments(cfg, segs)
    cfg.tracking.enabled = False
    cfg.select.scope = "per_sample"
    stats = run_select(cfg, "codeblock", scores=scores)["metrics"]
    # per sample, an item larger than 1.5x the sample's budget can never be taken: undershoot is expected
    assert 0.5 * cfg.select.budget <= stats["supervised_ratio"] <= 1.5 * cfg.select.budget
    assert stats["sample_ratio_p50"] > 0
    cfg.select.scope, cfg.select.budget = "global", 0.05
    stats = run_select(cfg, "codeblock", scores=scores)["metrics"]
    assert abs(stats["supervised_ratio"] - 0.05) <= 0.005


def test_unknown_method_is_refused(cfg):
    with pytest.raises(ValueError, match="not one of"):
        run_select(cfg, "nope")


def test_segment_score_select_contract(cfg, tiny_model_dir):
    """The real chain on a tiny random model: segment -> score (stage 3) -> select, token indices aligned."""
    from codeblock.select.score import run_score
    from codeblock.select.segment import run_segment

    cfg.model.name_or_path = tiny_model_dir
    cfg.model.device = "cpu"
    cfg.tracking.enabled = False
    cfg.segment.workers = 1
    cfg.score.max_length = 256
    cfg.select.budget = 0.1
    rows = [dict(r, source="stdlib") for r in stdlib_pairs(24)]
    Path(cfg.paths.filtered).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), cfg.paths.filtered)
    run_segment(cfg)
    run_score(cfg)
    m = run_select(cfg)["metrics"]  # scores loaded through codeblock.select.score.load_scores
    assert m["samples"] == 24 and abs(m["supervised_ratio"] - 0.1) <= 0.02 and m["code_tokens"] > 0
    cfg.score.max_length = 200  # a different tokenization must be refused, not silently misaligned
    run_segment(cfg)
    with pytest.raises((BadRowError, FileNotFoundError)):
        run_select(cfg)


def word_segments():
    """Three samples of 10 response tokens: one item each, prose words of 1-2 tokens; sentence 7
    (boilerplate) is in all three samples, sentences 1-3 in one each."""
    def row(i, words, texts, keys):
        return {"id": i, "input_ids": list(range(100, 113)), "response_start": 3, "response_end": 13,
                "item_tokens": [[0, 1, 2, 3]], "item_core": [[0, 1]], "item_lines": [[0, 2]], "item_reach": [0.0],
                "item_bridge": [0.0], "prose_tokens": sorted(k for w in words for k in w), "prose_words": words,
                "prose_word_text": texts, "prose_word_sentence": keys, "dropped": False}

    segs = [row("A", [[5, 6], [8]], ["outerlist", "here"], [1, 7]),
            row("B", [[5], [8]], ["sorting", "here"], [2, 7]),
            row("C", [[5], [8, 9]], ["stable", "here"], [3, 7])]
    g = [np.array([.5, .5, 0, 0, 0, .6, .9, 0, .95, 0]),   # A: outerlist mean .75, here .95
         np.array([.4, .4, 0, 0, 0, .3, 0, 0, .9, 0]),    # B: sorting .3, here .9
         np.array([.3, .3, 0, 0, 0, .35, 0, 0, .8, .8])]  # C: stable .35, here .8
    return segs, g


@pytest.mark.parametrize("key_shift", [0, -(2 ** 62)])  # sentence keys are signed 64-bit hashes
def test_prose_words_whole_and_boilerplate_discounted(cfg, key_shift):
    segs, g = word_segments()
    for r in segs:
        r["prose_word_sentence"] = [k + key_shift for k in r["prose_word_sentence"]]
    cfg.select.budget, cfg.select.nl_share, cfg.select.tau = 0.2, 0.5, 0.0  # 30 tokens: budget 6, prose 3
    # rho = 1: "here" recurs in 3 samples -> .95/3, .9/3, .8/3 < outerlist .75, stable .35, sorting .3
    # prose budget 3: outerlist (2 tokens), then stable (1): 3 tokens; both of outerlist's pieces
    sel = select_codeblock(cfg, segs, g)
    assert sel.words == [("outerlist", 1), ("stable", 1)]
    assert {5, 6} <= set(sel.samples[0].selected.tolist()) and 8 not in sel.samples[0].selected
    assert sel.samples[2].selected.tolist().count(5) == 1 and sel.extra["prose_words_selected"] == 2
    # no discount: the boilerplate "here" ranks first everywhere: A (.95, 1 token), B (.9, 1), then
    # C's (.8, 2 tokens: 2 + 2 <= 3 + 2/2, taken) -> 4 prose tokens, all boilerplate
    cfg.select.prose_recurrence_power = 0.0
    sel = select_codeblock(cfg, segs, g)
    assert sel.words == [("here", 3)] and sum(s.n_prose for s in sel.samples) == 4


@pytest.mark.parametrize("granularity,expect_units", [("item", 3), ("line", 6), ("token", 12)])
def test_granularity_units_and_same_budget(cfg, granularity, expect_units):
    segs, g = word_segments()
    cfg.select.budget, cfg.select.nl_share, cfg.select.tau, cfg.select.granularity = 0.2, 0.0, 0.0, granularity
    sel = select_codeblock(cfg, segs, g)
    assert sel.extra["units_total"] == expect_units
    n_sup = sum(len(s.selected) for s in sel.samples)
    # budget 6 tokens; items are 4 tokens: the first, then a second (8 <= 6 + 4/2); lines and tokens fit exactly
    assert n_sup == (8 if granularity == "item" else 6)
    if granularity == "line":  # lines: tokens [0, 1] (core 0, 1: U .5/.4/.3) and [2, 3] (no core: never)
        assert [s.selected.tolist() for s in sel.samples] == [[0, 1], [0, 1], [0, 1]]
    if granularity == "token":  # the 6 highest single tokens of the items: A0, A1, B0, B1, C0, C1
        assert [s.selected.tolist() for s in sel.samples] == [[0, 1], [0, 1], [0, 1]]


@pytest.mark.parametrize("rerank,reach_counts", [("both", True), ("reach", True), ("bridge", False), ("none", False)])
def test_rerank_switch(cfg, rerank, reach_counts):
    segs, gce = hand_segments()  # only A2 has Reach (1.0); no Bridge anywhere
    cfg.select.budget, cfg.select.nl_share, cfg.select.tau, cfg.select.alpha = 0.5, 0.2, 0.5, 0.5
    cfg.select.rerank = rerank
    sel = select_codeblock(cfg, segs, gce)
    # with Reach, P(A2) = .9 beats B1 (.8): A0 + A2 (see test_select_codeblock_by_hand); without, B1 wins
    expect_a = [0, 1, 2, 5, 6, 7, 9] if reach_counts else [0, 1, 2, 9]
    assert sel.samples[0].selected.tolist() == expect_a
