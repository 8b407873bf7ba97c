"""`codeblock report-selection`: one self-contained HTML page showing what a method selected, and why.

For N sampled responses (select.seed, `--n`), the response text is drawn with every coding item
boxed (selected items filled) and every supervised token in bold; hovering an item shows its
U (utility), its percentile, Reach, Bridge and the gated priority P (from
<labels_dir>/<method>/items.parquet, written by the codeblock method). Supervised prose tokens are
highlighted in a second colour. Global statistics of the method (stats.json) head the page.
No scripts, fonts or images are loaded: the file opens offline in any browser.

Inputs: the filtered pool (texts), the segments (item spans), the method's labels (+ items).
Output: <reports_dir>/selection.html (or --out).
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import numpy as np

from codeblock.stages import StageContext, StageResult

IGNORE_INDEX = -100  # label of a token without loss (as in train/sparse_loss.py; torch not imported here)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222;background:#fafafa}
h1{font-size:1.5em}h2{font-size:1.05em;margin:0 0 .4em 0}
.stats{display:flex;flex-wrap:wrap;gap:.4em 1.5em;font-size:.9em;background:#fff;padding:.8em;border:1px solid #ddd;border-radius:6px}
.stats b{font-variant-numeric:tabular-nums}
.legend span{margin-right:1.2em}
.sample{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:1.2em 0}
.meta{font-size:.85em;color:#555;margin-bottom:.4em}
details{font-size:.88em;color:#444;margin-bottom:.5em}
pre{white-space:pre-wrap;word-wrap:break-word;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;line-height:1.55;margin:0}
.it{border:1px dashed #9aa7b8;border-radius:3px;position:relative}
.it.sel{background:#d7f5dd;border:1px solid #2e9d4a}
.it.gated{border-color:#c8ccd2;color:#555}
.it:hover{outline:2px solid #3367d6;z-index:2}
.it:hover::after{content:attr(data-tip);position:absolute;left:0;top:100%;white-space:pre;background:#222;color:#fff;
 font:11px/1.4 ui-monospace,monospace;padding:.35em .55em;border-radius:4px;z-index:10;pointer-events:none}
b.sup{font-weight:700;color:#0b5d1e}
mark.prose{background:#ffe08a;padding:0 1px;border-radius:2px}
"""


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def render_sample(response: str, items: list[dict], sup_spans: list[tuple[int, int]], prose_spans) -> str:
    """HTML for one response: items as spans (class sel if selected, tooltip with metrics), supervised
    tokens in <b class=sup>, supervised prose tokens in <mark class=prose>."""
    n = len(response)
    owner = np.full(n, -1, dtype=np.int64)
    for k, it in enumerate(items):
        owner[it["char_start"]:it["char_end"]] = k
    sup = np.zeros(n, dtype=np.int8)  # 1 code/other token, 2 prose token
    for a, b in sup_spans:
        sup[a:b] = 1
    for a, b in prose_spans:
        sup[a:b] = 2
    out: list[str] = []
    i = 0
    while i < n:
        k = owner[i]
        j = i
        while j < n and owner[j] == k:
            j += 1
        inner = []
        p = i
        while p < j:
            s = sup[p]
            q = p
            while q < j and sup[q] == s:
                q += 1
            text = html.escape(response[p:q])
            inner.append(text if s == 0 else (f'<b class="sup">{text}</b>' if s == 1 else f'<mark class="prose">{text}</mark>'))
            p = q
        body = "".join(inner)
        if k >= 0:
            it = items[k]
            cls = "it sel" if it.get("selected") else ("it gated" if it.get("P", 1.0) == 0 else "it")
            tip = (f"{it.get('kind', '')}  tokens {it.get('n_tokens', '')}\nU {_fmt(it.get('U'))}   "
                   f"U% {_fmt(it.get('U_pct'))}\nReach {_fmt(it.get('reach'))}   Bridge {_fmt(it.get('bridge'))}\n"
                   f"P {_fmt(it.get('P'))}{'   SELECTED' if it.get('selected') else ''}")
            title = tip.replace("\n", " | ")
            out.append(f'<span class="{cls}" data-tip="{html.escape(tip)}" title="{html.escape(title)}">{body}</span>')
        else:
            out.append(body)
        i = j
    return "".join(out)


