"""Generation runs: which prompts to generate, in which batches, by which rank, and their cache.

Plan. For each benchmark, the problems without a cached generation are tokenized, sorted by
prompt length (stable: ties keep the benchmark's order) and cut into batches of `eval.batch_size`
(`plan_batches`). The batches of every benchmark, in order, are dealt round-robin to the ranks
(`deal`: `RANK`/`WORLD_SIZE` from `torchrun` / `accelerate launch`, one rank without them). A
batch holds the same prompts whatever the number of ranks, so greedy generations equal those of
one process.

Cache. `<reports_dir>/generations/<benchmark>/<key>.jsonl` (the key: `generate.cache_path`) holds
one line per task, `{"task_id", "samples", "rank", "world"}`. A rank writes every finished batch
atomically (temp file + rename) as its own file in `<key>.parts/`, so ranks never write the same
file and an interrupted run leaves only whole batches. Reading the cache unions the main file and
the parts; after generation, rank 0 merges the parts into the main file (atomically) and removes
them. A rerun, with any number of ranks, generates only the tasks that are in neither.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeblock.core.io import atomic_write_text
from codeblock.core.ranks import Ranks
from codeblock.evaluate.registry import LoadedBenchmark, Problem

PART_GLOB = "batch-*.jsonl"


def parts_dir(path: Path) -> Path:
    return path.with_name(path.stem + ".parts")


def _read_rows(path: Path) -> dict[str, dict]:
    """task_id -> cache line, from the main file then the parts (a later line wins)."""
    out: dict[str, dict] = {}
    files = [path, *sorted(parts_dir(path).glob(PART_GLOB))] if parts_dir(path).is_dir() else [path]
    for f in files:
        if not f.exists():
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                out[str(row["task_id"])] = {**row, "task_id": str(row["task_id"]), "samples": list(row["samples"])}
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by an interruption (old append-only caches): generated again
    return out


def read_cache(path: Path) -> dict[str, list[str]]:
    return {t: r["samples"] for t, r in _read_rows(path).items()}


def batch_name(task_ids: list[str]) -> str:
    return "batch-" + hashlib.sha256("\x00".join(task_ids).encode()).hexdigest()[:16] + ".jsonl"


def write_part(path: Path, rows: list[dict]) -> Path:
    """One finished batch (rows with task_id and samples), atomically, in the cache's parts folder."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    return atomic_write_text(parts_dir(path) / batch_name([r["task_id"] for r in rows]), text)


def consolidate(path: Path) -> int:
    """Merge the parts into the main cache file (atomically), then remove them; rows written."""
    pdir = parts_dir(path)
    parts = sorted(pdir.glob(PART_GLOB)) if pdir.is_dir() else []
    if not parts:
        return 0
    rows = _read_rows(path)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows.values()))
    for p in parts:
        p.unlink(missing_ok=True)
    try:
        pdir.rmdir()
    except OSError:
        pass  # another file there (a temp file of a killed writer): left alone
    return len(rows)


def plan_batches(items: list[tuple[Problem, list[int], str]], batch_size: int) -> list[list]:
    """(problem, prompt ids, stop rule) items -> batches of similar prompt lengths (less padding).
    Depends on the items and the batch size only, never on the number of ranks."""
    ordered = sorted(items, key=lambda x: len(x[1]))
    bs = max(1, batch_size)
    return [ordered[i:i + bs] for i in range(0, len(ordered), bs)]


def deal(n: int, rank: int, world: int) -> list[int]:
    """Indices of the batches (of n, in plan order) that `rank` of `world` generates."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    return list(range(rank, n, world))


def _calls(mine: list[tuple[int, list]], whole_share: bool) -> list[list[tuple[int, list]]]:
    """Backend calls: one per plan batch, or (`whole_share`, vLLM) one per run of batches of the
    same benchmark and stop rule; parts are still written per plan batch."""
    calls: list[list[tuple[int, list]]] = []
    for j, batch in mine:
        if whole_share and calls and calls[-1][0][0] == j and calls[-1][0][1][0][2] == batch[0][2]:
            calls[-1].append((j, batch))
        else:
            calls.append([(j, batch)])
    return calls


@dataclass
class Job:
    """One benchmark's generation: its problems, cache file, cached samples and batches to run."""

    loaded: LoadedBenchmark
    problems: list[Problem]
    path: Path
    samples: dict[str, list[str]]
    batches: list[list] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.loaded.spec.name


