"""`codeblock compare`: the method x benchmark pass@1 table, from MLflow or from the stage files.

Two sources, one table:
- `mlflow` (the default of the command): the evaluate runs in the configured experiment. With
  `--run-id` only the runs below that parent (one pipeline run) count; otherwise the newest
  finished evaluate run of each method does.
- `files`: `reports/eval/<method>/metrics.json` of each method in `pipeline.methods`. The DVC
  `compare` stage uses this source, so its outputs depend only on files DVC tracks.

With `--write` (the DVC stage and the Prefect flow) the comparison also lands in
`pipeline.compare_dir` (git-tracked, so `dvc exp show` lists it): `summary.json` (the metrics),
`pass_at_1.csv` (one row per method and benchmark, the bar plot), `supervision_hist.csv` (the
histogram of the per-sample supervised ratio) and `compare.md` (the table).

Metric names are read leniently because each stage names its own: any flattened key holding
`pass@k` / `pass_at_k` and a benchmark name (`pass_at_1/humaneval`, `humaneval/pass@1`,
`{"humaneval": {"pass@1": ..}}`) counts; a bare `pass_at_1` takes the benchmark from the run's
`benchmark` tag.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from codeblock.core.io import atomic_write_text, write_json
from codeblock.core.tracking import metric_name
from codeblock.report.supervision import flatten, histogram, supervision
from codeblock.stages import StageContext, StageResult

_PASS = re.compile(r"^pass_at_(\d+)$")
_SKIP_PARTS = {"eval", "evaluate", "metrics", "benchmarks", "results", "mean", "value"}
AVG = "avg"

MAX_NESTING = 16  # parent-run hops searched for a run's method tag
MAX_RUNS = 5000  # evaluate runs read from the MLflow experiment (newest first)
N_PROBLEMS = "n_problems"  # metric prefix: how many problems a benchmark's pass@k rests on
Z95 = 1.959964  # normal quantile of a two-sided 95% interval


# ---------------------------------------------------------------------------------------------
# Reading pass@k out of whatever shape a stage wrote.


def pass_metrics(flat: dict[str, float], benchmark: str | None = None) -> dict[tuple[str, int], float]:
    """{(benchmark, k): value} from flattened metric names (see the module doc)."""
    found: dict[tuple[str, int], float] = {}
    for key, value in flat.items():
        parts = [p for p in re.split(r"[/.]", metric_name(key)) if p]
        ks = [int(m.group(1)) for p in parts if (m := _PASS.match(p))]
        if len(ks) != 1:
            continue
        rest = [p for p in parts if not _PASS.match(p) and p.lower() not in _SKIP_PARTS]
        if len(rest) == 1:
            bench = rest[0]
        elif not rest and benchmark:
            bench = benchmark
        else:
            continue
        if bench == AVG or bench.lower() in {"average", "avg"}:
            continue  # the average is recomputed over the benchmarks present
        found[(bench, ks[0])] = value
    return found


def add_average(row: dict[str, float]) -> dict[str, float]:
    """Add pass_at_k/avg over the benchmarks of each k present in the row."""
    by_k: dict[str, list[float]] = {}
    for key, v in row.items():
        head, _, bench = key.partition("/")
        if _PASS.match(head) and bench != AVG:
            by_k.setdefault(head, []).append(v)
    for head, vals in by_k.items():
        row[f"{head}/{AVG}"] = sum(vals) / len(vals)
    return row


def _row(found: dict[tuple[str, int], float], counts: dict[str, int] | None = None) -> dict[str, float]:
    row = add_average({f"pass_at_{k}/{b}": v for (b, k), v in sorted(found.items())})
    row.update({f"{N_PROBLEMS}/{b}": float(n) for b, n in sorted((counts or {}).items())})
    return row


def problem_counts(flat: dict[str, float], benchmark: str | None = None) -> dict[str, int]:
    """{benchmark: problems scored} from `n_problems/<bench>` metrics or a results.json's
    `benchmarks/<bench>/n_problems`."""
    out: dict[str, int] = {}
    for key, value in flat.items():
        parts = [p for p in re.split(r"[/.]", key) if p]
        if not parts or parts[-1] != N_PROBLEMS and parts[0] != N_PROBLEMS:
            continue
        rest = [p for p in parts if p != N_PROBLEMS and p.lower() not in _SKIP_PARTS]
        bench = rest[0] if len(rest) == 1 else benchmark
        if bench:
            out[bench] = int(value)
    return out


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a pass rate p measured on n problems (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------------------------
# Sources.


def eval_metrics_path(cfg, method: str) -> Path:
    return Path(cfg.paths.reports_dir) / "eval" / method / "metrics.json"


def from_files(cfg, methods: list[str] | None = None) -> dict[str, dict[str, float]]:
    """{method: {"pass_at_1/<bench>": v, ..., "pass_at_1/avg": v}} from the evaluate outputs."""
    table: dict[str, dict[str, float]] = {}
    for method in methods or cfg.pipeline.methods:
        p = eval_metrics_path(cfg, method)
        if not p.exists():
            continue
        results = p.with_name("results.json")
        counts = problem_counts(flatten(json.loads(results.read_text()))) if results.exists() else {}
        table[method] = _row(pass_metrics(flatten(json.loads(p.read_text()))), counts)
    return table


def _run_method(run) -> str | None:
    tags, params = run.data.tags, run.data.params
    for key in ("method", "codeblock.method"):
        if tags.get(key):
            return tags[key]
    for key in ("method", "select.method"):
        if params.get(key):
            return params[key]
    return None


def _descendants(runs: list, root: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for r in runs:
        parent = r.data.tags.get("mlflow.parentRunId")
        if parent:
            children.setdefault(parent, []).append(r.info.run_id)
    seen, todo = {root}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def _method_of(run, by_id: dict[str, Any]) -> str | None:
    """The run's own method tag, else the nearest ancestor's (a per-benchmark child run)."""
    hops = 0
    while run is not None and hops < MAX_NESTING:
        m = _run_method(run)
        if m:
            return m
        run = by_id.get(run.data.tags.get("mlflow.parentRunId", ""))
        hops += 1
    return None


def _is_eval(run) -> bool:
    """An evaluate stage run: `evaluate`, `evaluate-<method>`, `evaluate/<...>`, `eval/<benchmark>`."""
    return run.data.tags.get("codeblock.stage", "").startswith("eval")


def _eval_group_root(run, by_id: dict[str, Any]):
    """The outermost ancestor that is still an evaluate run (per-benchmark runs nest under it)."""
    while True:
        parent = by_id.get(run.data.tags.get("mlflow.parentRunId", ""))
        if parent is None or not _is_eval(parent):
            return run
        run = parent


def from_mlflow(cfg, methods: list[str] | None = None, run_id: str | None = None) -> dict[str, dict[str, float]]:
    """The same table from the evaluate runs in MLflow (newest per method, or below `run_id`)."""
    from codeblock.core.tracking import setup

    mlflow = setup(cfg)
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    client = mlflow.MlflowClient()
    runs = client.search_runs([exp.experiment_id], max_results=MAX_RUNS, order_by=["attributes.start_time DESC"])
    by_id = {r.info.run_id: r for r in runs}
    if run_id:
        keep = _descendants(runs, run_id)
        runs = [r for r in runs if r.info.run_id in keep]
    evals = [r for r in runs if _is_eval(r) and r.info.status == "FINISHED"]
    # Group evaluate runs (with their per-benchmark children) and keep the newest group per method.
    groups: dict[str, list] = {}
    for r in evals:
        groups.setdefault(_eval_group_root(r, by_id).info.run_id, []).append(r)
    chosen: dict[str, tuple[int, dict]] = {}
    for root_id, members in groups.items():
        root = by_id.get(root_id, members[0])
        method = _method_of(root, by_id)
        if method is None or (methods and method not in methods):
            continue
        found: dict[tuple[str, int], float] = {}
        counts: dict[str, int] = {}
        for r in members:
            found.update(pass_metrics(r.data.metrics, r.data.tags.get("benchmark")))
            counts.update(problem_counts(r.data.metrics, r.data.tags.get("benchmark")))
        if not found:
            continue
        start = root.info.start_time or 0
        if method not in chosen or start > chosen[method][0]:
            chosen[method] = (start, _row(found, counts))
    order = methods or sorted(chosen)
    return {m: chosen[m][1] for m in order if m in chosen}


# ---------------------------------------------------------------------------------------------
# Rendering and the files DVC tracks.


def columns(table: dict[str, dict[str, float]], k: int = 1) -> list[str]:
    heads = sorted({c for row in table.values() for c in row if c.startswith(f"pass_at_{k}/")})
    return [c for c in heads if not c.endswith(f"/{AVG}")] + [c for c in heads if c.endswith(f"/{AVG}")]


def _cell(row: dict[str, float], col: str) -> str:
    if col not in row:
        return "-"
    bench = col.split("/", 1)[1]
    n = int(row.get(f"{N_PROBLEMS}/{bench}", 0))
    if not n:
        return f"{100 * row[col]:.1f}"
    lo, hi = wilson_interval(row[col], n)
    return f"{100 * row[col]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def markdown(table: dict[str, dict[str, float]], k: int = 1, note: str = "") -> str:
    """A markdown table: one row per method, one column per benchmark (with the number of problems
    and a 95% interval when known), then the average; `note` is appended as a paragraph."""
    cols = columns(table, k)
    if not table or not cols:
        return "_no evaluation results yet_\n"
    counts: dict[str, int] = {}
    for row in table.values():
        for key, v in row.items():
            if key.startswith(f"{N_PROBLEMS}/"):
                counts[key.split("/", 1)[1]] = max(counts.get(key.split("/", 1)[1], 0), int(v))
    names = [c.split("/", 1)[1] for c in cols]
    head = "| method | " + " | ".join(f"{b} (n={counts[b]})" if b in counts else b for b in names) + " |"
    sep = "|---|" + "---:|" * len(cols)
    lines = [head, sep]
    for method, row in table.items():
        lines.append(f"| {method} | " + " | ".join(_cell(row, c) for c in cols) + " |")
    text = "\n".join(lines) + f"\n\npass@{k} in percent"
    if counts:
        text += (", [95% Wilson interval over the n problems of one run]. The interval shows only how "
                 "much the problem sample alone can move the number; overlapping intervals are no evidence "
                 "of a difference. Seeds and paired intervals: `codeblock experiment`")
    text += ".\n"
    return text + (f"\n{note}\n" if note else "")


def honesty_note(cfg) -> str:
    """What the default (CPU) models can and cannot show."""
    name = cfg.model.name_or_path.lower()
    if "smollm2" in name or name == "tiny-random":
        return ("The model is SmolLM2-135M or a tiny random model on CPU, which score near zero on these "
                "benchmarks: this run proves the pipeline, not the method (use a code model on a GPU, "
                "e.g. `--profile paper`).")
    return ""


def train_metrics(cfg, method: str) -> dict[str, float]:
    p = Path(cfg.paths.runs_dir) / method / "train_metrics.json"
    return flatten(json.loads(p.read_text())) if p.exists() else {}


def write_outputs(cfg, table: dict[str, dict[str, float]]) -> list[str]:
    """summary.json, pass_at_1.csv, supervision_hist.csv and compare.md under compare_dir."""
    out = Path(cfg.pipeline.compare_dir)
    summary: dict[str, dict[str, float]] = {}
    pass_rows, hist_rows = [], []
    for method in cfg.pipeline.methods:
        row = dict(table.get(method, {}))
        stats, ratios = supervision(cfg, method)
        row.update({f"supervision/{k}": v for k, v in stats.items()})
        row.update({f"train/{k}": v for k, v in train_metrics(cfg, method).items()})
        summary[method] = row
        for c in columns(table, 1):
            if c in table.get(method, {}):
                pass_rows.append((method, c.split("/", 1)[1], table[method][c]))
        for lo, hi, n in histogram(ratios):
            hist_rows.append((method, f"{lo:.4f}-{hi:.4f}", n))
    write_json(out / "summary.json", summary)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "method", "benchmark", "pass_at_1"])
    w.writerows([(f"{m}/{b}", m, b, round(v, 6)) for m, b, v in pass_rows])
    atomic_write_text(out / "pass_at_1.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "method", "ratio_bin", "samples"])
    w.writerows([(f"{m} {b}", m, b, n) for m, b, n in hist_rows])
    atomic_write_text(out / "supervision_hist.csv", buf.getvalue())
    atomic_write_text(out / "compare.md", markdown(table, note=honesty_note(cfg)))
    return [str(out / n) for n in ("summary.json", "pass_at_1.csv", "supervision_hist.csv", "compare.md")]


def best_method(table: dict[str, dict[str, float]], metric: str) -> str | None:
    """The method with the highest `metric`; None when nothing has it or the top is a tie."""
    scored = sorted(((row[metric], m) for m, row in table.items() if metric in row), reverse=True)
    if not scored or (len(scored) > 1 and scored[0][0] == scored[1][0]):
        return None
    return scored[0][1]


def run_compare(cfg, source: str = "files", run_id: str | None = None, write: bool = False) -> dict:
    table = from_mlflow(cfg, cfg.pipeline.methods, run_id) if source == "mlflow" else from_files(cfg)
    outputs = write_outputs(cfg, table) if write else []
    metrics = {f"{m}/{k}": v for m, row in table.items() for k, v in row.items()}
    return {"outputs": outputs, "metrics": metrics, "table": table,
            "best": best_method(table, cfg.pipeline.champion_metric),
            "champion_metric": cfg.pipeline.champion_metric, "note": honesty_note(cfg)}


def add_args(p) -> None:
    p.add_argument("--experiment", default=None, help="print this experiment's table (codeblock experiment)")
    p.add_argument("--source", choices=["mlflow", "files"], default="mlflow",
                   help="read the evaluate runs from MLflow (default) or reports/eval/<method>/metrics.json")
    p.add_argument("--run-id", default=None, help="only runs below this MLflow parent run (one pipeline run)")
    p.add_argument("--write", action="store_true", help="also write summary/plot files under pipeline.compare_dir")


def run(cfg, ctx: StageContext) -> StageResult:
    o = ctx.options
    if o.get("experiment"):
        from codeblock.experiment.tables import compare_result

        return compare_result(cfg, o["experiment"])
    source = o.get("source") or "mlflow"
    res = run_compare(cfg, source=source, run_id=o.get("run_id"), write=bool(o.get("write")))
    failed = not res["table"] and source != "files"
    return StageResult.from_dict("compare", res, exit_code=1 if failed else 0)


def summary(res: StageResult) -> str:
    if "experiment_md" in res.payload:
        return res.payload["experiment_md"]
    out = markdown(res.payload["table"], note=res.payload.get("note", ""))
    if res.payload.get("best"):
        out += f"best by {res.payload['champion_metric']}: {res.payload['best']}\n"
    return out.rstrip("\n")
