"""Stage 5 (with stage 4's Reach/Bridge): gated priority, budgeted selection, sparse labels.

For the `codeblock` method (docs/method.md section 5):
    U(item)  = score.aggregate (mean|sum|max) of GCE over the item's core-logic tokens
               (items with no core token, e.g. a lone docstring, have no utility and are never chosen)
    Ũ(item)  = percentile of U among all items of the dataset (average rank / N, in (0, 1])
    P(item)  = Ũ (1 + alpha Reach + beta Bridge) if Ũ >= tau else 0
    budget   = select.budget x response tokens (of the whole dataset, or of each sample with
               select.scope = per_sample). select.nl_share of it goes first to prose WORDS
               (codeblock/select/prose.py: whole words, never markup, numbers, URLs or stop-words)
               by decreasing informativeness  I(w) = mean score of w's tokens / n(w) ** rho,
               n(w) = samples whose prose holds w's sentence (boilerplate recurs: n large),
               rho = select.prose_recurrence_power; whole words are taken like items below.
               The rest (plus any prose share left unused) is filled with WHOLE items by
               decreasing P. An item is taken when it fits, or when it overshoots the remaining
               budget by less than half its own size (so small per-sample budgets are met on average
               instead of always undershot). With scope = per_sample and a small budget, a sample
               whose smallest eligible item exceeds 1.5x its budget gets no code, so the global ratio
               lands below select.budget; the global scope meets it.
Ablations (docs/selection.md): select.rerank (both | reach | bridge | none: which of alpha, beta
apply), select.utility (gce | ce: the per-token score, chosen in methods.py), select.granularity
(item | line | token: the unit of code supervision; a line unit is the tokens of one source line
of an item, a token unit one item token, each scored like an item and reranked with its item's
Reach and Bridge), select.nl_share (0: no prose), select.scope.
The result is a `Selection` (codeblock/select/labels.py), written like every baseline's; its
`words` are the chosen prose words with their counts.
"""


from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain

import numpy as np

from codeblock.select.labels import Sample, Selection, budget_groups, fill_budget, sample_from_row


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


