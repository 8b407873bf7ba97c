"""`codeblock experiment`: run the grid (methods x seeds x budgets) and write its statistics.

    codeblock experiment [--profile smoke] [-S experiment.seeds=[0,1]] [--show]

One function, `run_experiment`, is behind the command and the Prefect flow (`flows/experiment.py`):
1. one MLflow parent run for the experiment (tagged with its name and grid);
2. the shared stages (data, then filter -> segment -> score when a method needs them) once; a
   shared stage whose configuration hash and outputs are unchanged since the experiment last ran
   it is skipped (`shared.json` in the experiment folder);
3. every cell that is not done (see `codeblock.experiment.grid`): in this process one after the
   other when `experiment.workers` is 1, else each in its own process, `workers` at a time (the
   flow hands in Prefect tasks instead). A failed cell does not stop the others; the command
   exits non-zero after the table is written from the cells that finished;
4. the table, JSON and plots (`codeblock.experiment.tables`, `.plots`), logged to the parent run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from codeblock.core.config import load_config
from codeblock.core.io import write_json
from codeblock.core.launch import StageFailed, run_command
from codeblock.core.params import Config
from codeblock.experiment import grid as G
from codeblock.stages import SHARED_CHAIN, StageContext, stage_hash

SHARED_MARKER = "shared.json"

# (config ref, stage name) -> the stage's outputs; (config ref, cell keys) -> per-cell result or exception
SharedRunner = Callable[[dict[str, Any], str], list[str]]
CellMapper = Callable[[dict[str, Any], list[str]], list[dict[str, Any] | BaseException]]


def config_ref(params: str = "params.yaml", profile: str | None = None,
               overrides: list[str] | None = None) -> dict[str, Any]:
    """What a cell process or task receives instead of a Config: enough to load it again."""
    return {"params": params, "profile": profile or None, "overrides": list(overrides or [])}


def load(ref: dict[str, Any]) -> Config:
    return load_config(ref["params"], ref["overrides"], ref["profile"])


# ---------------------------------------------------------------------------------------------
# Shared stages, computed once.


def shared_stages(cfg: Config) -> list[str]:
    chain = any(m not in cfg.pipeline.pool_only_methods for m in cfg.experiment.methods)
    return ["data", *(SHARED_CHAIN if chain else ())]


def _stamp(paths: list[str]) -> list[list[Any]] | None:
    """(path, size, mtime_ns) of each output: a rewrite by anyone else shows; None if one is missing."""
    out = []
    for p in paths:
        q = Path(p)
        if not q.exists():
            return None
        files = [q] if q.is_file() else sorted(x for x in q.rglob("*") if x.is_file())
        out.append([p, sum(f.stat().st_size for f in files), max((f.stat().st_mtime_ns for f in files), default=0)])
    return out


def run_shared(ref: dict[str, Any], runner: SharedRunner, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run the shared stages that changed (and every one after the first that did)."""
    cfg = load(ref)
    marker_path = G.experiment_dir(cfg) / SHARED_MARKER
    done: dict[str, Any] = {}
    if marker_path.exists():
        import json

        try:
            done = json.loads(marker_path.read_text())
        except (OSError, ValueError):
            done = {}
    status: dict[str, str] = {}
    rerun = False
    for name in shared_stages(cfg):
        h = stage_hash(cfg, name)
        prev = done.get(name) or {}
        if not rerun and prev.get("hash") == h and prev.get("stamp") and _stamp(prev["outputs"]) == prev["stamp"]:
            status[name] = "reused"
            continue
        rerun = True
        outputs = runner(ref, name)
        done[name] = {"hash": h, "outputs": outputs, "stamp": _stamp(outputs)}
        write_json(marker_path, done)
        status[name] = "ran"
        log(f"shared stage {name}: done")
    return status


def in_process_stage(ref: dict[str, Any], name: str) -> list[str]:
    from codeblock.stages import run_stage

    return list(run_stage(name, load(ref), StageContext()).outputs)


# ---------------------------------------------------------------------------------------------
# Cells.


def cell_command(ref: dict[str, Any], key: str) -> list[str]:
    cmd = [sys.executable, "-m", "codeblock.experiment.runner", "--params", ref["params"], "--cell", key]
    if ref["profile"]:
        cmd += ["--profile", ref["profile"]]
    for o in ref["overrides"]:
        cmd += ["-S", o]
    return cmd


def run_cell_process(ref: dict[str, Any], key: str) -> dict[str, Any]:
    """One cell in a child process (inherits CODEBLOCK_PARENT_RUN_ID: its run nests under the
    experiment's). Its output goes to <cell>/cell.log."""
    base = load(ref)
    cell = G.find_cell(base, key)
    log_path = G.cell_dir(base, cell) / "cell.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as fh:
        def log_line(line: str) -> None:
            fh.write(line + "\n")
            fh.flush()

        try:  # the stage launcher: own process group, taken down with this process on SIGTERM
            run_command(cell_command(ref, key), log=log_line, env=dict(os.environ), name=f"cell {key}")
        except StageFailed as e:
            raise RuntimeError(f"cell {key} failed (exit code {e.returncode}); see {log_path}") from e
    return {**(G.read_marker(base, cell) or {}), "skipped": False}


