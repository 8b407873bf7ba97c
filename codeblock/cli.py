"""`codeblock <command> --params params.yaml [-S key=value ...]`.

Each command lives in its own module, which defines `add_args(parser)` (optional) and
`cli(cfg, args) -> int | None`. This file only dispatches, so stages never import each other
through the CLI and adding a command is one line in COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from codeblock.config import ConfigError, describe, load_config

# command -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("codeblock.data.build", "Build the canonical training pool from the configured sources."),
    "fetch-assets": ("codeblock.assets", "Fetch offline benchmarks, training packages and the default model."),
    "model": ("codeblock.models", "Resolve (and convert/cache) the configured model; print its summary."),
    "filter": ("codeblock.filter", "Stage 1: quality + long-tail filtering, dedup, decontamination."),
    "segment": ("codeblock.segment", "Stage 2: split responses into coding items and prose."),
    "score": ("codeblock.score", "Stage 3: GCE utility over core logic tokens."),
    "select": ("codeblock.select", "Stages 4-5: data-flow rerank, budgeted selection into sparse labels."),
    "report-selection": ("codeblock.report", "HTML report of the selected items."),
    "train": ("codeblock.train", "Sparse-loss fine-tuning."),
    "evaluate": ("codeblock.evaluate.cli", "pass@k on the benchmark registry."),
    "compare": ("codeblock.compare", "Method x benchmark table from MLflow."),
}


def _params_cmd(cfg, args) -> int:
    for key, default, help_ in describe():
        print(f"{key:40s} {default!r:30s} {help_}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="codeblock", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    common.add_argument("--profile", default=None, help="overlay profiles/<name>.yaml (e.g. smoke)")
    common.add_argument(
        "-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a param, as in `dvc exp run -S train.lr=2e-4`",
    )
    sub.add_parser("params", parents=[common], help="List every param with its help string.")
    argv = sys.argv[1:] if argv is None else argv
    wanted = argv[0] if argv else None
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_)
        if name == wanted:  # import only the module that runs: keeps `codeblock --help` fast
            mod = importlib.import_module(module)
            if hasattr(mod, "add_args"):
                mod.add_args(p)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.params, args.overrides, args.profile)
    except ConfigError as e:
        print(f"codeblock: config error: {e}", file=sys.stderr)
        return 2
    if args.command == "params":
        return _params_cmd(cfg, args)
    mod = importlib.import_module(COMMANDS[args.command][0])
    rc = mod.cli(cfg, args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
