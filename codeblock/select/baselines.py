"""Selection baselines on the same interface as CodeBlock (docs/method.md, "Baselines on the same pipeline").

Each method is `fn(cfg, scores) -> codeblock.select.labels.Selection`; `codeblock select --method <name>`
(or select.method) dispatches here, and labels.write_selection writes the same files for all:
    full            every response token of the UNFILTERED pool (cfg.paths.pool): full-token SFT
    full_filtered   every response token of the filtered pool (cfg.paths.filtered): isolates stage 1
    random_tokens   response tokens drawn uniformly at the select.budget share (global or per sample)
    random_items    whole coding items in random order, filling the same budget
    token_cleaning  global top-k of CE_base - CE_ref per token (plain cross-entropy, score.mode = excess;
                    Token Cleaning, Pang et al. 2025: keep the tokens of highest influence, one
                    threshold for the whole dataset)
    rho1            per-sample top-k of the same excess CE (Rho-1, Lin et al. 2024: keep the top k%
                    tokens by excess loss L_train - L_ref within each sample)
    ds2             DS2-style sample selection: the filtered rows ranked by quality, then long-tail
                    score (the filter's `rank`), best first, every response token of a chosen row
                    supervised; select.ds2_keep rows (a share <= 1 or a count), or with 0 as many as
                    fit in select.budget of all response tokens (token-matched)
Random methods use select.seed. The budget for the sparse ones is select.budget of all response tokens.
"""

from __future__ import annotations

import logging

import numpy as np

from codeblock.select.labels import (
    Sample,
    Selection,
    budget_groups,
    fill_budget,
    join_scores,
    load_scores,
    read_segments,
    sample_from_row,
    top_tokens,
)

log = logging.getLogger(__name__)


def _encoded_samples(cfg, path: str) -> list[Sample]:
    """Tokenize a pool file exactly as segment/score do, every response token selected."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from codeblock.core.models import load_tokenizer
    from codeblock.core.tokenize import encode_pairs

    t = pq.read_table(path, columns=["id", "instruction", "response"])
    ids, ins, resp = (t.column(c).to_pylist() for c in ("id", "instruction", "response"))
    tok = load_tokenizer(cfg.model)
    out: list[Sample] = []
    step = 256
    for a in tqdm(range(0, len(ids), step), desc="tokenize", unit="batch"):
        encs = encode_pairs(tok, list(zip(ins[a:a + step], resp[a:a + step])), cfg.score.max_length)
        for i, e in zip(ids[a:a + step], encs):
            s = Sample(i, np.asarray(e.input_ids, dtype=np.int32), e.response_start, e.response_end)
            s.selected = np.arange(s.n_response, dtype=np.int64)
            s.n_code = s.n_response  # not split by kind for full-token methods
            out.append(s)
    return out


def full(cfg, scores=None) -> Selection:
    from codeblock.core.io import sha256_file

    return Selection("full", _encoded_samples(cfg, cfg.paths.pool), inputs={cfg.paths.pool: sha256_file(cfg.paths.pool)})


def full_filtered(cfg, scores=None) -> Selection:
    from codeblock.core.io import sha256_file

    p = cfg.paths.filtered
    return Selection("full_filtered", _encoded_samples(cfg, p), inputs={p: sha256_file(p)})


def _segments(cfg) -> list[dict]:
    return read_segments(cfg.paths.segments)


def _inputs(cfg) -> dict:
    from codeblock.core.io import sha256_file

    return {cfg.paths.segments: sha256_file(cfg.paths.segments)}


def _code_prose_counts(s: Sample, seg: dict) -> None:
    in_items = set()
    for toks in seg["item_tokens"]:
        in_items.update(toks)
    sel = s.selected.tolist() if s.selected is not None else []
    s.n_code = sum(1 for k in sel if k in in_items)
    s.n_prose = len(sel) - s.n_code


def random_tokens(cfg, scores=None) -> Selection:
    rng = np.random.default_rng(cfg.select.seed)
    segs = _segments(cfg)
    samples = [sample_from_row(r) for r in segs]
    n_resp = np.array([s.n_response for s in samples], dtype=np.int64)
    if cfg.select.scope == "global":
        total = int(n_resp.sum())
        k = int(round(cfg.select.budget * total))
        flat = np.sort(rng.choice(total, size=min(k, total), replace=False))
        bounds = np.concatenate([[0], np.cumsum(n_resp)])
        for i, s in enumerate(samples):
            a, b = np.searchsorted(flat, [bounds[i], bounds[i + 1]])
            s.selected = flat[a:b] - bounds[i]
    else:
        for s in samples:
            k = int(round(cfg.select.budget * s.n_response))
            s.selected = np.sort(rng.choice(s.n_response, size=min(k, s.n_response), replace=False))
    for s, r in zip(samples, segs):
        _code_prose_counts(s, r)
    return Selection("random_tokens", samples, inputs=_inputs(cfg))


def random_items(cfg, scores=None) -> Selection:
    rng = np.random.default_rng(cfg.select.seed)
    segs = _segments(cfg)
    samples = [sample_from_row(r) for r in segs]
    owner = np.array([i for i, r in enumerate(segs) for _ in r["item_tokens"]], dtype=np.int64)
    local = np.array([j for r in segs for j in range(len(r["item_tokens"]))], dtype=np.int64)
    sizes = np.array([len(t) for r in segs for t in r["item_tokens"]], dtype=np.int64)
    n_resp = np.array([s.n_response for s in samples], dtype=np.float64)
    groups = budget_groups(cfg.select.scope, len(samples), owner)
    budgets = [n_resp.sum()] if cfg.select.scope == "global" else n_resp.tolist()
    per: list[list[int]] = [[] for _ in samples]
    for g, tokens in zip(groups, budgets):
        chosen, _ = fill_budget(rng.permutation(g), sizes, cfg.select.budget * tokens)
        for k in chosen:
            per[owner[k]].append(k)
    for i, s in enumerate(samples):
        toks = [t for k in per[i] for t in segs[i]["item_tokens"][local[k]]]
        s.selected = np.unique(np.asarray(toks, dtype=np.int64))
        s.n_code, s.n_items = len(toks), len(per[i])
    return Selection("random_items", samples, inputs=_inputs(cfg))


def _scored(cfg, scores):
    if cfg.score.mode != "excess":
        log.warning("token-level baselines rank by excess loss CE_base - CE_ref; score.mode=%s gives CE_base",
                    cfg.score.mode)
    segs = _segments(cfg)
    scores = load_scores(cfg) if scores is None else scores
    return segs, join_scores(segs, scores, cfg.paths.segments, column="ce")


def global_top_k(scores: list[np.ndarray], budget: float) -> list[np.ndarray]:
    """Token Cleaning's rule: one top-k over every token of the dataset, k = budget x all tokens.
    Returns the chosen token indices of each sample, sorted."""
    lengths = np.array([len(g) for g in scores], dtype=np.int64)
    flat = np.concatenate(scores) if scores else np.zeros(0)
    top = np.sort(top_tokens(flat, int(round(budget * lengths.sum()))))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    cut = np.searchsorted(top, bounds)
    return [top[cut[i]:cut[i + 1]] - bounds[i] for i in range(len(scores))]


def per_sample_top_k(scores: list[np.ndarray], budget: float) -> list[np.ndarray]:
    """Rho-1's rule: the top k = budget x its tokens of each sample. Chosen indices, sorted."""
    return [np.sort(top_tokens(g, int(round(budget * len(g))))) for g in scores]


