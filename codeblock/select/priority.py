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
The result is a `Selection` (codeblock/select/labels.py), written like every baseline's.
"""


from __future__ import annotations

from itertools import chain

import numpy as np

from codeblock.select.labels import Selection, budget_groups, fill_budget, sample_from_row, top_tokens


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
    item_groups = budget_groups(sc.scope, n, items["sample"])
    prose_groups = budget_groups(sc.scope, n, p_sample)
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
        s = sample_from_row(r)
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
