"""Loading the official benchmark files named by CODEBLOCK_OFFICIAL_DATA for the conformance tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from codeblock.evaluate import registry as R


def official_problems(cfg, tasks: dict[str, list[str] | None], files: dict[str, Path]) -> list:
    """The problems of each benchmark in `tasks` (None: all of it) loaded from its official file
    through the project's own registry; every listed task id must exist."""
    problems = []
    for name, ids in tasks.items():
        setattr(cfg.eval, R.get(name).path_key, str(files[name]))
        ps = R.load_benchmark(cfg, name).problems
        if ids is not None:
            ps = [p for p in ps if p.task_id in ids]
            assert len(ps) == len(ids)
        problems += ps
    return problems


def oracle_python() -> str:
    """The interpreter bigcodebench's side runs on: CODEBLOCK_BCB_PYTHON (the eval venv), else this one."""
    return os.environ.get("CODEBLOCK_BCB_PYTHON") or sys.executable
