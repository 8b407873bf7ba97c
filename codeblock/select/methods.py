"""The `select` stage: build the sparse labels of one method (CodeBlock or a baseline).

Methods: `codeblock` (codeblock/select/priority.py, docs/method.md stages 4-5) and the baselines of
codeblock/select/baselines.py, all returning a `Selection` that codeblock/select/labels.py writes.
Any of them may carry ablation settings, `codeblock+rerank=none` (codeblock/select/variants.py).
"""

from __future__ import annotations

from codeblock.select.labels import segment_batches, write_selection
from codeblock.select.priority import plan_codeblock
from codeblock.select.variants import variant_config
from codeblock.stages import StageContext, StageResult


def run_select(cfg, method: str | None = None, scores: dict[str, dict] | None = None) -> dict:
    """Build the sparse labels of `method` (default cfg.select.method) and write them (see module doc).

    `scores` (id -> {"input_ids", "response_start", "response_end", "gce"}) defaults to the
    score cache (codeblock.select.score_cache); methods that need no scores never load them.
    CodeBlock streams: it walks the segments twice, a batch at a time, and reads the score cache
    one shard at a time (docs/scale-out.md), so its memory grows with the number of items, not tokens."""
    from codeblock.core.io import sha256_file
    from codeblock.select import baselines

    method = method or cfg.select.method
    base, cfg = variant_config(cfg, method)
    if base == "codeblock":
        from codeblock.core.io import require_input
        from codeblock.select.score_cache import ScoreLookup

        require_input(cfg.paths.segments, "segments", "codeblock segment")
        lookup = ScoreLookup(cfg) if scores is None else scores
        sel = plan_codeblock(cfg, segment_batches(cfg.paths.segments, lookup, cfg.select.utility))
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