def _flat(lists, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """(concatenation, length of each list) of a sequence of int lists."""
    sizes = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter(chain.from_iterable(lists), dtype=dtype, count=int(sizes.sum()))
    return flat, sizes


def _pooled(vals: np.ndarray, sizes: np.ndarray, how: str) -> np.ndarray:
    """Pool consecutive runs of `vals` (run k has sizes[k] values) by mean | sum | max; NaN if empty."""
    out = np.full(len(sizes), np.nan)
    has = sizes > 0
    if has.any():
        starts = (np.cumsum(sizes) - sizes)[has]
        if how == "max":
            out[has] = np.maximum.reduceat(vals, starts)
        else:
            sums = np.add.reduceat(vals, starts)
            out[has] = sums / sizes[has] if how == "mean" else sums
    return out


def _gather(scores: list[np.ndarray], sample: np.ndarray, tokens: list) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the tokens of each unit (unit k belongs to sample[k]), flat, and the unit sizes."""
    base = np.cumsum([0] + [len(g) for g in scores])[:-1]
    flat_g = np.concatenate(scores) if scores else np.zeros(0)
    idx, sizes = _flat(tokens)
    vals = flat_g[idx + np.repeat(base[sample], sizes)] if len(idx) else np.zeros(0)
    return vals, sizes


def code_units(segments: list[dict], granularity: str) -> dict:
    """The units of code supervision: sample, owning item (flat index), tokens and core tokens."""
    tokens = [t for r in segments for t in r["item_tokens"]]
    core = [c for r in segments for c in r["item_core"]]
    n_items = np.fromiter((len(r["item_tokens"]) for r in segments), dtype=np.int64, count=len(segments))
    sample = np.repeat(np.arange(len(segments)), n_items)
    if granularity == "item":
        return {"sample": sample, "item": np.arange(len(tokens)), "tokens": tokens, "core": core}
    lines = [ln for r in segments for ln in (r.get("item_lines") or [[0]] * len(r["item_tokens"]))]
    u_item, u_tok, u_core = [], [], []
    for k, (toks, cor) in enumerate(zip(tokens, core)):
        if granularity == "token":
            u_tok.extend([t] for t in toks)
            u_core.extend([t] for t in toks)  # every token is scored on its own
            u_item.extend([k] * len(toks))
            continue
        bounds = [*lines[k], len(toks)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            part = toks[a:b]
            if part:
                u_tok.append(part)
                u_core.append([c for c in cor if part[0] <= c <= part[-1]])
                u_item.append(k)
    item = np.asarray(u_item, dtype=np.int64)
    return {"sample": sample[item], "item": item, "tokens": u_tok, "core": u_core}


def item_table(segments: list[dict], gce: list[np.ndarray], aggregate: str, granularity: str = "item") -> dict:
    """Flat per-unit arrays over `segments`: sample, local item index, size, U, Reach, Bridge (the
    units' token lists are rebuilt in the labelling pass, not kept)."""
    u = code_units(segments, granularity)
    n_items = np.fromiter((len(r["item_tokens"]) for r in segments), dtype=np.int64, count=len(segments))
    local_of_item = np.arange(int(n_items.sum())) - np.repeat(np.cumsum(n_items) - n_items, n_items)
    vals, n_core = _gather(gce, u["sample"], u["core"])
    reach = np.fromiter(chain.from_iterable(r["item_reach"] for r in segments), dtype=np.float64,
                        count=int(n_items.sum()))
    bridge = np.fromiter(chain.from_iterable(r["item_bridge"] for r in segments), dtype=np.float64,
                         count=int(n_items.sum()))
    size = np.fromiter((len(t) for t in u["tokens"]), dtype=np.int64, count=len(u["tokens"]))
    return {"sample": u["sample"], "local": local_of_item[u["item"]], "size": size,
            "U": _pooled(vals, n_core, aggregate), "reach": reach[u["item"]], "bridge": bridge[u["item"]]}


def _words_of(r: dict) -> list:
    """A row's prose words as token lists (rows written before words: one word per prose token)."""
    words = r.get("prose_words")
    return [[k] for k in r["prose_tokens"]] if words is None else words


def prose_table(segments: list[dict], scores: list[np.ndarray]) -> dict:
    """Flat per-word arrays over `segments`: sample, size, mean score (NaN: none), sentence key and
    whether it is known (rows written before sentence keys). Informativeness needs the recurrence over the whole dataset: `informativeness`."""
    tokens, keys, owner = [], [], []
    for i, r in enumerate(segments):
        words = _words_of(r)
        tokens.extend(words)
        keys.extend(r.get("prose_word_sentence") or [None] * len(words))
        owner.extend([i] * len(words))
    sample = np.asarray(owner, dtype=np.int64)
    vals, size = _gather(scores, sample, tokens)
    known = np.fromiter((k is not None for k in keys), dtype=bool, count=len(keys))
    key = np.fromiter((0 if k is None else k for k in keys), dtype=np.int64, count=len(keys))
    return {"sample": sample, "size": size, "mean": _pooled(vals, size, "mean"), "key": key, "known": known}


def informativeness(words: dict, power: float) -> tuple[np.ndarray, np.ndarray]:
    """(I(w) = mean score / n(w) ** power, -inf without a score; n(w)) for every word of the
    dataset, n(w) = samples whose prose holds w's sentence (1 when the sentence is unknown)."""
    key, sample, known = words["key"], words["sample"], words["known"]
    recur = np.ones(len(key))
    if known.any() and power:
        pairs = np.unique(np.stack([key[known], sample[known]], axis=1), axis=0)  # (sentence, sample) once each
        ukey, n_samples = np.unique(pairs[:, 0], return_counts=True)
        recur[known] = n_samples[np.searchsorted(ukey, key[known])]
    score = words["mean"]
    return np.where(np.isfinite(score), score / recur ** power, -np.inf), recur


def _by_priority(idx: np.ndarray, prio: np.ndarray) -> np.ndarray:
    return idx[np.lexsort((idx, -prio[idx]))]


def _concat(parts: list[dict], offsets: list[int]) -> dict:
    """One table from per-batch tables, their `sample` shifted by each batch's first sample."""
    if len(parts) == 1:
        return parts[0]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["sample"] = np.concatenate([p["sample"] + off for p, off in zip(parts, offsets)])
    return out


def select_codeblock(cfg, segments: list[dict], gce: list[np.ndarray]) -> Selection:
    """The selection of in-memory rows (tests, small pools); `plan_codeblock` streams."""
    sel = plan_codeblock(cfg, lambda scored: [(segments, gce if scored else None)])
    sel.samples = list(sel.samples)
    return sel


def plan_codeblock(cfg, batches: Callable[[bool], Iterable[tuple[list[dict], list[np.ndarray] | None]]]) -> Selection:
    """CodeBlock's selection over the rows `batches(scored)` yields, batch by batch, in a fixed order
    (with their per-token scores when `scored`). Two passes: the first keeps only per-unit and
    per-word numbers, the budget is spent over the whole dataset, and the second rebuilds the
    chosen units' tokens. The returned Selection's `samples` is that second pass, a one-shot
    iterator; `words` and the prose word counts in `extra` are complete once it is exhausted."""
    sc = cfg.select
    unit_parts, word_parts, offsets, n_resp, ids = [], [], [], [], []
    n_items_total = 0
    for segs, scores in batches(True):
        offsets.append(len(ids))
        unit_parts.append(item_table(segs, scores, cfg.score.aggregate, sc.granularity))
        word_parts.append(prose_table(segs, scores))
        n_resp.extend(r["response_end"] - r["response_start"] for r in segs)
        ids.extend(r["id"] for r in segs)
        n_items_total += sum(len(r["item_tokens"]) for r in segs)
    n = len(ids)
    if not n:
        offsets, unit_parts, word_parts = [0], [item_table([], [], "mean")], [prose_table([], [])]
    items, words = _concat(unit_parts, offsets), _concat(word_parts, offsets)
    del unit_parts, word_parts
    u_pct = percentile_rank(items["U"])
    alpha = sc.alpha if sc.rerank in ("reach", "both") else 0.0
    beta = sc.beta if sc.rerank in ("bridge", "both") else 0.0
    prio = gated_priority(u_pct, items["reach"], items["bridge"], alpha, beta, sc.tau)
    w_score, w_recur = informativeness(words, sc.prose_recurrence_power)
    n_resp_arr = np.asarray(n_resp, dtype=np.int64)

    item_groups = budget_groups(sc.scope, n, items["sample"])
    prose_groups = budget_groups(sc.scope, n, words["sample"])
    group_tokens = [float(n_resp_arr.sum())] if sc.scope == "global" else n_resp_arr.astype(float).tolist()
    chosen_items: list[int] = []
    chosen_words: list[int] = []
    for ig, pg, tokens in zip(item_groups, prose_groups, group_tokens):
        budget = sc.budget * tokens
        pg = pg[np.isfinite(w_score[pg])]
        got_w, taken = fill_budget(_by_priority(pg, w_score), words["size"], sc.nl_share * budget)
        chosen_words.extend(got_w)
        cand = ig[prio[ig] > 0]
        got, _ = fill_budget(_by_priority(cand, prio), items["size"], budget - taken)
        chosen_items.extend(got)

    selected = np.zeros(len(items["size"]), dtype=bool)
    selected[chosen_items] = True
    word_chosen = np.zeros(len(words["size"]), dtype=bool)
    word_chosen[chosen_words] = True
    extra = {
        "items_total": n_items_total,
        "units_total": len(items["size"]),
        "items_with_utility": int(np.isfinite(items["U"]).sum()),
        "items_above_tau": int((prio > 0).sum()),
        "prose_words_eligible": len(words["size"]),
        "prose_words_selected": len(chosen_words),
        "prose_words_distinct": 0,  # counted in the labelling pass
        "prose_tokens_eligible": int(words["size"].sum()),
        "prose_selected_mean_recurrence": float(w_recur[chosen_words].mean()) if chosen_words else 0.0,
        "mean_reach_selected": float(items["reach"][selected].mean()) if selected.any() else 0.0,
        "mean_bridge_selected": float(items["bridge"][selected].mean()) if selected.any() else 0.0,
    }
    table = _items_table(ids, items, u_pct, prio, selected) if sc.granularity == "item" else None
    sel = Selection("codeblock", [], extra=extra, items=table)
    unit_start = np.searchsorted(items["sample"], np.arange(n + 1))  # units and words are in sample order
    word_start = np.searchsorted(words["sample"], np.arange(n + 1))
    del items, words, prio, u_pct, w_score
    sel.samples = _label_pass(sel, batches, sc.granularity, selected, word_chosen, unit_start, word_start)
    return sel


def _label_pass(sel: Selection, batches, granularity: str, selected: np.ndarray, word_chosen: np.ndarray,
                unit_start: np.ndarray, word_start: np.ndarray) -> Iterator[Sample]:
    """Second pass: each row's Sample, from the chosen units and words of the first."""
    counts: dict[str, int] = {}
    i = 0
    for segs, _ in batches(False):
        units = code_units(segs, granularity)
        u0 = unit_start[i]
        for b, r in enumerate(segs):
            s = sample_from_row(r)
            a, z = unit_start[i + b] - u0, unit_start[i + b + 1] - u0
            picked = np.flatnonzero(selected[u0 + a:u0 + z]) + a
            code = np.unique(np.fromiter(chain.from_iterable(units["tokens"][k] for k in picked), np.int64))
            words = _words_of(r)
            w_on = np.flatnonzero(word_chosen[word_start[i + b]:word_start[i + b + 1]])
            texts = r.get("prose_word_text") or [""] * len(words)
            for k in w_on:
                counts[texts[k]] = counts.get(texts[k], 0) + 1
            prose = np.unique(np.fromiter(chain.from_iterable(words[k] for k in w_on), np.int64))
            s.selected = np.union1d(code, prose)
            s.n_code, s.n_prose = len(code), len(s.selected) - len(code)
            s.n_items = len({int(units["item"][k]) for k in picked})
            yield s
        i += len(segs)
    sel.words = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    sel.extra["prose_words_distinct"] = len(counts)


def _items_table(ids: list[str], items, u_pct, prio, selected):
    import pyarrow as pa

    return pa.table({
        "id": pa.array([ids[i] for i in items["sample"].tolist()], pa.string()),
        "item": pa.array(items["local"], pa.int32()),
        "n_tokens": pa.array(items["size"], pa.int32()),
        "U": pa.array(items["U"], pa.float32()),
        "U_pct": pa.array(u_pct, pa.float32()),
        "reach": pa.array(items["reach"], pa.float32()),
        "bridge": pa.array(items["bridge"], pa.float32()),
        "P": pa.array(prio, pa.float32()),
        "selected": pa.array(selected),
    })
