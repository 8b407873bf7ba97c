"""The Prefect flow `experiment`: the grid of `codeblock experiment`, its cells as Prefect tasks.

    python -m flows.experiment [--params params.yaml] [--profile smoke] [-S experiment.workers=4]

The flow calls the same function as the command (`codeblock.experiment.runner.run_experiment`);
only the way work is dispatched differs: each shared stage is a task, and each cell is a task
(tagged `codeblock-cell`) that runs in a task-runner thread limited to `experiment.workers` at
once. With one worker the cell runs inside the flow's process; with more, each cell runs in its
own child process, so cells never share MLflow or environment state (and a launcher can give each
its own GPU through CUDA_VISIBLE_DEVICES). For a limit that spans several flow runs or machines,
add a Prefect tag limit: `prefect concurrency-limit create codeblock-cell N`.

Retries re-run a failed cell only (a finished one is skipped by its done-marker; its train stage
resumes from the last checkpoint). The table lands as a Prefect markdown artifact.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from codeblock.core.config import load_config  # noqa: E402
from codeblock.experiment import runner as R  # noqa: E402
from codeblock.experiment.grid import CELL_STAGES  # noqa: E402

CELL_TAG = "codeblock-cell"


@task(name="experiment-shared", cache_policy=NO_CACHE, persist_result=False, task_run_name="{stage}")
def shared_task(ref: dict[str, Any], stage: str) -> list[str]:
    return R.in_process_stage(ref, stage)


@task(name="experiment-cell", cache_policy=NO_CACHE, persist_result=False, task_run_name="cell-{key}", tags=[CELL_TAG])
def cell_task(ref: dict[str, Any], key: str, in_process: bool) -> dict[str, Any]:
    res = R.execute_cell(ref, key, in_process=in_process, progress=False)
    get_run_logger().info("cell %s: %s", key, "already done" if res.get("skipped") else f"done in {res.get('seconds')} s")
    return res


@flow(name="experiment", log_prints=True)
def experiment(params: str = "params.yaml", profile: str | None = None,
               overrides: list[str] | None = None) -> dict[str, Any]:
    """Methods x seeds x budgets (experiment.*), resumable; see codeblock/experiment/runner.py."""
    ref = R.config_ref(params, profile, overrides)
    cfg = R.load(ref)
    logger = get_run_logger()
    timeout = cfg.pipeline.task_timeout_s * len(CELL_STAGES) or None
    cell = cell_task.with_options(retries=cfg.pipeline.task_retries, retry_delay_seconds=cfg.pipeline.retry_delay_s,
                                  timeout_seconds=timeout)
    in_process = cfg.experiment.workers <= 1

    def shared(r: dict[str, Any], stage: str) -> list[str]:
        return shared_task(r, stage)

    def cells(r: dict[str, Any], keys: list[str]) -> list[dict[str, Any] | BaseException]:
        futures = [cell.submit(r, k, in_process) for k in keys]
        out: list[dict[str, Any] | BaseException] = []
        for f in futures:
            try:
                out.append(f.result())
            except Exception as e:  # noqa: BLE001 - reported per cell; the table uses the others
                out.append(e)
        return out

    res = R.run_experiment(ref, map_cells=cells, shared_runner=shared, progress=False, log=logger.info)
    create_markdown_artifact(markdown=res["markdown"], key="codeblock-experiment",
                             description=f"experiment {cfg.experiment.name}: pass@1 with intervals")
    for key, why in res["failed"].items():
        logger.error("cell %s failed: %s", key, why)
    return {k: res[k] for k in ("run_id", "cells", "ran", "failed", "reused", "outputs")}


def run(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None) -> dict:
    """The flow with a task runner of `experiment.workers` threads (the concurrency limit)."""
    cfg = load_config(params, overrides, profile)  # fails fast on a bad config
    limited = experiment.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(1, cfg.experiment.workers)))
    return limited(params=params, profile=profile, overrides=list(overrides or []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.experiment", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="overlay profiles/<name>.yaml (e.g. smoke)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    res = run(args.params, args.profile, args.overrides)
    print("wrote " + ", ".join(res["outputs"]))
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
