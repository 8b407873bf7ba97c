"""Stage 3: per-token generalized cross-entropy of every response token, cached in shards.

One teacher-forced forward pass of the scoring model (`model.*`) over prompt + response, laid out
by the chat template exactly as training sees it (`codeblock.core.tokenize.encode_pairs`), gives p,
the probability of each gold response token, and

    GCE_q(p) = (1 - p**q) / q          (score.gce_q; q = 0 is cross-entropy -log p)

`score.mode`:
- `base`: gce = GCE of the model being fine-tuned;
- `excess`: gce = GCE_base - GCE_ref. The reference is `score.ref_model`, or when that is empty a
  copy of the base model warmed up with plain SFT (loss on every response token, AdamW,
  `score.ref_warmup_steps` steps at `score.ref_warmup_lr`) on the `score.ref_warmup_samples`
  highest-quality rows of the filtered pool (`quality`, then `longtail`, then id) - the
  Token Cleaning / Rho-1 recipe kept deliberately small. The warm-up is seeded (`score.seed`);
  on resume it is redone, not cached.

Batches are built by token budget (`score.batch_tokens` = rows x padded length) after sorting
by length (bucketing), right-padded; the device and dtype come from `model.*`.

Cache: `paths.scores_dir/<model_key>/shard-XXXXX.parquet`, `score.shard_size` samples per shard
in filtered-pool order, columns
    id (str), sample_hash (str), input_ids (list<int32>), response_start (int32),
    response_end (int32), gce (list<float32>, one per token in [response_start, response_end)),
    ce (list<float32>: the same in plain cross-entropy -log p; excess mode: CE_base - CE_ref, the
    score of Token Cleaning and Rho-1)
and, in excess mode, base_gce and ref_gce. `model_key` is a short hash of the scoring identity:
the model's identity (`codeblock.core.models.model_identity`: GGUF/weights hash, or hub id), dtype,
mode, q, max_length and, for excess, the reference's identity. A shard is written atomically
once complete; a re-run skips every shard whose ids and sample hashes match, and reuses per-sample
rows from stale shards (same id and text) before computing anything. `index.json` in the same
folder lists the shards of the last complete run; `load_scores(cfg)` reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from codeblock.core.io import BadRowError, read_parquet_metadata, sha256_file, write_json, write_parquet
from codeblock.stages import StageContext, StageResult, stage_hash

log = logging.getLogger(__name__)

SCORE_VERSION = 2  # bump when the computation changes: it is part of the cache key
SHARD_GLOB = "shard-*.parquet"


# ---------------------------------------------------------------------------------------------
# The formula and the forward pass


def gce_from_logp(logp, q: float):
    """GCE_q from log-probabilities (numpy or torch): (1 - exp(q * logp)) / q; -logp at q = 0."""
    if q == 0:
        return -logp
    exp = np.exp if isinstance(logp, np.ndarray) else (lambda x: x.exp())
    return (1.0 - exp(q * logp)) / q


def make_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that rows x (longest row) <= batch_tokens, longest rows first (an
    out-of-memory shows at once). A row longer than the budget gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]  # sorted: the first row is the longest
        if cur and width * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _pad(encs: list, pad_id: int, device):
    import torch

    width = max(len(e.input_ids) for e in encs)
    ids = torch.full((len(encs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    for b, e in enumerate(encs):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[b, : len(e.input_ids)] = 1
    return ids.to(device), mask.to(device)


def response_logprobs(model, encs: list, pad_id: int) -> list[np.ndarray]:
    """log p(gold token) for each response token of each encoded pair (one forward pass)."""
    import torch

    for e in encs:
        if e.response_start < 1:
            raise ValueError("a response token at position 0 has no prediction (empty prompt)")
    device = next(model.parameters()).device
    ids, mask = _pad(encs, pad_id, device)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits
        out = []
        for b, e in enumerate(encs):
            s, t = e.response_start, e.response_end
            if t <= s:
                out.append(np.zeros(0, dtype=np.float32))
                continue
            lp = torch.log_softmax(logits[b, s - 1 : t - 1].float(), dim=-1)
            gold = ids[b, s:t].unsqueeze(-1)
            out.append(lp.gather(-1, gold).squeeze(-1).cpu().numpy().astype(np.float32))
    return out


# ---------------------------------------------------------------------------------------------
# Identity and cache layout


def sample_hash(instruction: str, response: str) -> str:
    return hashlib.sha256((instruction + "\x00" + response).encode("utf-8")).hexdigest()[:16]


def scoring_identity(cfg) -> dict[str, Any]:
    """Everything that changes the numbers; hashed into the cache folder name."""
    from codeblock.core.models import model_identity, resolve_device, resolve_dtype

    sc = cfg.score
    ident: dict[str, Any] = {
        "version": SCORE_VERSION,
        "model": model_identity(cfg.model),
        "dtype": str(resolve_dtype(cfg.model, resolve_device(cfg.model))).replace("torch.", ""),
        "mode": sc.mode,
        "q": sc.gce_q,
        "max_length": sc.max_length,
    }
    if sc.mode == "excess":
        if sc.ref_model:
            ident["ref"] = model_identity(cfg.model, sc.ref_model)
        else:
            ident["ref"] = {
                "warmup_of": ident["model"], "samples": sc.ref_warmup_samples, "steps": sc.ref_warmup_steps,
                "lr": sc.ref_warmup_lr, "seed": sc.seed, "batch_tokens": sc.batch_tokens,
                "data": sha256_file(cfg.paths.filtered) if Path(cfg.paths.filtered).exists() else None,
            }
    return ident


def model_key(cfg) -> str:
    ident = scoring_identity(cfg)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def scores_dir(cfg) -> Path:
    return Path(cfg.paths.scores_dir) / model_key(cfg)


def shard_path(folder: Path, k: int) -> Path:
    return folder / f"shard-{k:05d}.parquet"


def _shard_table(rows: list[dict], excess: bool):
    import pyarrow as pa

    fields = [
        ("id", pa.string()), ("sample_hash", pa.string()), ("input_ids", pa.list_(pa.int32())),
        ("response_start", pa.int32()), ("response_end", pa.int32()), ("gce", pa.list_(pa.float32())),
        ("ce", pa.list_(pa.float32())),
    ]
    if excess:
        fields += [("base_gce", pa.list_(pa.float32())), ("ref_gce", pa.list_(pa.float32()))]
    schema = pa.schema(fields)
    cols = {name: [r[name] for r in rows] for name, _ in fields}
    return pa.Table.from_pydict(cols, schema=schema)


def _shard_is_done(path: Path, ids: list[str], hashes: list[str], key: str) -> bool:
    import pyarrow.parquet as pq

    if not path.exists():
        return False
    try:
        if read_parquet_metadata(path).get("model_key") != key:
            return False
        t = pq.read_table(path, columns=["id", "sample_hash"])
    except Exception as e:  # a foreign or damaged file: recompute it
        log.warning("score cache: %s unreadable (%s); recomputing", path, e)
        return False
    return t.column("id").to_pylist() == ids and t.column("sample_hash").to_pylist() == hashes


def _reusable_rows(folder: Path, needed: dict[str, str], skip: set[Path]) -> dict[str, dict]:
    """Rows of stale shards whose (id, sample_hash) is still needed: per-sample cache hits."""
    import pyarrow.parquet as pq

    found: dict[str, dict] = {}
    if not needed:
        return found
    for path in sorted(folder.glob(SHARD_GLOB)):
        if path in skip:
            continue
        try:
            for r in pq.read_table(path).to_pylist():
                if needed.get(r["id"]) == r["sample_hash"]:
                    found[r["id"]] = r
        except Exception:
            continue
    return found


# ---------------------------------------------------------------------------------------------
# Reference model for excess mode


def warm_up_reference(cfg, rows: list[dict], tokenizer, progress: bool = True):
    """A copy of the base model after a few plain-SFT steps on the cleanest rows (module doc)."""
    import torch

    from codeblock.core.models import load_model
    from codeblock.core.tokenize import encode_pairs

    sc = cfg.score
    ranked = sorted(rows, key=lambda r: (-(r.get("quality") or 0.0), -(r.get("longtail") or 0.0), r["id"]))
    clean = ranked[: max(1, sc.ref_warmup_samples)]
    encs = encode_pairs(tokenizer, [(r["instruction"], r["response"]) for r in clean], sc.max_length)
    batches = make_batches([len(e.input_ids) for e in encs], sc.batch_tokens)
    torch.manual_seed(sc.seed)
    model = load_model(cfg.model, for_training=True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=sc.ref_warmup_lr)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    for step in tqdm(range(sc.ref_warmup_steps), desc="ref warm-up", unit="step", disable=not progress):
        batch = [encs[i] for i in batches[step % len(batches)]]
        ids, mask = _pad(batch, pad_id, device)
        labels = torch.full_like(ids, -100)
        for b, e in enumerate(batch):
            labels[b, e.response_start : e.response_end] = ids[b, e.response_start : e.response_end]
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        if torch.isfinite(loss):
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------
# The stage


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


def run_score(cfg, progress: bool = True) -> dict:
    """Score every row of `paths.filtered` (module docstring); returns outputs and metrics."""
    from codeblock.core.models import load_model, load_tokenizer
    from codeblock.core.tokenize import encode_pairs
    from codeblock.core.tracking import stage_run

    sc = cfg.score
    if sc.mode not in ("base", "excess"):
        raise ValueError(f"score.mode must be base or excess, got {sc.mode!r}")
    excess = sc.mode == "excess"
    rows = _read_filtered(cfg.paths.filtered)
    ident = scoring_identity(cfg)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cfg.paths.scores_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "key.json", {"model_key": key, "identity": ident})

    size = max(1, sc.shard_size)
    n_shards = math.ceil(len(rows) / size)
    shards = [rows[k * size : (k + 1) * size] for k in range(n_shards)]
    hashes = [[sample_hash(r["instruction"], r["response"]) for r in part] for part in shards]
    done = {
        k for k in range(n_shards)
        if _shard_is_done(shard_path(folder, k), [r["id"] for r in shards[k]], hashes[k], key)
    }
    todo = [k for k in range(n_shards) if k not in done]
    needed = {r["id"]: h for k in todo for r, h in zip(shards[k], hashes[k], strict=True)}
    reuse = _reusable_rows(folder, needed, {shard_path(folder, k) for k in done})

    params = {f"score.{k}": v for k, v in cfg.to_dict()["score"].items()}
    params.update({"model.name_or_path": cfg.model.name_or_path, "score.model_key": key})
    metrics: dict[str, float] = {
        "samples": len(rows), "shards": n_shards, "shards_cached": len(done), "samples_reused": 0,
        "samples_scored": 0, "tokens_scored": 0, "response_tokens_scored": 0, "seconds": 0.0, "tokens_per_s": 0.0,
    }
    with stage_run(cfg, "score", params=params) as tr:
        if todo:
            tok = load_tokenizer(cfg.model)
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
            model = load_model(cfg.model)
            ref = None
            if excess:
                ref = load_model(cfg.model, sc.ref_model) if sc.ref_model else warm_up_reference(cfg, rows, tok, progress)
            n_pending = sum(1 for k in todo for r in shards[k] if r["id"] not in reuse)
            bar = tqdm(total=n_pending, desc="score", unit="sample", disable=not progress)
            elapsed = 0.0
            for k in todo:
                part, part_hashes = shards[k], hashes[k]
                fresh = [i for i, r in enumerate(part) if r["id"] not in reuse]
                encs = encode_pairs(tok, [(part[i]["instruction"], part[i]["response"]) for i in fresh], sc.max_length)
                results: dict[int, dict] = {}
                t0 = time.perf_counter()
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
                        results[fresh[j]] = res
                    n_tok = sum(len(e.input_ids) for e in be)
                    metrics["tokens_scored"] += n_tok
                    metrics["response_tokens_scored"] += sum(e.n_response_tokens for e in be)
                    bar.update(len(batch))
                elapsed += time.perf_counter() - t0
                if elapsed > 0:
                    bar.set_postfix(tok_s=f"{metrics['tokens_scored'] / elapsed:.0f}", shard=f"{k + 1}/{n_shards}")
                out_rows = []
                for i, r in enumerate(part):
                    res = results.get(i) or reuse[r["id"]]
                    out_rows.append({"id": r["id"], "sample_hash": part_hashes[i], **res})
                metrics["samples_scored"] += len(fresh)
                metrics["samples_reused"] += len(part) - len(fresh)
                write_parquet(shard_path(folder, k), _shard_table(out_rows, excess),
                              {"stage": "score", "model_key": key, "identity": ident, "shard": k,
                               "config_hash": stage_hash(cfg, "score")})
            bar.close()
            metrics["seconds"] = elapsed
            metrics["tokens_per_s"] = metrics["tokens_scored"] / elapsed if elapsed > 0 else 0.0
        for stale in folder.glob(SHARD_GLOB):
            if int(stale.stem.split("-")[1]) >= n_shards:
                stale.unlink()
        write_json(folder / "index.json", {
            "model_key": key, "identity": ident, "mode": sc.mode, "q": sc.gce_q, "samples": len(rows),
            "shards": [shard_path(folder, k).name for k in range(n_shards)],
            "input": {"filtered": cfg.paths.filtered, "sha256": sha256_file(cfg.paths.filtered)},
        })
        if metrics["samples_scored"] or done:
            metrics["mean_gce"] = _mean_gce(folder, n_shards)
        tr.log_metrics(metrics)
    log.info("score: %d samples, %d shards (%d cached), %.1f tokens/s", len(rows), n_shards, len(done),
             metrics["tokens_per_s"])
    return {"outputs": [str(folder)], "metrics": metrics, "model_key": key}


def _mean_gce(folder: Path, n_shards: int) -> float:
    import pyarrow.parquet as pq

    total, count = 0.0, 0
    for k in range(n_shards):
        for g in pq.read_table(shard_path(folder, k), columns=["gce"]).column("gce").to_pylist():
            total += float(np.sum(g))
            count += len(g)
    return total / count if count else 0.0


def load_scores(cfg) -> dict[str, dict]:
    """id -> {"input_ids": np.int32 array, "response_start": int, "response_end": int,
    "gce", "ce": np.float32 arrays (one per token in [response_start, response_end))}, from the cache
    of the configured scoring identity (run `codeblock score` first)."""
    import pyarrow.parquet as pq

    folder = scores_dir(cfg)
    index = folder / "index.json"
    if not index.exists():
        raise FileNotFoundError(f"{folder}: no scores for this model/mode (run `codeblock score`)")
    out: dict[str, dict] = {}
    for name in json.loads(index.read_text())["shards"]:
        t = pq.read_table(folder / name, columns=["id", "input_ids", "response_start", "response_end", "gce", "ce"])
        ids = t.column("id").to_pylist()
        inp = t.column("input_ids").to_pylist()
        rs = t.column("response_start").to_pylist()
        re_ = t.column("response_end").to_pylist()
        gce = t.column("gce").to_pylist()
        ce = t.column("ce").to_pylist()
        for i, id_ in enumerate(ids):
            out[id_] = {"input_ids": np.asarray(inp[i], dtype=np.int32), "response_start": int(rs[i]),
                        "response_end": int(re_[i]), "gce": np.asarray(gce[i], dtype=np.float32),
                        "ce": np.asarray(ce[i], dtype=np.float32)}
    return out


def run(cfg, ctx: StageContext) -> StageResult:
    return StageResult.from_dict("score", run_score(cfg, progress=ctx.progress))


def summary(res: StageResult) -> str:
    m = res.metrics
    lines = [f"score: {m['samples']} samples in {m['shards']} shard(s) ({m['shards_cached']} cached, "
             f"{m['samples_reused']} samples reused) -> {res.outputs[0]}"]
    if m["samples_scored"]:
        lines.append(f"  scored {m['samples_scored']} samples, {m['tokens_scored']} tokens in {m['seconds']:.1f}s "
                     f"({m['tokens_per_s']:.0f} tokens/s)")
    if "mean_gce" in m:
        lines.append(f"  mean gce {m['mean_gce']:.4f}")
    return "\n".join(lines)