def _plan(cfg, jobs: list[Job], tokenizer_factory: Callable[[], Any]) -> None:
    from codeblock.evaluate.generate import prompt_format, prompt_ids

    for job in jobs:
        todo = [p for p in job.problems if p.task_id not in job.samples]
        if todo:
            tok = tokenizer_factory()
            fmt = prompt_format(cfg, job.loaded)
            job.batches = plan_batches([(p, *prompt_ids(tok, p, fmt)) for p in todo], cfg.eval.batch_size)


def generate_all(cfg, benches: list[tuple[LoadedBenchmark, list[Problem]]], model_id: str,
                 backend_factory: Callable[[], Any], tokenizer_factory: Callable[[], Any],
                 ranks: Ranks | None = None, progress: bool = True) -> tuple[dict[str, Job], dict[str, float]]:
    """Generate what the cache lacks for every benchmark, this rank's share of the batches.

    Returns name -> Job (on rank 0: `samples` complete for every problem; on other ranks: the
    cache plus what this rank generated) and counts (tasks cached / generated, seconds)."""
    from tqdm import tqdm

    from codeblock.evaluate.generate import cache_path, decoding_settings

    ranks = ranks or Ranks()
    jobs = []
    for loaded, problems in benches:
        path = cache_path(cfg, loaded, model_id)
        cached = read_cache(path) if cfg.eval.generations_cache else {}
        jobs.append(Job(loaded, problems, path, {t: s for t, s in cached.items()
                                                 if t in {p.task_id for p in problems}}))
    n_cached = sum(len(j.samples) for j in jobs)
    _plan(cfg, jobs, tokenizer_factory)
    ranks.barrier()  # every rank has read the same cache before any rank writes to it
    flat = [(j, b) for j, job in enumerate(jobs) for b in job.batches]
    mine = [flat[i] for i in deal(len(flat), ranks.rank, ranks.world)]
    d = decoding_settings(cfg)
    mine_out: dict[str, dict[str, list[str]]] = {}
    t0 = time.perf_counter()
    if mine:
        backend = backend_factory()
        total = sum(len(b) for _, b in mine)
        desc = "generate" + (f" (rank {ranks.rank}/{ranks.world})" if ranks.world > 1 else "")
        with tqdm(total=total, desc=desc, disable=not (progress and ranks.main), unit="task") as bar:
            for group in _calls(mine, getattr(backend, "whole_share", False)):
                prompts = [c[1] for _, batch in group for c in batch]
                outs = backend.generate(prompts, group[0][1][0][2], d["n_samples"], d["temperature"], d["top_p"],
                                        d["max_new_tokens"])
                if len(outs) != len(prompts):
                    raise RuntimeError(f"backend returned {len(outs)} generations for {len(prompts)} prompts")
                for j, batch in group:
                    job, got, outs = jobs[j], outs[:len(batch)], outs[len(batch):]
                    rows = [{"task_id": p.task_id, "samples": s, "rank": ranks.rank, "world": ranks.world}
                            for (p, _, _), s in zip(batch, got, strict=True)]
                    write_part(job.path, rows)
                    for r in rows:
                        job.samples[r["task_id"]] = r["samples"]
                        mine_out.setdefault(job.name, {})[r["task_id"]] = r["samples"]
                    bar.update(len(batch))
    seconds = time.perf_counter() - t0
    per_rank = ranks.gather({"samples": mine_out, "seconds": seconds})  # also: every rank has finished
    for other in per_rank:
        for job in jobs:
            job.samples.update(other["samples"].get(job.name, {}))
    if ranks.main:
        for job in jobs:
            consolidate(job.path)
    counts = {"tasks_cached": n_cached, "tasks_generated": sum(len(b) for job in jobs for b in job.batches),
              "generate_seconds": max(p["seconds"] for p in per_rank), "ranks": ranks.world}
    return {job.name: job for job in jobs}, counts
