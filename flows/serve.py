"""Serve the compare flow from this process (`flow.serve`): no work pool, no worker.

    python -m flows.serve [--profile smoke] [--cron "0 3 * * *"]

Runs are triggered from the Prefect UI/CLI (`prefect deployment run 'codeblock-compare/codeblock-serve'`)
or by the optional schedule, and execute here, in the repo's working directory.
"""

from __future__ import annotations

import argparse
import sys

from flows.pipeline import compare


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="codeblock-serve")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--cron", default=None, help="optional schedule, e.g. '0 3 * * *'")
    args = ap.parse_args(argv)
    compare.serve(name=args.name, parameters={"params": args.params, "profile": args.profile},
                  cron=args.cron, tags=["codeblock", "serve"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
