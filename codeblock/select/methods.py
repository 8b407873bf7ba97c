"""Stage 5 (with stage 4's Reach/Bridge): gated priority, budgeted selection, sparse labels.

For the `codeblock` method (METHOD.md section 5):
    U(item)  = score.aggregate (mean|sum|max) of GCE over the item's core-logic tokens
               (items with no core token, e.g. a lone docstring, have no utility and are never chosen)
    Ũ(item)  = percentile of U among all items of the dataset (average rank / N, in (0, 1])
    P(item)  = Ũ (1 + alpha Reach + beta Bridge) if Ũ >= tau else 0
    budget   = select.budget x response tokens (of the whole dataset, or of each sample with
               select.scope = per_sample). select.nl_share of it goes first to the highest-GCE
               eligible prose tokens (segment.py: no markdown syntax, punctuation or stop-words);
               the rest (plus any prose share left unused) is filled with WHOLE items by
               decreasing P. An item is taken when it fits, or when it overshoots the remaining
               budget by less than half its own size (so small per-sample budgets are met on average
               instead of always undershot). With scope = per_sample and a small budget, a sample
               whose smallest eligible item exceeds 1.5x its budget gets no code, so the global ratio
               lands below select.budget; the global scope meets it.
Labels: -100 everywhere except the selected response tokens; prompt tokens are always -100.

Every method (this one and those in codeblock/baselines.py) returns a `Selection`, and
`write_selection` turns it into the files the trainer reads:
    <labels_dir>/<method>/labels.parquet   id (str), input_ids (list<int32>), labels (list<int32>)
    <labels_dir>/<method>/stats.json       flat numeric metrics (DVC metrics)
    <labels_dir>/<method>/ratios.csv       per-sample supervised ratio (DVC plot)
    <labels_dir>/<method>/items.parquet    codeblock only: U, Ũ, Reach, Bridge, P, selected per item
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from codeblock.stages import StageContext, StageResult, stage_hash

log = logging.getLogger(__name__)


@dataclass
class Sample:
    id: str
    input_ids: np.ndarray  # int32
    response_start: int
    response_end: int
    selected: np.ndarray | None = None  # response-relative token indices (int64), sorted
    n_code: int = 0
    n_prose: int = 0
    n_items: int = 0

    @property
    def n_response(self) -> int:
        return self.response_end - self.response_start


@dataclass
class Selection:
    method: str
    samples: list[Sample]
    extra: dict = field(default_factory=dict)  # method-specific numeric stats
    items: object = None  # optional pyarrow Table of per-item details
    inputs: dict = field(default_factory=dict)  # input path -> sha256, for provenance


# ---------------------------------------------------------------------------------------------
# Shared pieces (also used by codeblock/baselines.py)


def percentile_rank(u: np.ndarray) -> np.ndarray:
    """Average-rank percentile in (0, 1] of each finite value; NaN stays 0."""
    out = np.zeros(len(u), dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(u))
    if len(ok):
        v = u[ok]
        order = np.argsort(v, kind="stable")
        sv = v[order]
        new = np.r_[True, sv[1:] != sv[:-1]]
        starts = np.flatnonzero(new)
        counts = np.diff(np.r_[starts, len(sv)])
        avg = starts + (counts + 1) / 2.0  # 1-based average rank of each tie group
        ranks = np.empty(len(v))
        ranks[order] = avg[np.cumsum(new) - 1]
        out[ok] = ranks / len(v)
    return out


def gated_priority(u_pct: np.ndarray, reach: np.ndarray, bridge: np.ndarray, alpha: float, beta: float,
                   tau: float) -> np.ndarray:
    p = u_pct * (1.0 + alpha * reach + beta * bridge)
    return np.where((u_pct >= tau) & (u_pct > 0), p, 0.0)


def fill_budget(order: np.ndarray, sizes: np.ndarray, budget: float) -> tuple[list[int], int]:
    """Take whole units in `order` while the budget allows (overshoot < half the unit's size).

    Returns (chosen unit indices, tokens taken)."""
    chosen: list[int] = []
    taken = 0
    if budget <= 0 or len(order) == 0:
        return chosen, 0
    min_size = int(sizes[order].min())
    for k in order.tolist():
        s = int(sizes[k])
        if taken + s <= budget + s / 2.0:
            chosen.append(k)
            taken += s
            if budget - taken < min_size / 2.0:
                break
    return chosen, taken


def top_tokens(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values (ties broken by position, deterministic)."""
    k = max(0, min(int(k), len(values)))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(values)), -values))
    return order[:k]