def build_report(cfg, method: str = "codeblock", n: int = 20, seed: int | None = None) -> tuple[str, dict]:
    import pyarrow.parquet as pq

    from codeblock.core.models import load_tokenizer
    from codeblock.core.tokenize import encode_pair
    from codeblock.select.labels import read_segments

    lab_dir = Path(cfg.paths.labels_dir) / method
    labels = {r["id"]: r for r in pq.read_table(lab_dir / "labels.parquet").to_pylist()}
    stats = json.loads((lab_dir / "stats.json").read_text()) if (lab_dir / "stats.json").exists() else {}
    segs = {r["id"]: r for r in read_segments(cfg.paths.segments) if r["id"] in labels}
    item_info: dict[str, list[dict]] = {}
    if (lab_dir / "items.parquet").exists():
        for r in pq.read_table(lab_dir / "items.parquet").to_pylist():
            item_info.setdefault(r["id"], []).append(r)
    pool = pq.read_table(cfg.paths.filtered, columns=["id", "instruction", "response"]).to_pylist()
    texts = {r["id"]: r for r in pool if r["id"] in segs}
    ids = sorted(texts)
    rng = np.random.default_rng(cfg.select.seed if seed is None else seed)
    pick = sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False).tolist()) if ids else []
    tok = load_tokenizer(cfg.model)

    parts = []
    for idx in pick:
        sid = ids[idx]
        row, seg, lab = texts[sid], segs[sid], labels[sid]
        enc = encode_pair(tok, row["instruction"], row["response"], cfg.score.max_length)
        rs = seg["response_start"]
        supervised = [k - rs for k, x in enumerate(lab["labels"]) if x != IGNORE_INDEX]
        prose = set(seg["prose_tokens"])
        sup_spans = [tuple(enc.offsets[k]) for k in supervised if k not in prose and k < len(enc.offsets)]
        prose_spans = [tuple(enc.offsets[k]) for k in supervised if k in prose and k < len(enc.offsets)]
        info = item_info.get(sid, [])
        items = []
        for k in range(len(seg["item_char_start"])):
            it = {"char_start": seg["item_char_start"][k], "char_end": seg["item_char_end"][k],
                  "kind": seg["item_kind"][k], "n_tokens": len(seg["item_tokens"][k]),
                  "reach": seg["item_reach"][k], "bridge": seg["item_bridge"][k]}
            if k < len(info):
                it.update({key: info[k][key] for key in ("U", "U_pct", "P", "selected")})
            else:
                it["selected"] = bool(seg["item_tokens"][k]) and all(
                    lab["labels"][rs + t] != IGNORE_INDEX for t in seg["item_tokens"][k])
            items.append(it)
        n_sup = len(supervised)
        n_resp = seg["response_end"] - rs
        parts.append(
            f'<div class="sample"><h2>{html.escape(sid)}</h2>'
            f'<div class="meta">{n_resp} response tokens, {n_sup} supervised ({100 * n_sup / max(1, n_resp):.1f}%), '
            f'{sum(1 for it in items if it.get("selected"))}/{len(items)} items selected</div>'
            f'<details><summary>instruction</summary><pre>{html.escape(row["instruction"])}</pre></details>'
            f'<pre>{render_sample(row["response"], items, sup_spans, prose_spans)}</pre></div>'
        )
    keys = ["samples", "response_tokens", "supervised_tokens", "supervised_ratio", "budget", "code_tokens",
            "prose_tokens", "items_selected", "samples_zero_supervision"]
    words_path = lab_dir / "prose_words.json"
    top = json.loads(words_path.read_text())["top_words"][:30] if words_path.exists() else []
    words_html = ('<p class="legend">chosen prose words: ' + ", ".join(
        f"<mark class=\"prose\">{html.escape(w)}</mark> {c}" for w, c in top) + "</p>") if top else ""
    stat_html = "".join(f"<span>{k}: <b>{_fmt(stats[k]) if isinstance(stats.get(k), float) and stats[k] < 10 else int(stats[k])}</b></span>"
                        for k in keys if k in stats)
    page = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>CodeBlock selection: {html.escape(method)}</title><style>{CSS}</style></head><body>"
        f"<h1>What <code>{html.escape(method)}</code> selected</h1>"
        f'<div class="stats">{stat_html}</div>{words_html}'
        '<p class="legend"><span><span class="it sel">selected item</span></span>'
        '<span><span class="it">item not selected</span></span><span><span class="it gated">gated (P = 0)</span></span>'
        '<span><b class="sup">supervised token</b></span><span><mark class="prose">supervised prose token</mark></span>'
        "<span>hover an item for U, Reach, Bridge, P</span></p>"
        + "".join(parts) + "</body></html>"
    )
    return page, {"samples_rendered": len(pick)}


def run_report(cfg, method: str | None = None, n: int = 20, out: str | None = None) -> dict:
    from codeblock.core.io import atomic_write_text

    method = method or cfg.select.method
    page, metrics = build_report(cfg, method, n)
    dest = Path(out) if out else Path(cfg.paths.reports_dir) / "selection.html"
    atomic_write_text(dest, page)
    return {"outputs": [str(dest)], "metrics": metrics}


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default=None, help="method whose labels to show (default: select.method)")
    parser.add_argument("--n", type=int, default=20, help="responses to render")
    parser.add_argument("--out", default=None, help="output file (default: <reports_dir>/selection.html)")


def run(cfg, ctx: StageContext) -> StageResult:
    o = ctx.options
    res = run_report(cfg, o.get("method") or ctx.method, int(o.get("n") or 20), o.get("out"))
    return StageResult.from_dict("report", res)


def summary(res: StageResult) -> str:
    return f"wrote {res.outputs[0]} ({res.metrics['samples_rendered']} responses)"
