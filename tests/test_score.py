"""Stage 3 (score) with a tiny random Llama built here: the GCE formula against a direct
computation from logits, batching invariance, the shard cache (skip, resume, per-sample reuse),
and the excess mode."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codeblock.select.gce import gce_from_logp, make_batches
from codeblock.select.score import run_score
from codeblock.select.score_cache import ScoreLookup, load_scores

ROWS = [
    ("s0", "Add two numbers.", "```python\ndef add(a, b):\n    return a + b\n```"),
    ("s1", "Reverse a string.", "Use slicing:\n\n```python\ndef rev(s):\n    return s[::-1]\n```\nDone."),
    ("s2", "Say hi.", "hi"),
    ("s3", "Sum a list, with a long explanation.",
     "We walk the list once and keep a running total. " * 6 + "\n```python\ntotal = sum(xs)\n```"),
    ("s4", "Größe berechnen", "```python\ndef größe(x):\n    return len(x)  # naïve ✓\n```"),
]


@pytest.fixture(scope="session")
def peaked_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny random Llama with its (tied) output embedding scaled up, so token probabilities
    spread over many orders of magnitude and GCE differs from token to token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("peaked")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


def write_filtered(path, rows=ROWS):
    table = pa.Table.from_pylist([
        {"id": i, "instruction": ins, "response": resp, "source": "t", "quality": 1.0 - 0.1 * k, "longtail": 0.5}
        for k, (i, ins, resp) in enumerate(rows)
    ])
    pq.write_table(table, path)


@pytest.fixture
def scfg(cfg, peaked_model_dir, tmp_path):
    cfg.model.name_or_path = peaked_model_dir
    cfg.model.device = "cpu"
    cfg.score.shard_size = 2
    cfg.score.batch_tokens = 256
    cfg.tracking.enabled = False
    write_filtered(tmp_path / "filtered.parquet")
    cfg.paths.filtered = str(tmp_path / "filtered.parquet")
    return cfg


def direct_gce(model_dir, tok, input_ids, start, end, q):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([list(input_ids)])).logits[0].double()
    probs = torch.softmax(logits, dim=-1)
    p = np.array([probs[t - 1, input_ids[t]].item() for t in range(start, end)])
    return (1 - p**q) / q if q else -np.log(p)


def test_gce_matches_direct_computation(scfg, tokenizer, monkeypatch):
    from codeblock.core.tokenize import encode_pair

    # mlflow.set_tracking_uri (called by an earlier test) exports MLFLOW_TRACKING_URI, which
    # tracking.tracking_uri prefers over the config: clear it so this test's store is used
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    scfg.tracking.enabled = True
    res = run_score(scfg, progress=False)
    scores = load_scores(scfg)
    assert set(scores) == {r[0] for r in ROWS}
    lookup = ScoreLookup(scfg)  # select's reader: the same rows, one shard held at a time
    assert len(lookup) == len(scores) and lookup.get("nope") is None
    for id_ in [r[0] for r in ROWS][::-1]:  # out of shard order too
        got, want = lookup.get(id_), scores[id_]
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    q = scfg.score.gce_q
    spread = []
    for id_, ins, resp in ROWS:
        s = scores[id_]
        enc = encode_pair(tokenizer, ins, resp, scfg.score.max_length)
        assert s["input_ids"].tolist() == enc.input_ids
        assert (s["response_start"], s["response_end"]) == (enc.response_start, enc.response_end)
        assert s["gce"].dtype == np.float32 and len(s["gce"]) == enc.response_end - enc.response_start
        want = direct_gce(scfg.model.name_or_path, tokenizer, enc.input_ids, enc.response_start, enc.response_end, q)
        np.testing.assert_allclose(s["gce"], want, atol=2e-5, rtol=1e-4)
        assert np.all(s["gce"] >= -1e-6) and np.all(s["gce"] <= 1 / q + 1e-6)
        # the ce column is plain cross-entropy -log p of the same tokens: GCE_q = (1 - exp(-q ce)) / q
        np.testing.assert_allclose((1 - np.exp(-q * s["ce"].astype(np.float64))) / q, want, atol=2e-5, rtol=1e-4)
        spread.append(np.ptp(want))
    assert max(spread) > 0.5  # the peaked model makes the comparison meaningful
    m = res["metrics"]
    assert m["samples_scored"] == len(ROWS) and m["tokens_per_s"] > 0
    assert m["response_tokens_scored"] == sum(len(v["gce"]) for v in scores.values())
    import mlflow

    mlflow.set_tracking_uri(scfg.tracking.tracking_uri)
    run = mlflow.search_runs(experiment_names=[scfg.tracking.experiment], output_format="list")[0]
    assert run.data.metrics["samples_scored"] == len(ROWS) and run.data.metrics["tokens_per_s"] > 0


def test_batching_invariance_and_truncation(scfg, tmp_path):
    scfg.score.max_length = 40  # s3 is longer: truncated, never padded into the score
    results = []
    for budget in (16, 90, 100_000):
        scfg.score.batch_tokens = budget
        scfg.paths.scores_dir = str(tmp_path / f"scores-{budget}")
        run_score(scfg, progress=False)
        results.append(load_scores(scfg))
    for other in results[1:]:
        for id_ in results[0]:
            assert other[id_]["input_ids"].tolist() == results[0][id_]["input_ids"].tolist()
            np.testing.assert_allclose(other[id_]["gce"], results[0][id_]["gce"], atol=1e-5)
    s3 = results[0]["s3"]
    assert len(s3["input_ids"]) == 40 and s3["response_end"] == 40


def test_cache_skip_resume_and_reuse(scfg):
    first = run_score(scfg, progress=False)
    assert first["metrics"]["shards"] == 3 and first["metrics"]["samples_scored"] == 5
    before = load_scores(scfg)
    folder = __import__("pathlib").Path(first["outputs"][0])
    # a re-run skips every finished shard
    again = run_score(scfg, progress=False)["metrics"]
    assert again["shards_cached"] == 3 and again["samples_scored"] == 0
    # an interrupted run (a shard never written) resumes with only that shard
    (folder / "shard-00001.parquet").unlink()
    resumed = run_score(scfg, progress=False)["metrics"]
    assert resumed["shards_cached"] == 2 and resumed["samples_scored"] == 2
    after = load_scores(scfg)
    for id_ in before:
        np.testing.assert_array_equal(after[id_]["gce"], before[id_]["gce"])
    # an edited sample invalidates its shard; its unchanged neighbour is reused, not recomputed
    rows = list(ROWS)
    rows[2] = ("s2", "Say hi.", "hello there, friend")
    write_filtered(scfg.paths.filtered, rows)
    edited = run_score(scfg, progress=False)["metrics"]
    assert edited["shards_cached"] == 2 and edited["samples_scored"] == 1 and edited["samples_reused"] == 1
    new = load_scores(scfg)
    assert len(new["s2"]["gce"]) != len(before["s2"]["gce"])
    np.testing.assert_array_equal(new["s3"]["gce"], before["s3"]["gce"])
    # a smaller pool leaves the index at its own shards; the others stay (a cache is never deleted
    # without a flag) and serve as per-sample reuse when the pool grows again
    write_filtered(scfg.paths.filtered, rows[:2])
    small = run_score(scfg, progress=False)["metrics"]
    assert small["shards"] == 1 and small["samples_scored"] == 0
    assert json.loads((folder / "index.json").read_text())["shards"] == ["shard-00000.parquet"]
    assert len(list(folder.glob("shard-*.parquet"))) == 3
    assert set(load_scores(scfg)) == {"s0", "s1"}


def test_excess_mode(scfg, tiny_model_dir):
    base_key = run_score(scfg, progress=False)["model_key"]
    # reference = the same weights: excess is exactly zero
    scfg.score.mode = "excess"
    scfg.score.ref_model = scfg.model.name_or_path
    res = run_score(scfg, progress=False)
    assert res["model_key"] != base_key
    table = pq.read_table(f"{res['outputs'][0]}/shard-00000.parquet")
    assert {"base_gce", "ref_gce", "gce"} <= set(table.column_names)
    for row in table.to_pylist():
        assert len(row["gce"]) == len(row["base_gce"]) == len(row["ref_gce"]) == row["response_end"] - row["response_start"]
        np.testing.assert_allclose(row["gce"], 0.0, atol=1e-6)
    # reference = a warmed-up copy: it learned the clean samples, so it finds them easier
    # (the plain tiny model: the peaked one sits where GCE saturates at 1/q)
    scfg.model.name_or_path = tiny_model_dir
    scfg.score.ref_model = ""
    scfg.score.ref_warmup_samples = 2
    scfg.score.ref_warmup_steps = 3
    scfg.score.ref_warmup_lr = 1e-3
    res = run_score(scfg, progress=False)
    rows = [r for p in sorted(__import__("pathlib").Path(res["outputs"][0]).glob("shard-*.parquet"))
            for r in pq.read_table(p).to_pylist()]
    assert {r["id"] for r in rows} == {r[0] for r in ROWS}
    q = scfg.score.gce_q
    for r in rows:
        np.testing.assert_allclose(r["gce"], np.subtract(r["base_gce"], r["ref_gce"]), atol=1e-6)
        # ce = CE_base - CE_ref, plain cross-entropy (CE = -log(1 - q GCE) / q)
        ce_of = lambda g: -np.log1p(-q * np.asarray(g, dtype=np.float64)) / q  # noqa: E731
        np.testing.assert_allclose(r["ce"], ce_of(r["base_gce"]) - ce_of(r["ref_gce"]), atol=2e-3, rtol=1e-3)
    warm = [r for r in rows if r["id"] in ("s0", "s1")]  # the two highest-quality rows
    assert all(np.mean(r["gce"]) > 0 for r in warm)
    scores = load_scores(scfg)
    assert set(scores["s0"]) == {"input_ids", "response_start", "response_end", "gce", "ce"}


def test_make_batches_respects_budget():
    lengths = [5, 40, 12, 12, 90, 3, 33, 7]
    batches = make_batches(lengths, 64)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert width * len(b) <= 64 or len(b) == 1
    assert [4] in batches  # longer than the budget: alone


def test_gce_formula_limits():
    logp = np.log(np.array([1.0, 0.5, 1e-6]))
    np.testing.assert_allclose(gce_from_logp(logp, 0.7), (1 - np.array([1.0, 0.5, 1e-6]) ** 0.7) / 0.7)
    np.testing.assert_allclose(gce_from_logp(logp, 0.0), -logp)
    np.testing.assert_allclose(gce_from_logp(logp, 1e-6), -logp, rtol=1e-4)  # q -> 0 is CE
    assert gce_from_logp(np.array([0.0]), 0.7)[0] == 0.0
    assert gce_from_logp(np.array([-1e9]), 0.7)[0] == pytest.approx(1 / 0.7)
    assert math.isclose(float(gce_from_logp(np.log(np.array([0.25])), 1.0)[0]), 0.75)