def execute_cell(ref: dict[str, Any], key: str, in_process: bool, progress: bool = True) -> dict[str, Any]:
    return G.run_cell(ref, key, progress=progress) if in_process else run_cell_process(ref, key)


def local_mapper(workers: int, progress: bool = True) -> CellMapper:
    """Sequential in this process (workers <= 1) or `workers` child processes at a time."""

    def run(ref: dict[str, Any], keys: list[str]) -> list[dict[str, Any] | BaseException]:
        def one(key: str) -> dict[str, Any] | BaseException:
            try:
                return execute_cell(ref, key, in_process=workers <= 1, progress=progress)
            except Exception as e:  # noqa: BLE001 - a failed cell is reported, the others go on
                return e

        if workers <= 1:
            from tqdm.auto import tqdm

            return [one(k) for k in tqdm(keys, desc="experiment cells", disable=not progress)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, keys))

    return run


# ---------------------------------------------------------------------------------------------
# The experiment.


def run_experiment(ref: dict[str, Any], *, map_cells: CellMapper | None = None,
                   shared_runner: SharedRunner | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the grid of `ref`'s config (resuming), then write the statistics. See the module doc."""
    from codeblock.core.tracking import parent_run
    from codeblock.experiment import tables

    ref = G.grid_ref(ref)
    cfg = load(ref)
    grid = G.cells(cfg)  # a bad grid fails before any work
    e = cfg.experiment
    tags = {"codeblock.experiment": e.name, "codeblock.stage": "experiment", "methods": ",".join(e.methods),
            "seeds": ",".join(map(str, e.seeds)), "budgets": ",".join(map(str, e.budgets)),
            "codeblock.profile": ref["profile"] or "default"}
    t0 = time.time()
    with parent_run(cfg, f"experiment {e.name}", tags=tags) as pr:
        pr.log_params({"params": ref["params"], "profile": ref["profile"] or "",
                       "overrides": " ".join(ref["overrides"]), "cells": len(grid)})
        shared = run_shared(ref, shared_runner or in_process_stage, log)
        cell_cfgs = {c: G.cell_config(ref, c, cfg) for c in grid}
        todo = [c.key for c in grid if not G.is_done(cell_cfgs[c], c)]
        log(f"experiment {e.name}: {len(grid)} cells, {len(grid) - len(todo)} already done, {len(todo)} to run")
        results = (map_cells or local_mapper(e.workers, progress))(ref, todo) if todo else []
        failed = {k: str(r) for k, r in zip(todo, results) if isinstance(r, BaseException)}
        ran = [k for k, r in zip(todo, results) if not isinstance(r, BaseException) and not r.get("skipped")]
        summary = tables.write_all(cfg, cell_cfgs, tracker=pr)
        pr.log_metrics({"cells/total": len(grid), "cells/ran": len(ran), "cells/failed": len(failed),
                        "seconds": time.time() - t0})
        if failed:
            pr.set_tags({"failed_cells": ",".join(failed)})
        out = {"run_id": pr.run_id, "cells": [c.key for c in grid], "ran": ran, "failed": failed,
               "reused": [c.key for c in grid if c.key not in todo], "shared": shared, **summary}
    return out


# ---------------------------------------------------------------------------------------------
# Command line: `codeblock experiment` (a TOOLS command of codeblock/cli.py) and the cell process.


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--show", action="store_true", help="print the table of the finished cells; run nothing")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def cli(cfg: Config, args: argparse.Namespace) -> int:
    from codeblock.experiment import tables

    if args.show:
        print(tables.show(cfg))
        return 0
    ref = config_ref(args.params, args.profile, args.overrides)
    res = run_experiment(ref, progress=not args.no_progress)
    print(res["markdown"])
    print("wrote " + ", ".join(res["outputs"]))
    for key, why in res["failed"].items():
        print(f"FAILED {key}: {why}", file=sys.stderr)
    return 1 if res["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    """The cell process: `python -m codeblock.experiment.runner --cell KEY [--params ..] [--profile ..] [-S ..]`."""
    ap = argparse.ArgumentParser(prog="python -m codeblock.experiment.runner")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    ap.add_argument("--cell", required=True)
    args = ap.parse_args(argv)
    res = G.run_cell(config_ref(args.params, args.profile, args.overrides), args.cell, progress=False)
    print(f"cell {args.cell}: {'already done' if res.get('skipped') else 'done'} in {res.get('seconds')} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
