"""`codeblock evaluate [--limit N] [--model-path DIR] [--method NAME] [--self-check] [--benchmarks a,b]`."""

from __future__ import annotations

import argparse


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=None, help="first N problems per benchmark (default eval.limit)")
    parser.add_argument("--model-path", default=None,
                        help="trained model or PEFT adapter folder (default: runs/<method>/model if it exists, "
                        "else model.name_or_path)")
    parser.add_argument("--method", default="base", help="label of the results folder reports/eval/<method>/")
    parser.add_argument("--self-check", action="store_true",
                        help="run the canonical solutions instead of a model (they must pass)")
    parser.add_argument("--benchmarks", default=None, help="comma-separated names (default eval.benchmarks)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def cli(cfg, args) -> int:
    from codeblock.evaluate.pipeline import default_model_path, run_evaluate

    model_path = args.model_path or (None if args.self_check else default_model_path(cfg, args.method))
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()] if args.benchmarks else None
    res = run_evaluate(cfg, model_path, args.method, self_check=args.self_check, limit=args.limit,
                       benchmarks=names, progress=not args.no_progress, print_summary=True)
    print("wrote", ", ".join(res["outputs"]))
    if args.self_check:
        bad = [n for n, b in res["results"]["benchmarks"].items()
               if b["status"] == "ok" and b["self_check"]["unexpected_failures"]]
        return 1 if bad else 0
    return 0
