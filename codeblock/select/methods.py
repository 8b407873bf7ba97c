"""The `select` stage: build the sparse labels of one method (CodeBlock or a baseline).

Methods: `codeblock` (codeblock/select/priority.py, docs/method.md stages 4-5) and the baselines of
codeblock/select/baselines.py, all returning a `Selection` that codeblock/select/labels.py writes.
Any of them may carry ablation settings, `codeblock+rerank=none` (codeblock/select/variants.py).
"""

from __future__ import annotations

from codeblock.select.labels import join_scores, load_scores, read_segments, write_selection
from codeblock.select.priority import select_codeblock
from codeblock.select.variants import variant_config
from codeblock.stages import StageContext, StageResult


def run_select(cfg, method: str | None = None, scores: dict[str, dict] | None = None) -> dict:
    """Build the sparse labels of `method` (default cfg.select.method) and write them (see module doc).

    `scores` (id -> {"input_ids", "response_start", "response_end", "gce"}) defaults to
    codeblock.select.score.load_scores(cfg); methods that need no scores never load them."""
    from codeblock.core.io import sha256_file
    from codeblock.select import baselines

    method = method or cfg.select.method
    base, cfg = variant_config(cfg, method)
    if base == "codeblock":
        segments = read_segments(cfg.paths.segments)
        scores = load_scores(cfg) if scores is None else scores
        util = join_scores(segments, scores, cfg.paths.segments, column=cfg.select.utility)
        sel = select_codeblock(cfg, segments, util)
        sel.inputs = {cfg.paths.segments: sha256_file(cfg.paths.segments)}
    elif base in baselines.METHODS:
        sel = baselines.METHODS[base](cfg, scores)
    else:
        known = ["codeblock", *baselines.METHODS]
        raise ValueError(f"select.method {method!r}: {base!r} is not one of {known}")
    sel.method = method
    return write_selection(cfg, sel)


def run(cfg, ctx: StageContext) -> StageResult:
    res = run_select(cfg, ctx.method)
    return StageResult.from_dict("select", res, method=ctx.method or cfg.select.method)


def summary(res: StageResult) -> str:
    m = res.metrics
    keys = ("samples", "response_tokens", "supervised_tokens", "supervised_ratio", "budget", "code_tokens",
            "prose_tokens", "items_selected", "samples_zero_supervision")
    lines = [f"{k:26s} {m[k]}" for k in keys]
    words = res.payload.get("top_words")
    if words:
        lines.append("top prose words           " + ", ".join(f"{w} ({c})" for w, c in words[:15]))
    return "\n".join([*lines, "wrote " + ", ".join(res.outputs)])
