"""Generations made by other tools, and results in the official harnesses' shape.

`read_samples` reads an evalplus / bigcodebench `samples.jsonl` (one JSON object per line with
`task_id` and either `solution`, a whole program, or `completion`, which continues the task's
prompt, as evalplus does: `prompt + completion`). Malformed rows fail before any work with the
file, row and field named.

`eval_results` turns scored samples into evalplus's `eval_results.json` shape
(`{"date", "hash", "eval": {task_id: [{task_id, solution, base_status, plus_status,
base_fail_tests, plus_fail_tests}]}}`), so our verdicts can be diffed against evalplus's directly.
The failing inputs themselves are not repeated (`*_fail_tests` stay empty); `*_detail` names the
failing input's index instead.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from codeblock.core.io import BadRowError

# task-id prefix -> the benchmark whose official file uses it
PREFIXES = {"HumanEval": "humaneval_plus", "Mbpp": "mbpp_plus", "BigCodeBench": "bigcodebench_full"}


def read_samples(path: str | Path) -> dict[str, list[dict[str, str]]]:
    """task_id -> its samples in file order, each {"solution": ...} or {"completion": ...}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--samples {path}: no such file")
    out: dict[str, list[dict[str, str]]] = {}
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadRowError(path, i, "<line>", f"not JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("task_id"), str):
                raise BadRowError(path, i, "task_id", "missing or not a string")
            key = "solution" if "solution" in row else "completion" if "completion" in row else None
            if key is None:
                raise BadRowError(path, i, "solution", "neither 'solution' nor 'completion' is present")
            if not isinstance(row[key], str):
                raise BadRowError(path, i, key, "not a string")
            out.setdefault(row["task_id"], []).append({key: row[key]})
    if not out:
        raise BadRowError(path, 0, "task_id", "the file holds no samples")
    return out


def infer_benchmarks(task_ids) -> list[str]:
    names = []
    for tid in task_ids:
        name = PREFIXES.get(str(tid).split("/")[0])
        if name is None:
            raise ValueError(f"cannot tell the benchmark of task {tid!r}; pass --benchmarks "
                             f"(prefixes known: {sorted(PREFIXES)})")
        if name not in names:
            names.append(name)
    return names


def program_of(problem, sample: dict[str, str]) -> str:
    """The program a sample stands for: its solution, or the task's prompt + its completion."""
    if "solution" in sample:
        return sample["solution"]
    prefix = problem.extras.get("prompt") if problem.test_format == "evalplus" else problem.completion_prompt
    return (prefix or "") + sample["completion"]


def select(loaded, samples: dict[str, list[dict[str, str]]], path: str | Path, limit: int = 0):
    """(problems that have samples, in dataset order, [(problem, j, program)]); a task id that
    the benchmark does not have is an error naming it."""
    known = {p.task_id for p in loaded.problems}
    prefix = next(iter(known)).split("/")[0] + "/"
    unknown = [t for t in samples if t.startswith(prefix) and t not in known]
    if unknown:
        raise BadRowError(path, "*", "task_id", f"{len(unknown)} task ids not in {loaded.source}: {unknown[:5]}")
    problems = [p for p in loaded.problems if p.task_id in samples]
    if limit:
        problems = problems[:limit]
    progs = [(p, j, program_of(p, s)) for p in problems for j, s in enumerate(samples[p.task_id])]
    return problems, progs


def dataset_md5(source: str) -> str:
    """evalplus's dataset hash: md5 of the uncompressed jsonl (what its own cache file holds)."""
    import gzip

    p = Path(source)
    if not p.is_file():
        return ""
    opener = gzip.open if p.name.endswith(".gz") else open
    h = hashlib.md5()
    with opener(p, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def eval_results(records: list[dict[str, Any]], dataset_hash: str) -> dict[str, Any]:
    """evalplus's eval_results.json shape from scored evalplus records (one per sample)."""
    ev: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (r["task_id"], r["sample"])):
        ev.setdefault(r["task_id"], []).append({
            "task_id": r["task_id"], "solution": r["solution"], "base_status": r["base_status"],
            "plus_status": r["plus_status"], "base_fail_tests": [], "plus_fail_tests": [],
            "base_detail": r["base_detail"], "plus_detail": r["plus_detail"]})
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "hash": dataset_hash, "eval": ev}
