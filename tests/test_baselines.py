"""Baselines share select's interface and files: full, full_filtered, random_tokens/items, token_cleaning, rho1,
ds2; method variants (ablations)."""

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
                        "gce": rng.normal(0, 1, s["response_end"] - s["response_start"]).astype(np.float32),
                        "ce": rng.normal(0, 1, s["response_end"] - s["response_start"]).astype(np.float32)}
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
    flat = sorted(((float(v), s["id"], s["response_start"] + k) for s in segs for k, v in enumerate(scores[s["id"]]["ce"])),
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
        g = np.asarray(scores[s["id"]]["ce"])  # excess plain CE, not GCE
        k = int(round(cfg.select.budget * len(g)))
        expect = set((s["response_start"] + np.argsort(-g, kind="stable")[:k]).tolist())
        got = {p for p, x in enumerate(lab[s["id"]]["labels"]) if x != -100}
        assert got == expect


def test_token_cleaning_and_rho1_follow_the_published_rule_on_hand_made_losses():
    """Both rank tokens by the excess loss CE_base - CE_ref = log p_ref - log p_base (plain
    cross-entropy). Token Cleaning keeps one global top-k; Rho-1 the top k of each sample. The
    probabilities are chosen so that a GCE difference (q = 0.7) would rank differently."""
    from codeblock.select.baselines import global_top_k, per_sample_top_k
    from codeblock.select.score import gce_from_logp

    p_base = {"A": [0.5, 1e-4, 0.9, 0.05], "B": [0.3, 0.6, 1e-3, 0.2, 0.99, 0.02]}
    p_ref = {"A": [0.5, 1e-2, 0.2, 0.5], "B": [0.9, 0.6, 0.5, 0.2, 0.99, 0.9]}
    ce = [np.log(p_ref[k]) - np.log(p_base[k]) for k in "AB"]
    # excess CE by hand: A = [0, ln 100, ln(2/9), ln 10]; B = [ln 3, 0, ln 500, 0, 0, ln 45]
    assert np.round(ce[0], 2).tolist() == [0.0, 4.61, -1.5, 2.3]
    assert np.round(ce[1], 2).tolist() == [1.1, 0.0, 6.21, 0.0, 0.0, 3.81]
    # 10 tokens, budget 0.4: global k = 4 -> B2 6.21, A1 4.61, B5 3.81, A3 2.30
    assert [x.tolist() for x in global_top_k(ce, 0.4)] == [[1, 3], [2, 5]]
    # budget 0.2: global k = 2 -> B2, A1 (A gets one, B one)
    assert [x.tolist() for x in global_top_k(ce, 0.2)] == [[1], [2]]
    # Rho-1, budget 0.5: k = 2 of A (A1, A3) and 3 of B (B2, B5, B0)
    assert [x.tolist() for x in per_sample_top_k(ce, 0.5)] == [[1, 3], [0, 2, 5]]
    # budget 0.2 per sample: round(0.8) = 1 of A (A1), round(1.2) = 1 of B (B2); globally also B2, A1
    assert [x.tolist() for x in per_sample_top_k(ce, 0.2)] == [[1], [2]]
    # a GCE difference saturates (GCE <= 1/q): it would not pick the same two tokens at budget 0.2
    gce = [gce_from_logp(np.log(p_base[k]), 0.7) - gce_from_logp(np.log(p_ref[k]), 0.7) for k in "AB"]
    assert [x.tolist() for x in global_top_k(gce, 0.2)] != [[1], [2]]


def test_ds2_keeps_best_rows_by_quality_then_longtail_with_full_loss(setup):
    cfg, rows, segs, _ = setup
    t = pq.read_table(cfg.paths.filtered)
    n = t.num_rows
    rng = np.random.default_rng(3)
    quality = rng.choice([0.5, 0.75, 1.0], n)
    longtail = rng.random(n)
    t = t.append_column("quality", pa.array(quality)).append_column("longtail", pa.array(longtail))
    pq.write_table(t, cfg.paths.filtered)
    ids = t.column("id").to_pylist()
    best = sorted(range(n), key=lambda i: (-quality[i], -longtail[i], ids[i]))
    cfg.select.ds2_keep = 10
    m = run_select(cfg, "ds2")["metrics"]
    lab = labels_of(cfg, "ds2")
    assert set(lab) == {ids[i] for i in best[:10]} and m["supervised_ratio"] == 1.0 and m["pool_samples"] == n
    cfg.select.ds2_keep = 0  # token-matched: about select.budget of all response tokens
    cfg.select.budget = 0.1
    m = run_select(cfg, "ds2")["metrics"]
    assert abs(m["share_of_pool_tokens"] - 0.1) < 0.03
    kept = set(labels_of(cfg, "ds2"))
    assert ids[best[0]] in kept


def test_method_variants_are_ablations_with_their_own_outputs(setup):
    from codeblock.core.config import ConfigError

    cfg, _, segs, scores = setup
    run_select(cfg, "codeblock", scores=scores)
    run_select(cfg, "codeblock+rerank=none+nl_share=0", scores=scores)
    base = Path(cfg.paths.labels_dir)
    import json

    plain = json.loads((base / "codeblock" / "stats.json").read_text())
    abl = json.loads((base / "codeblock+rerank=none+nl_share=0" / "stats.json").read_text())
    assert plain["prose_tokens"] > 0 and abl["prose_tokens"] == 0
    assert abl["mean_reach_selected"] <= plain["mean_reach_selected"]
    items = pq.read_table(base / "codeblock+rerank=none+nl_share=0" / "items.parquet").to_pylist()
    assert all(abs(x["P"] - x["U_pct"]) < 1e-6 for x in items if x["P"] > 0)  # no rerank: P = U percentile
    # utility=ce ranks by the ce column: a different selection from the same segments
    run_select(cfg, "codeblock+utility=ce", scores=scores)
    assert labels_of(cfg, "codeblock+utility=ce") != labels_of(cfg, "codeblock")
    with pytest.raises(ConfigError, match="not a select key"):
        run_select(cfg, "codeblock+alpha2=1", scores=scores)
    with pytest.raises(ConfigError, match="granularity"):
        run_select(cfg, "codeblock+granularity=word", scores=scores)
    with pytest.raises(ConfigError, match="only letters"):
        run_select(cfg, "codeblock+scope=a/b", scores=scores)