def labels_for(s: Sample) -> np.ndarray:
    lab = np.full(len(s.input_ids), -100, dtype=np.int32)
    if s.selected is not None and len(s.selected):
        idx = s.response_start + np.asarray(s.selected, dtype=np.int64)
        lab[idx] = s.input_ids[idx]
    return lab


def _list_array(arrays: list[np.ndarray]):
    import pyarrow as pa

    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def selection_stats(sel: Selection, budget: float) -> dict[str, float]:
    n = len(sel.samples)
    resp = np.array([s.n_response for s in sel.samples], dtype=np.float64)
    sup = np.array([0 if s.selected is None else len(s.selected) for s in sel.samples], dtype=np.float64)
    code = float(sum(s.n_code for s in sel.samples))
    prose = float(sum(s.n_prose for s in sel.samples))
    ratio = np.divide(sup, resp, out=np.zeros_like(sup), where=resp > 0)
    total_sup, total_resp = float(sup.sum()), float(resp.sum())
    g = total_sup / total_resp if total_resp else 0.0
    q = np.percentile(ratio, [10, 25, 50, 75, 90]) if n else np.zeros(5)
    stats = {
        "samples": n,
        "response_tokens": total_resp,
        "supervised_tokens": total_sup,
        "supervised_ratio": g,
        "budget": budget,
        "ratio_vs_budget": g / budget if budget else 0.0,
        "code_tokens": code,
        "prose_tokens": prose,
        "prose_share": prose / total_sup if total_sup else 0.0,
        "items_selected": float(sum(s.n_items for s in sel.samples)),
        "samples_zero_supervision": float((sup == 0).sum()),
        "samples_zero_supervision_share": float((sup == 0).mean()) if n else 0.0,
        "sample_ratio_mean": float(ratio.mean()) if n else 0.0,
        "sample_ratio_std": float(ratio.std()) if n else 0.0,
        "sample_ratio_min": float(ratio.min()) if n else 0.0,
        "sample_ratio_p10": float(q[0]),
        "sample_ratio_p25": float(q[1]),
        "sample_ratio_p50": float(q[2]),
        "sample_ratio_p75": float(q[3]),
        "sample_ratio_p90": float(q[4]),
        "sample_ratio_max": float(ratio.max()) if n else 0.0,
    }
    stats.update({k: float(v) for k, v in sel.extra.items()})
    return stats


def write_selection(cfg, sel: Selection) -> dict:
    """Write labels.parquet, stats.json, ratios.csv (and items.parquet) for one method; log to MLflow."""
    import pyarrow as pa

    from codeblock.core.io import atomic_write_text, write_json, write_parquet
    from codeblock.core.tracking import stage_run

    out_dir = Path(cfg.paths.labels_dir) / sel.method
    budget = 1.0 if sel.method in ("full", "full_filtered") else cfg.select.budget
    stats = selection_stats(sel, budget)
    table = pa.table({
        "id": pa.array([s.id for s in sel.samples], pa.string()),
        "input_ids": _list_array([s.input_ids for s in sel.samples]),
        "labels": _list_array([labels_for(s) for s in sel.samples]),
    })
    meta = {
        "stage": "select", "method": sel.method,
        "config_hash": stage_hash(cfg, "select"),
        "inputs": sel.inputs, "stats": stats,
    }
    outputs = [str(out_dir / "labels.parquet"), str(out_dir / "stats.json"), str(out_dir / "ratios.csv")]
    params = {"select." + k: v for k, v in cfg.to_dict()["select"].items()}
    params["select.method"] = sel.method
    with stage_run(cfg, f"select-{sel.method}", params=params, tags={"codeblock.method": sel.method}) as tr:
        write_parquet(out_dir / "labels.parquet", table, metadata=meta)
        write_json(out_dir / "stats.json", stats)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "response_tokens", "supervised_tokens", "code_tokens", "prose_tokens", "ratio"])
        for s in sel.samples:
            k = 0 if s.selected is None else len(s.selected)
            w.writerow([s.id, s.n_response, k, s.n_code, s.n_prose, f"{k / s.n_response if s.n_response else 0.0:.6f}"])
        atomic_write_text(out_dir / "ratios.csv", buf.getvalue())
        if sel.items is not None:
            write_parquet(out_dir / "items.parquet", sel.items, metadata=meta)
            outputs.append(str(out_dir / "items.parquet"))
        tr.log_metrics(stats)
        tr.log_artifact(out_dir / "stats.json")
    return {"outputs": outputs, "metrics": stats}


# ---------------------------------------------------------------------------------------------
# Inputs


def read_segments(path: str | Path, include_dropped: bool = False) -> list[dict]:
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    return rows if include_dropped else [r for r in rows if not r["dropped"]]


