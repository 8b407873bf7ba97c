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

from itertools import chain

import numpy as np

from codeblock.select.labels import Selection, budget_groups, fill_budget, sample_from_row


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
    """Flat per-unit arrays over the dataset: sample, local item index, size, U, Reach, Bridge."""
    u = code_units(segments, granularity)
    n_items = np.fromiter((len(r["item_tokens"]) for r in segments), dtype=np.int64, count=len(segments))
    local_of_item = np.arange(int(n_items.sum())) - np.repeat(np.cumsum(n_items) - n_items, n_items)
    vals, n_core = _gather(gce, u["sample"], u["core"])
    reach = np.fromiter(chain.from_iterable(r["item_reach"] for r in segments), dtype=np.float64,
                        count=int(n_items.sum()))
    bridge = np.fromiter(chain.from_iterable(r["item_bridge"] for r in segments), dtype=np.float64,
                         count=int(n_items.sum()))
    size = np.fromiter((len(t) for t in u["tokens"]), dtype=np.int64, count=len(u["tokens"]))
    return {"sample": u["sample"], "local": local_of_item[u["item"]], "size": size, "tokens": u["tokens"],
            "U": _pooled(vals, n_core, aggregate), "reach": reach[u["item"]], "bridge": bridge[u["item"]]}


def prose_table(segments: list[dict], scores: list[np.ndarray], power: float) -> dict:
    """Flat per-word arrays: sample, tokens, size, text, informativeness (module docstring).

    Rows without `prose_words` (segments written before words) count each prose token as a word."""
    tokens, text, keys, owner = [], [], [], []
    for i, r in enumerate(segments):
        words = r.get("prose_words")
        if words is None:
            words = [[k] for k in r["prose_tokens"]]
        tokens.extend(words)
        text.extend(r.get("prose_word_text") or [""] * len(words))
        keys.extend(r.get("prose_word_sentence") or [None] * len(words))
        owner.extend([i] * len(words))
    sample = np.asarray(owner, dtype=np.int64)
    vals, size = _gather(scores, sample, tokens)
    score = _pooled(vals, size, "mean")
    known = np.array([k is not None for k in keys], dtype=bool)
    recur = np.ones(len(tokens))
    if known.any() and power:
        key = np.array([k for k in keys if k is not None], dtype=np.int64)
        pairs = np.unique(np.stack([key, sample[known]], axis=1), axis=0)  # (sentence, sample) once each
        ukey, n_samples = np.unique(pairs[:, 0], return_counts=True)
        recur[known] = n_samples[np.searchsorted(ukey, key)]
    score = np.where(np.isfinite(score), score / recur ** power, -np.inf)
    return {"sample": sample, "tokens": tokens, "size": size, "text": text, "score": score, "recur": recur}


def _by_priority(idx: np.ndarray, prio: np.ndarray) -> np.ndarray:
    return idx[np.lexsort((idx, -prio[idx]))]


def select_codeblock(cfg, segments: list[dict], gce: list[np.ndarray]) -> Selection:
    sc = cfg.select
    items = item_table(segments, gce, cfg.score.aggregate, sc.granularity)
    u_pct = percentile_rank(items["U"])
    alpha = sc.alpha if sc.rerank in ("reach", "both") else 0.0
    beta = sc.beta if sc.rerank in ("bridge", "both") else 0.0
    prio = gated_priority(u_pct, items["reach"], items["bridge"], alpha, beta, sc.tau)
    words = prose_table(segments, gce, sc.prose_recurrence_power)
    n_resp = np.array([r["response_end"] - r["response_start"] for r in segments], dtype=np.int64)

    n = len(segments)
    item_groups = budget_groups(sc.scope, n, items["sample"])
    prose_groups = budget_groups(sc.scope, n, words["sample"])
    group_tokens = [float(n_resp.sum())] if sc.scope == "global" else n_resp.astype(float).tolist()
    chosen_items: list[int] = []
    chosen_words: list[int] = []
    for ig, pg, tokens in zip(item_groups, prose_groups, group_tokens):
        budget = sc.budget * tokens
        pg = pg[np.isfinite(words["score"][pg])]
        got_w, taken = fill_budget(_by_priority(pg, words["score"]), words["size"], sc.nl_share * budget)
        chosen_words.extend(got_w)
        cand = ig[prio[ig] > 0]
        got, _ = fill_budget(_by_priority(cand, prio), items["size"], budget - taken)
        chosen_items.extend(got)

    selected = np.zeros(len(items["size"]), dtype=bool)
    selected[chosen_items] = True
    per_code: list[list[int]] = [[] for _ in range(n)]
    per_item: list[set] = [set() for _ in range(n)]
    for k in chosen_items:
        si = items["sample"][k]
        per_code[si].extend(items["tokens"][k])
        per_item[si].add(int(items["local"][k]))
    per_prose: list[list[int]] = [[] for _ in range(n)]
    counts: dict[str, int] = {}
    for k in chosen_words:
        per_prose[words["sample"][k]].extend(words["tokens"][k])
        counts[words["text"][k]] = counts.get(words["text"][k], 0) + 1

    samples = []
    for i, r in enumerate(segments):
        s = sample_from_row(r)
        code, prose = np.unique(np.asarray(per_code[i], np.int64)), np.unique(np.asarray(per_prose[i], np.int64))
        s.selected = np.union1d(code, prose)
        s.n_code, s.n_prose, s.n_items = len(code), len(s.selected) - len(code), len(per_item[i])
        samples.append(s)

    extra = {
        "items_total": int(sum(len(r["item_tokens"]) for r in segments)),
        "units_total": len(items["size"]),
        "items_with_utility": int(np.isfinite(items["U"]).sum()),
        "items_above_tau": int((prio > 0).sum()),
        "prose_words_eligible": len(words["size"]),
        "prose_words_selected": len(chosen_words),
        "prose_words_distinct": len(counts),
        "prose_tokens_eligible": int(words["size"].sum()),
        "prose_selected_mean_recurrence": float(words["recur"][chosen_words].mean()) if chosen_words else 0.0,
        "mean_reach_selected": float(items["reach"][selected].mean()) if selected.any() else 0.0,
        "mean_bridge_selected": float(items["bridge"][selected].mean()) if selected.any() else 0.0,
    }
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return Selection("codeblock", samples, extra=extra, items=_items_table(segments, items, u_pct, prio, selected)
                     if sc.granularity == "item" else None, words=top)


def _items_table(segments, items, u_pct, prio, selected):
    import pyarrow as pa

    ids = [segments[i]["id"] for i in items["sample"].tolist()]
    return pa.table({
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
