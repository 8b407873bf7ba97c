"""`codeblock evaluate`: the stage entry point (registry signature) and its command-line options."""

from __future__ import annotations

import argparse

from codeblock.stages import StageContext, StageResult


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=None, help="first N problems per benchmark (default eval.limit)")
    parser.add_argument("--self-check", action="store_true",
                        help="run the canonical solutions instead of a model (they must pass)")
    parser.add_argument("--benchmarks", default=None, help="comma-separated names (default eval.benchmarks; "
                        "with --samples: inferred from the task ids)")
    parser.add_argument("--samples", default=None, metavar="FILE",
                        help="score an evalplus/bigcodebench samples.jsonl (task_id + solution or completion) "
                        "instead of generating; writes eval_results.json in evalplus's shape next to results.json")


def run(cfg, ctx: StageContext) -> StageResult:
    from codeblock.evaluate.pipeline import default_model_path, run_evaluate

    o = ctx.options
    method = ctx.method or "base"
    self_check = bool(o.get("self_check"))
    samples = o.get("samples")
    model_path = ctx.model_path or (None if self_check or samples else default_model_path(cfg, method))
    names = [n.strip() for n in o["benchmarks"].split(",") if n.strip()] if o.get("benchmarks") else None
    res = run_evaluate(cfg, model_path, method, self_check=self_check, limit=o.get("limit"),
                       benchmarks=names, progress=ctx.progress, samples_path=samples)
    if res["results"] is None:  # a rank other than 0: it generated its share; rank 0 writes the results
        return StageResult.from_dict("evaluate", res, method=method)
    bad = self_check and any(b["status"] == "ok" and b["self_check"]["unexpected_failures"]
                             for b in res["results"]["benchmarks"].values())
    return StageResult.from_dict("evaluate", res, method=method, exit_code=1 if bad else 0)


def summary(res: StageResult) -> str:
    from codeblock.evaluate.results import format_table

    if res.payload.get("results") is None:
        g = res.payload.get("generation") or {}
        return (f"evaluate rank {res.payload.get('rank')}: generated its share of {g.get('tasks_generated', 0)} "
                f"task(s) in {g.get('generate_seconds', 0.0):.1f}s; rank 0 writes the results")
    return format_table(res.payload["results"]) + "\nwrote " + ", ".join(res.outputs)
