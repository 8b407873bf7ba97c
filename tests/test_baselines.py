"""Baselines share select's interface and files: full, full_filtered, random_tokens/items, token_cleaning, rho1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_select import stdlib_pairs, write_segments

from codeblock.select.methods import run_select


@pytest.fixture
def setup(cfg, default_model_dir):
    """A pool of 200 pairs (filtered = first 150), their segments and synthetic excess scores."""
    from codeblock.select.segment import segment_rows

    cfg.model.name_or_path = default_model_dir
    cfg.tracking.enabled = False
    rows = stdlib_pairs(200)
    for path, part in ((cfg.paths.pool, rows), (cfg.paths.filtered, rows[:150])):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([dict(r, source="stdlib") for r in part]), path)
    segs = segment_rows(cfg, [(r["id"], r["instruction"], r["response"]) for r in rows[:150]], workers=1,
                        progress=False)
    write_segments(cfg, segs)
    rng = np.random.default_rng(1)
    scores = {s["id"]: {"input_ids": s["input_ids"], "response_start": s["response_start"],
                        "response_end": s["response_end"],
                        "gce": rng.normal(0, 1, s["response_end"] - s["response_start"]).astype(np.float32)}
              for s in segs}
    return cfg, rows, segs, scores


def labels_of(cfg, method):
    return {r["id"]: r for r in pq.read_table(Path(cfg.paths.labels_dir) / method / "labels.parquet").to_pylist()}


def test_full_and_full_filtered_supervise_every_response_token(setup):
    cfg, rows, segs, _ = setup
    from codeblock.core.models import load_tokenizer
    from codeblock.core.tokenize import encode_pair

    m = run_select(cfg, "full")["metrics"]
    assert m["samples"] == 200 and m["supervised_ratio"] == 1.0
    lab = labels_of(cfg, "full")
    tok = load_tokenizer(cfg.model)
    r = rows[170]  # only in the unfiltered pool
    enc = encode_pair(tok, r["instruction"], r["response"], cfg.score.max_length)
    got = lab[r["id"]]
    assert got["input_ids"] == enc.input_ids
    assert got["labels"][:enc.response_start] == [-100] * enc.response_start
    assert got["labels"][enc.response_start:enc.response_end] == enc.input_ids[enc.response_start:enc.response_end]
    assert all(x == -100 for x in got["labels"][enc.response_end:])  # end-of-turn suffix is not a response token
    m2 = run_select(cfg, "full_filtered")["metrics"]
    assert m2["samples"] == 150 and m2["supervised_ratio"] == 1.0
    seg = {s["id"]: s for s in segs}
    some = next(iter(labels_of(cfg, "full_filtered").values()))
    assert some["input_ids"] == seg[some["id"]]["input_ids"]  # same tokenization as segment/score


@pytest.mark.parametrize("scope", ["global", "per_sample"])
def test_random_tokens_and_items_meet_the_budget(setup, scope):
    cfg, _, segs, _ = setup
    cfg.select.scope = scope
    cfg.select.budget = 0.05
    mt = run_select(cfg, "random_tokens")["metrics"]
    assert abs(mt["supervised_ratio"] - 0.05) <= (0.002 if scope == "global" else 0.01)
    mi = run_select(cfg, "random_items")["metrics"]
    assert abs(mi["supervised_ratio"] - 0.05) <= 0.3 * 0.05
    lab = labels_of(cfg, "random_items")
    for s in segs:  # whole items only
        rs = s["response_start"]
        chosen = {k - rs for k, x in enumerate(lab[s["id"]]["labels"]) if x != -100}
        for toks in s["item_tokens"]:
            assert not (chosen & set(toks)) or set(toks) <= chosen
    first = labels_of(cfg, "random_tokens")
    run_select(cfg, "random_tokens")
    assert labels_of(cfg, "random_tokens") == first  # seeded
    cfg.select.seed = 7
    run_select(cfg, "random_tokens")
    assert labels_of(cfg, "random_tokens") != first


def test_token_cleaning_is_the_global_top_k(setup):
    cfg, _, segs, scores = setup
    cfg.score.mode = "excess"
    m = run_select(cfg, "token_cleaning", scores=scores)["metrics"]
    # reference: one (score, sample, position) tuple per token, globally sorted
    flat = sorted(((float(v), s["id"], s["response_start"] + k) for s in segs for k, v in enumerate(scores[s["id"]]["gce"])),
                  key=lambda x: -x[0])
    k = int(round(cfg.select.budget * len(flat)))
    expect = {(i, p) for _, i, p in flat[:k]}
    lab = labels_of(cfg, "token_cleaning")
    got = {(i, p) for i, r in lab.items() for p, x in enumerate(r["labels"]) if x != -100}
    assert got == expect and m["supervised_tokens"] == k and m["excess_scores"] == 1.0


def test_rho1_is_the_per_sample_top_k(setup):
    cfg, _, segs, scores = setup
    run_select(cfg, "rho1", scores=scores)
    lab = labels_of(cfg, "rho1")
    for s in segs[:40]:
        g = np.asarray(scores[s["id"]]["gce"])
        k = int(round(cfg.select.budget * len(g)))
        expect = set((s["response_start"] + np.argsort(-g, kind="stable")[:k]).tolist())
        got = {p for p, x in enumerate(lab[s["id"]]["labels"]) if x != -100}
        assert got == expect
