"""`codeblock <command> --params params.yaml [--profile NAME] [-S key=value ...]`.

Stage commands come from the one registry (`codeblock.stages.STAGES`): the CLI builds a
`StageContext` from the options, runs `stage.run(cfg, ctx)`, prints the stage's summary, and with
`--result-json FILE` writes the `StageResult` (what a Prefect task reads back when it runs the
stage as a subprocess). Tool commands (fetch-assets, model, params) are listed in TOOLS.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from codeblock.core.config import ConfigError, describe, load_config
from codeblock.core.io import BadRowError, MissingInput
from codeblock.stages import STAGES, StageContext

# command -> (module defining cli(cfg, args) and optionally add_args(parser), help)
TOOLS: dict[str, tuple[str, str]] = {
    "fetch-assets": ("codeblock.data.assets", "Fetch offline benchmarks, training packages and the default model."),
    "model": ("codeblock.core.models", "Resolve (and convert/cache) the configured model; print its summary."),
    "experiment": ("codeblock.experiment.runner", "Methods x seeds x budgets grid with paired intervals (resumable)."),
}
# Stage commands whose CLI name differs from the stage name (kept for existing scripts).
ALIASES = {"report-selection": "report"}
# argparse dests that belong to the CLI itself, not to a stage's options
_COMMON = {"command", "params", "profile", "overrides", "method", "model_path", "no_progress", "result_json"}


def _params_cmd() -> int:
    try:
        for key, default, help_ in describe():
            print(f"{key:40s} {default!r:30s} {help_}", flush=True)
    except BrokenPipeError:  # `codeblock params | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    common.add_argument("--profile", default=None, help="overlay profiles/<name>.yaml (e.g. smoke)")
    common.add_argument(
        "-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a param, as in `dvc exp run -S train.lr=2e-4`",
    )
    return common


def _add_stage_args(p: argparse.ArgumentParser, name: str) -> None:
    stage = STAGES[name]
    if stage.per_method:
        p.add_argument("--method", default=None, help="method (default: select.method; evaluate: base)")
    if name == "evaluate":
        p.add_argument("--model-path", default=None,
                       help="trained model or PEFT adapter folder (default: runs/<method>/model if it exists, "
                       "else model.name_or_path)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--result-json", default=None, help="also write the stage result (outputs, metrics) here")
    mod = stage.load()
    if hasattr(mod, "add_args"):
        mod.add_args(p)


def _write_result(path: str, data: dict) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, p)


def build_parser(wanted: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codeblock", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = _common_parser()
    sub.add_parser("params", parents=[common], help="List every param with its default and help string.")
    for name, stage in STAGES.items():
        cli_names = [name, *(a for a, s in ALIASES.items() if s == name)]
        for cli_name in cli_names:
            p = sub.add_parser(cli_name, parents=[common], help=stage.help)
            if cli_name == wanted:  # import only the module that runs: keeps `codeblock --help` fast
                _add_stage_args(p, name)
    for name, (module, help_) in TOOLS.items():
        p = sub.add_parser(name, parents=[common], help=help_)
        if name == wanted:
            mod = importlib.import_module(module)
            if hasattr(mod, "add_args"):
                mod.add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # stage progress notes (resuming from a checkpoint, samples kept, ...) go to stderr
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        cfg = load_config(args.params, args.overrides, args.profile)
    except ConfigError as e:
        print(f"codeblock: config error: {e}", file=sys.stderr)
        return 2
    if args.command == "params":
        return _params_cmd()
    if args.command in TOOLS:
        mod = importlib.import_module(TOOLS[args.command][0])
        return int(mod.cli(cfg, args) or 0)
    name = ALIASES.get(args.command, args.command)
    stage = STAGES[name]
    options = {k: v for k, v in vars(args).items() if k not in _COMMON}
    ctx = StageContext(method=getattr(args, "method", None), model_path=getattr(args, "model_path", None),
                       progress=not args.no_progress, options=options)
    try:
        res = stage.run(cfg, ctx)
    except (MissingInput, BadRowError) as e:  # bad or missing input: say what, not a traceback
        print(f"codeblock {args.command}: error: {e}", file=sys.stderr)
        return 2
    mod = stage.load()
    if hasattr(mod, "summary"):
        text = mod.summary(res)
        if text:
            print(text)
    # under torchrun / accelerate launch every rank runs this: rank 0's result is the stage's
    if args.result_json and os.environ.get("RANK", "0") == "0":
        _write_result(args.result_json, res.to_json())
    return res.exit_code


if __name__ == "__main__":
    sys.exit(main())
