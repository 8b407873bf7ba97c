"""`codeblock report-selection`: one self-contained HTML page with items, metrics on hover, supervision."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from codeblock.report.selection import render_sample


def test_render_sample_marks_items_tokens_and_escapes():
    text = "Use <b> & this:\nx = a < b\ny = x\n"
    i0, i1 = text.index("x = a"), text.index("y = x")
    items = [
        {"char_start": i0, "char_end": i0 + 9, "kind": "expression_statement", "n_tokens": 5, "U": 0.7, "U_pct": 0.9,
         "reach": 0.5, "bridge": 0.25, "P": 1.23, "selected": True},
        {"char_start": i1, "char_end": i1 + 5, "kind": "expression_statement", "n_tokens": 3, "U": 0.1, "U_pct": 0.2,
         "reach": 0.0, "bridge": 0.0, "P": 0.0, "selected": False},
    ]
    out = render_sample(text, items, sup_spans=[(i0, i0 + 9)], prose_spans=[(4, 7)])
    assert "&lt;b&gt; &amp;" not in out  # the prose token <b> is wrapped, its neighbours escaped
    assert '<mark class="prose">&lt;b&gt;</mark>' in out and "&amp; this" in out
    assert '<span class="it sel"' in out and '<span class="it gated"' in out
    assert 'Reach 0.500   Bridge 0.250' in html.unescape(out) and "P 1.230   SELECTED" in html.unescape(out)
    assert '<b class="sup">x = a &lt; b</b>' in out
    # nothing lost: stripping tags and unescaping gives the text back
    assert html.unescape(re.sub(r"<[^>]+>", "", out)) == text


def test_report_selection_end_to_end(cfg, default_model_dir, tmp_path):
    from codeblock.report.selection import run_report
    from codeblock.select.labels import read_segments
    from codeblock.select.methods import run_select
    from codeblock.select.segment import run_segment

    cfg.model.name_or_path = default_model_dir
    cfg.tracking.enabled = False
    cfg.segment.workers = 1
    rows = [{"id": f"s{i}", "instruction": f"Task {i}",
             "response": f"Compute the **total** of <values>:\n```python\ndef total{i}(xs):\n    acc = 0\n"
                         f"    for x in xs:\n        acc += x * {i}\n    return acc\n\nprint(total{i}([1, 2]))\n```\n",
             "source": "t"} for i in range(30)]
    Path(cfg.paths.filtered).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), cfg.paths.filtered)
    run_segment(cfg)
    segs = read_segments(cfg.paths.segments)
    rng = np.random.default_rng(0)
    scores = {s["id"]: {"input_ids": s["input_ids"], "response_start": s["response_start"],
                        "response_end": s["response_end"], "gce": rng.random(s["response_end"] - s["response_start"])}
              for s in segs}
    cfg.select.budget = 0.1
    run_select(cfg, "codeblock", scores=scores)
    res = run_report(cfg, n=5)
    page = Path(res["outputs"][0]).read_text()
    assert res["outputs"][0] == str(Path(cfg.paths.reports_dir) / "selection.html")
    assert page.count('<div class="sample">') == 5
    assert "&lt;values&gt;" in page and "<values>" not in page
    assert '<span class="it sel"' in page and "Reach" in page and "Bridge" in page and "U%" in page
    assert "supervised_ratio" in page
    # self-contained: no external scripts, styles, fonts or images
    assert not re.search(r"<script|<link|src=|@import|url\(", page)