def _excess_ce_method(cfg, scores, name: str, rule) -> Selection:
    segs, ce = _scored(cfg, scores)
    samples = [sample_from_row(r) for r in segs]
    for s, chosen, r in zip(samples, rule(ce, cfg.select.budget), segs):
        s.selected = chosen
        _code_prose_counts(s, r)
    return Selection(name, samples, extra={"excess_scores": float(cfg.score.mode == "excess")}, inputs=_inputs(cfg))


def token_cleaning(cfg, scores=None) -> Selection:
    """Global top-k of the per-token excess CE over every response token of the dataset."""
    return _excess_ce_method(cfg, scores, "token_cleaning", global_top_k)


def rho1(cfg, scores=None) -> Selection:
    """Per-sample top-k of the per-token excess CE, k = select.budget of the sample's tokens."""
    return _excess_ce_method(cfg, scores, "rho1", per_sample_top_k)


def ds2(cfg, scores=None) -> Selection:
    """Best filtered rows (quality, then long-tail) with full-token loss (module docstring)."""
    import pyarrow.parquet as pq

    from codeblock.core.io import sha256_file
    from codeblock.select.filter import n_to_keep

    p = cfg.paths.filtered
    t = pq.read_table(p, columns=["id", "quality", "longtail"])
    ids, q, lt = t.column("id").to_pylist(), t.column("quality").to_pylist(), t.column("longtail").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: (-q[i], -lt[i], ids[i]))
    samples = {s.id: s for s in _encoded_samples(cfg, p)}
    ranked = [samples[ids[i]] for i in order]
    if cfg.select.ds2_keep > 0:
        k = n_to_keep(cfg.select.ds2_keep, len(ranked))
    else:
        sizes = np.array([s.n_response for s in ranked], dtype=np.int64)
        chosen, _ = fill_budget(np.arange(len(ranked)), sizes, cfg.select.budget * sizes.sum())
        k = len(chosen)
    total = sum(s.n_response for s in ranked)
    kept = ranked[:k]
    extra = {"pool_samples": len(ranked), "pool_response_tokens": total,
             "share_of_pool_tokens": sum(s.n_response for s in kept) / total if total else 0.0}
    return Selection("ds2", kept, extra=extra, inputs={p: sha256_file(p)})


METHODS = {
    "full": full,
    "full_filtered": full_filtered,
    "random_tokens": random_tokens,
    "random_items": random_items,
    "token_cleaning": token_cleaning,
    "rho1": rho1,
    "ds2": ds2,
}
