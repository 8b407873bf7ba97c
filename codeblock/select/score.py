"""Stage 3: per-token generalized cross-entropy of every response token, cached in shards.

One teacher-forced forward pass of the scoring model (`model.*`) over prompt + response, laid out
by the chat template exactly as training sees it (`codeblock.core.tokenize.encode_pairs`), gives p,
the probability of each gold response token, and GCE_q(p) (`codeblock.select.gce`).

`score.mode`:
- `base`: gce = GCE of the model being fine-tuned;
- `excess`: gce = GCE_base - GCE_ref, the reference being `score.ref_model` or a briefly
  warmed-up copy of the base model (`codeblock.select.gce.warm_up_reference`).

Batches are built by token budget (`score.batch_tokens` = rows x padded length) after sorting
by length (bucketing), right-padded; the device and dtype come from `model.*`. The cache layout
(shards of `score.shard_size` samples, `index.json`) is in `codeblock.select.score_cache`: a re-run
skips every shard whose ids and sample hashes match, and reuses per-sample rows from stale shards
(same id and text) before computing anything.

Several processes (GPUs): launch the same command with `torchrun` or `accelerate launch`
(`RANK`/`WORLD_SIZE` in the environment). The shards still to compute are dealt round-robin to
the ranks; each rank loads the model on its own device (`cuda:LOCAL_RANK`), writes its shards
atomically, and rank 0 writes `index.json` after every rank has finished. Scores equal those of
one process (same batches per shard), and an interrupted run resumes with any number of ranks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from codeblock.core.io import BadRowError, sha256_file, write_json, write_parquet
from codeblock.core.ranks import Ranks, rank_device
from codeblock.select.gce import gce_from_logp, make_batches, response_logprobs, warm_up_reference
from codeblock.select.score_cache import (
    SHARD_GLOB,
    load_scores,
    mean_gce,
    reusable_rows,
    sample_hash,
    scoring_identity,
    shard_is_done,
    shard_path,
    shard_table,
)
from codeblock.stages import StageContext, StageResult, stage_hash

log = logging.getLogger(__name__)

__all__ = ["gce_from_logp", "load_scores", "make_batches", "run_score", "SHARD_GLOB"]
COUNTS = ("samples_scored", "samples_reused", "tokens_scored", "response_tokens_scored")


def _read_filtered(path: str) -> list[dict]:
    import pyarrow.parquet as pq

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: filtered pool not found (run `codeblock filter` first)")
    table = pq.read_table(path)
    cols = [c for c in ("id", "instruction", "response", "quality", "longtail") if c in table.column_names]
    rows = table.select(cols).to_pylist()
    for i, r in enumerate(rows):
        for field in ("id", "instruction", "response"):
            if not isinstance(r.get(field), str):
                raise BadRowError(path, i, field, f"expected a string, got {type(r.get(field)).__name__}")
    return rows


def _score_shard(models, tok, pad_id: int, part: list[dict], sc, excess: bool, bar, counts: dict) -> dict[int, dict]:
    """GCE rows for the samples of `part` (index -> row fields), batched by token budget."""
    from codeblock.core.tokenize import encode_pairs

    model, ref = models
    encs = encode_pairs(tok, [(r["instruction"], r["response"]) for r in part], sc.max_length)
    results: dict[int, dict] = {}
    for batch in make_batches([len(e.input_ids) for e in encs], sc.batch_tokens):
        be = [encs[j] for j in batch]
        base_lp = response_logprobs(model, be, pad_id)
        ref_lp = response_logprobs(ref, be, pad_id) if excess else None
        for n_, j in enumerate(batch):
            e = encs[j]
            base = gce_from_logp(base_lp[n_], sc.gce_q).astype(np.float32)
            res = {"input_ids": np.asarray(e.input_ids, dtype=np.int32),
                   "response_start": e.response_start, "response_end": e.response_end}
            if excess:
                refg = gce_from_logp(ref_lp[n_], sc.gce_q).astype(np.float32)
                res.update(gce=base - refg, base_gce=base, ref_gce=refg,
                           ce=(ref_lp[n_] - base_lp[n_]).astype(np.float32))
            else:
                res.update(gce=base, ce=-base_lp[n_].astype(np.float32))
            results[j] = res
        counts["tokens_scored"] += sum(len(e.input_ids) for e in be)
        counts["response_tokens_scored"] += sum(e.n_response_tokens for e in be)
        bar.update(len(batch))
    return results


def _load_models(cfg, rows: list[dict], progress: bool):
    from codeblock.core.models import load_model, load_tokenizer

    sc = cfg.score
    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model)
    ref = None
    if sc.mode == "excess":
        ref = load_model(cfg.model, sc.ref_model) if sc.ref_model else warm_up_reference(cfg, rows, tok, progress)
    return tok, (model, ref)


def run_score(cfg, progress: bool = True) -> dict:
    """Score every row of `paths.filtered` (module docstring); returns outputs and metrics."""
    from codeblock.core.models import resolve_device
    from codeblock.core.tracking import stage_run

    sc = cfg.score
    if sc.mode not in ("base", "excess"):
        raise ValueError(f"score.mode must be base or excess, got {sc.mode!r}")
    excess = sc.mode == "excess"
    rows = _read_filtered(cfg.paths.filtered)
    use_cuda = resolve_device(cfg.model).type == "cuda"
    ranks = Ranks.from_env(use_cuda)
    try:
        cfg = rank_device(cfg, use_cuda, ranks)
        ident = scoring_identity(cfg)
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        params = {f"score.{k}": v for k, v in cfg.to_dict()["score"].items()}
        params.update({"model.name_or_path": cfg.model.name_or_path, "score.model_key": key, "ranks": ranks.world})
        tcfg = cfg if ranks.rank == 0 else dataclasses.replace(
            cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False))
        with stage_run(tcfg, "score", params=params) as tr:
            res = _run(cfg, rows, excess, ranks, ident, key, progress)
            tr.log_metrics(res["metrics"])
        return res
    finally:
        ranks.close()


def _run(cfg, rows: list[dict], excess: bool, ranks: Ranks, ident: dict, key: str, progress: bool) -> dict:
    sc = cfg.score
    main = ranks.rank == 0
    folder = Path(cfg.paths.scores_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    if main:
        write_json(folder / "key.json", {"model_key": key, "identity": ident})

    size = max(1, sc.shard_size)
    n_shards = math.ceil(len(rows) / size)
    shards = [rows[k * size : (k + 1) * size] for k in range(n_shards)]
    hashes = [[sample_hash(r["instruction"], r["response"]) for r in part] for part in shards]
    done = {
        k for k in range(n_shards)
        if shard_is_done(shard_path(folder, k), [r["id"] for r in shards[k]], hashes[k], key)
    }
    todo = [k for k in range(n_shards) if k not in done]
    ranks.barrier()  # every rank has seen the same finished shards before any writes
    mine = todo[ranks.rank :: ranks.world]
    needed = {r["id"]: h for k in mine for r, h in zip(shards[k], hashes[k], strict=True)}
    reuse = reusable_rows(folder, needed, {shard_path(folder, k) for k in done})

    counts = dict.fromkeys(COUNTS, 0)
    elapsed = 0.0
    if mine:
        tok, models = _load_models(cfg, rows, progress and main)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        n_pending = sum(1 for k in mine for r in shards[k] if r["id"] not in reuse)
        bar = tqdm(total=n_pending, desc=f"score (rank {ranks.rank}/{ranks.world})" if ranks.world > 1 else "score",
                   unit="sample", disable=not (progress and main))
        for k in mine:
            part, part_hashes = shards[k], hashes[k]
            fresh = [i for i, r in enumerate(part) if r["id"] not in reuse]
            t0 = time.perf_counter()
            got = _score_shard(models, tok, pad_id, [part[i] for i in fresh], sc, excess, bar, counts)
            elapsed += time.perf_counter() - t0
            results = {fresh[j]: res for j, res in got.items()}
            if elapsed > 0:
                bar.set_postfix(tok_s=f"{counts['tokens_scored'] / elapsed:.0f}", shard=f"{k + 1}/{n_shards}")
            out_rows = [{"id": r["id"], "sample_hash": part_hashes[i], **(results.get(i) or reuse[r["id"]])}
                        for i, r in enumerate(part)]
            counts["samples_scored"] += len(fresh)
            counts["samples_reused"] += len(part) - len(fresh)
            write_parquet(shard_path(folder, k), shard_table(out_rows, excess),
                          {"stage": "score", "model_key": key, "identity": ident, "shard": k, "rank": ranks.rank,
                           "config_hash": stage_hash(cfg, "score")})
        bar.close()

    per_rank = ranks.gather({**counts, "seconds": elapsed})  # also the barrier before the index
    metrics: dict[str, float] = {"samples": len(rows), "shards": n_shards, "shards_cached": len(done),
                                 "ranks": ranks.world}
    metrics.update({c: sum(p[c] for p in per_rank) for c in COUNTS})
    metrics["seconds"] = max(p["seconds"] for p in per_rank)
    metrics["tokens_per_s"] = metrics["tokens_scored"] / metrics["seconds"] if metrics["seconds"] > 0 else 0.0
    if main:
        if metrics["samples_scored"] or done:
            metrics["mean_gce"] = mean_gce(folder, n_shards)
        write_json(folder / "index.json", {
            "model_key": key, "identity": ident, "mode": sc.mode, "q": sc.gce_q, "samples": len(rows),
            "shards": [shard_path(folder, k).name for k in range(n_shards)],
            "input": {"filtered": cfg.paths.filtered, "sha256": sha256_file(cfg.paths.filtered)},
        })
        log.info("score: %d samples, %d shards (%d cached), %d rank(s), %.1f tokens/s", len(rows), n_shards,
                 len(done), ranks.world, metrics["tokens_per_s"])
    ranks.barrier()  # index.json is written before any rank returns
    return {"outputs": [str(folder)], "metrics": metrics, "model_key": key}


def run(cfg, ctx: StageContext) -> StageResult:
    return StageResult.from_dict("score", run_score(cfg, progress=ctx.progress))


def summary(res: StageResult) -> str:
    m = res.metrics
    ranks = f" on {m['ranks']} ranks" if m.get("ranks", 1) > 1 else ""
    lines = [f"score: {m['samples']} samples in {m['shards']} shard(s) ({m['shards_cached']} cached, "
             f"{m['samples_reused']} samples reused){ranks} -> {res.outputs[0]}"]
    if m["samples_scored"]:
        lines.append(f"  scored {m['samples_scored']} samples, {m['tokens_scored']} tokens in {m['seconds']:.1f}s "
                     f"({m['tokens_per_s']:.0f} tokens/s)")
    if "mean_gce" in m:
        lines.append(f"  mean gce {m['mean_gce']:.4f}")
    return "\n".join(lines)