def load_scores(cfg) -> dict[str, dict]:
    from codeblock.select.score import load_scores as _load

    return _load(cfg)


def join_scores(segments: list[dict], scores: dict[str, dict], path: str = "segments") -> list[np.ndarray]:
    """The per-response-token score array of each segmented sample, checking that tokenization matches."""
    from codeblock.core.io import BadRowError

    out = []
    for k, r in enumerate(segments):
        sc = scores.get(r["id"])
        if sc is None:
            raise BadRowError(path, k, "id", f"sample {r['id']!r} has no score (run `codeblock score`)")
        if int(sc["response_start"]) != r["response_start"] or not np.array_equal(
                np.asarray(sc["input_ids"], dtype=np.int64), np.asarray(r["input_ids"], dtype=np.int64)):
            raise BadRowError(path, k, "input_ids", f"sample {r['id']!r}: scored and segmented tokenizations differ "
                              "(score.max_length or the model changed; re-run segment and score)")
        g = np.asarray(sc["gce"], dtype=np.float64)
        if len(g) != r["response_end"] - r["response_start"]:
            raise BadRowError(path, k, "gce", f"{len(g)} scores for {r['response_end'] - r['response_start']} tokens")
        out.append(g)
    return out


def _sample(r: dict) -> Sample:
    return Sample(r["id"], np.asarray(r["input_ids"], dtype=np.int32), int(r["response_start"]), int(r["response_end"]))


# ---------------------------------------------------------------------------------------------
# CodeBlock


def item_table(segments: list[dict], gce: list[np.ndarray], aggregate: str) -> dict[str, np.ndarray]:
    """Flat per-item arrays over the dataset: sample, local index, size, U, Reach, Bridge (vectorised)."""
    n_items = np.fromiter((len(r["item_tokens"]) for r in segments), dtype=np.int64, count=len(segments))
    sample = np.repeat(np.arange(len(segments)), n_items)
    local = np.arange(int(n_items.sum())) - np.repeat(np.cumsum(n_items) - n_items, n_items)
    size = np.fromiter((len(t) for r in segments for t in r["item_tokens"]), dtype=np.int64, count=len(sample))
    n_core = np.fromiter((len(c) for r in segments for c in r["item_core"]), dtype=np.int64, count=len(sample))
    # every core token as an index into the concatenation of all samples' scores
    tok_base = np.cumsum([0] + [len(g) for g in gce])[:-1]
    flat_g = np.concatenate(gce) if gce else np.zeros(0)
    core = np.fromiter(chain.from_iterable(c for r in segments for c in r["item_core"]), dtype=np.int64,
                       count=int(n_core.sum()))
    vals = flat_g[core + np.repeat(tok_base[sample], n_core)] if len(core) else np.zeros(0)
    util = np.full(len(sample), np.nan)
    has = n_core > 0
    if has.any():
        starts = (np.cumsum(n_core) - n_core)[has]
        if aggregate == "max":
            util[has] = np.maximum.reduceat(vals, starts)
        else:
            sums = np.add.reduceat(vals, starts)
            util[has] = sums / n_core[has] if aggregate == "mean" else sums
    reach = np.fromiter(chain.from_iterable(r["item_reach"] for r in segments), dtype=np.float64, count=len(sample))
    bridge = np.fromiter(chain.from_iterable(r["item_bridge"] for r in segments), dtype=np.float64, count=len(sample))
    return {"sample": sample, "local": local, "size": size, "U": util, "reach": reach, "bridge": bridge}


def _groups(scope: str, n_samples: int, keys: np.ndarray) -> list[np.ndarray]:
    """Index arrays into `keys` (sample ids of units) per budget group."""
    if scope == "global":
        return [np.arange(len(keys))]
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n_samples + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(n_samples)]


def select_codeblock(cfg, segments: list[dict], gce: list[np.ndarray]) -> Selection:
    sc = cfg.select
    items = item_table(segments, gce, cfg.score.aggregate)
    u_pct = percentile_rank(items["U"])
    prio = gated_priority(u_pct, items["reach"], items["bridge"], sc.alpha, sc.beta, sc.tau)
    # eligible prose tokens, flat
    p_sample = np.concatenate([np.full(len(r["prose_tokens"]), i, np.int64) for i, r in enumerate(segments)] or [np.zeros(0, np.int64)])
    p_tok = np.concatenate([np.asarray(r["prose_tokens"], np.int64) for r in segments] or [np.zeros(0, np.int64)])
    p_val = np.concatenate([g[np.asarray(r["prose_tokens"], np.int64)] for r, g in zip(segments, gce)] or [np.zeros(0)])
    n_resp = np.array([r["response_end"] - r["response_start"] for r in segments], dtype=np.int64)

    n = len(segments)
    item_groups = _groups(sc.scope, n, items["sample"])
    prose_groups = _groups(sc.scope, n, p_sample)
    group_tokens = [float(n_resp.sum())] if sc.scope == "global" else n_resp.astype(float).tolist()
    chosen_items: list[int] = []
    chosen_prose: list[int] = []
    for ig, pg, tokens in zip(item_groups, prose_groups, group_tokens):
        budget = sc.budget * tokens
        k_prose = min(int(round(sc.nl_share * budget)), len(pg))
        top = pg[top_tokens(p_val[pg], k_prose)]
        chosen_prose.extend(top.tolist())
        cand = ig[prio[ig] > 0]
        order = cand[np.lexsort((cand, -prio[cand]))]
        got, _ = fill_budget(order, items["size"], budget - len(top))
        chosen_items.extend(got)

    selected = np.zeros(len(items["size"]), dtype=bool)
    selected[chosen_items] = True
    per_code: list[list[int]] = [[] for _ in range(n)]
    n_items = np.zeros(n, dtype=np.int64)
    for k in chosen_items:
        si, li = items["sample"][k], items["local"][k]
        per_code[si].extend(segments[si]["item_tokens"][li])
        n_items[si] += 1
    per_prose: list[list[int]] = [[] for _ in range(n)]
    for k in chosen_prose:
        per_prose[p_sample[k]].append(int(p_tok[k]))

    samples = []
    for i, r in enumerate(segments):
        s = _sample(r)
        code, prose = per_code[i], per_prose[i]
        s.selected = np.unique(np.asarray(code + prose, dtype=np.int64))
        s.n_code, s.n_prose, s.n_items = len(code), len(prose), int(n_items[i])
        samples.append(s)

    import pyarrow as pa

    ids = [segments[i]["id"] for i in items["sample"].tolist()]
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "item": pa.array(items["local"], pa.int32()),
        "n_tokens": pa.array(items["size"], pa.int32()),
        "U": pa.array(items["U"], pa.float32()),
        "U_pct": pa.array(u_pct, pa.float32()),
        "reach": pa.array(items["reach"], pa.float32()),
        "bridge": pa.array(items["bridge"], pa.float32()),
        "P": pa.array(prio, pa.float32()),
        "selected": pa.array(selected),
    })
    extra = {
        "items_total": len(items["size"]),
        "items_with_utility": int(np.isfinite(items["U"]).sum()),
        "items_above_tau": int((prio > 0).sum()),
        "prose_tokens_eligible": len(p_tok),
        "mean_reach_selected": float(items["reach"][selected].mean()) if selected.any() else 0.0,
        "mean_bridge_selected": float(items["bridge"][selected].mean()) if selected.any() else 0.0,
    }
    return Selection("codeblock", samples, extra=extra, items=table)


# ---------------------------------------------------------------------------------------------
# Stage


def run_select(cfg, method: str | None = None, scores: dict[str, dict] | None = None) -> dict:
    """Build the sparse labels of `method` (default cfg.select.method) and write them (see module doc).

    `scores` (id -> {"input_ids", "response_start", "response_end", "gce"}) defaults to
    codeblock.select.score.load_scores(cfg); methods that need no scores never load them."""
    from codeblock.core.io import sha256_file
    from codeblock.select import baselines

    method = method or cfg.select.method
    if method == "codeblock":
        segments = read_segments(cfg.paths.segments)
        scores = load_scores(cfg) if scores is None else scores
        sel = select_codeblock(cfg, segments, join_scores(segments, scores, cfg.paths.segments))
        sel.inputs = {cfg.paths.segments: sha256_file(cfg.paths.segments)}
    elif method in baselines.METHODS:
        sel = baselines.METHODS[method](cfg, scores)
    else:
        known = ["codeblock", *baselines.METHODS]
        raise ValueError(f"select.method {method!r} is not one of {known}")
    return write_selection(cfg, sel)


def run(cfg, ctx: StageContext) -> StageResult:
    res = run_select(cfg, ctx.method)
    return StageResult.from_dict("select", res, method=ctx.method or cfg.select.method)


def summary(res: StageResult) -> str:
    m = res.metrics
    keys = ("samples", "response_tokens", "supervised_tokens", "supervised_ratio", "budget", "code_tokens",
            "prose_tokens", "items_selected", "samples_zero_supervision")
    return "\n".join([*(f"{k:26s} {m[k]}" for k in keys), "wrote " + ", ".join(res.outputs)])
