"""The experiment's results: per-cell pass/fail -> intervals and paired differences -> experiment.md,
experiment.json and the plots, under `<pipeline.compare_dir>/experiments/<experiment.name>/`.

A *row* is a method at one budget (a budget-free method has one row); its seeds are the cells of
that row that finished. Problems are aligned by task id: a row's matrix holds the problems every
one of its seeds evaluated, and a comparison with the baseline holds the seeds and problems both
rows have, so a difference is always paired.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from codeblock.core.io import atomic_write_text, write_json
from codeblock.core.params import Config
from codeblock.experiment import grid as G
from codeblock.experiment.stats import AVG, mean_intervals, paired_differences

Row = tuple[str, float | None]  # (method, budget)
CellScores = dict[str, dict[str, float]]  # benchmark -> task_id -> pass rate


def results_dir(cfg: Config) -> Path:
    return Path(cfg.pipeline.compare_dir) / "experiments" / cfg.experiment.name


def read_scores(results_json: str | Path) -> CellScores:
    """Per-problem pass rates (c / n) of every benchmark that ran, from an evaluate results.json."""
    p = Path(results_json)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not a readable results.json: {e}") from e
    out: CellScores = {}
    for name, block in (data.get("benchmarks") or {}).items():
        if block.get("status") != "ok":
            continue
        rates = {}
        for i, t in enumerate(block.get("tasks") or []):
            try:
                rates[str(t["task_id"])] = float(t["c"]) / float(t["n"])
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
                raise ValueError(f"{p}: benchmarks.{name}.tasks[{i}]: field task_id/c/n: {e!r}") from e
        out[name] = rates
    return out


def collect(cell_cfgs: dict[G.Cell, Config]) -> dict[G.Cell, tuple[Config, CellScores]]:
    """The finished cells (current done-marker) with their config and scores."""
    done = {}
    for c, cc in cell_cfgs.items():
        if G.is_done(cc, c):
            done[c] = (cc, read_scores(G.results_path(cc, c)))
    return done


def rows(grid: list[G.Cell]) -> list[Row]:
    """The table rows in grid order: (method, budget), budget None for a budget-free method."""
    return list(dict.fromkeys((c.method, c.budget) for c in grid))


def _matrices(per_seed: dict[int, CellScores], seeds: list[int], benches: list[str] | None = None,
              tasks: dict[str, list[str]] | None = None) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """{benchmark: [seeds, problems]} over the benchmarks and task ids every seed has."""
    if benches is None:
        benches = sorted(set.intersection(*(set(per_seed[s]) for s in seeds)))
    if tasks is None:
        tasks = {}
        for b in benches:
            first = list(per_seed[seeds[0]][b])
            common = set.intersection(*(set(per_seed[s][b]) for s in seeds))
            tasks[b] = [t for t in first if t in common]
    mats = {b: np.array([[per_seed[s][b][t] for t in tasks[b]] for s in seeds]) for b in benches if tasks[b]}
    return mats, tasks


def _label(row: Row) -> str:
    return G.Cell(row[0], 0, row[1]).row


def summarise(cfg: Config, grid: list[G.Cell], done: dict[G.Cell, tuple[Config, CellScores]]) -> dict[str, Any]:
    """Intervals per row and paired differences against the baseline (plain JSON-able dict)."""
    e = cfg.experiment
    kw = {"n_boot": e.bootstrap_samples, "seed": e.bootstrap_seed, "confidence": e.confidence}
    by_row: dict[Row, dict[int, CellScores]] = defaultdict(dict)
    for c, (_, scores) in done.items():
        by_row[(c.method, c.budget)][c.seed] = scores
    out_rows, diffs = [], []
    all_rows = rows(grid)
    for row in all_rows:
        per_seed = by_row.get(row)
        if not per_seed:
            continue
        seeds = sorted(per_seed)
        mats, _ = _matrices(per_seed, seeds)
        if not mats:
            continue
        est = mean_intervals(mats, **kw)
        out_rows.append({"label": _label(row), "method": row[0], "budget": row[1], "seeds": seeds,
                         "estimates": {k: v.to_dict() for k, v in est.items()}})
        if row[0] == e.baseline:
            continue
        base_row = (e.baseline, None) if (e.baseline, None) in all_rows else (e.baseline, row[1])
        base = by_row.get(base_row) or {}
        common = [s for s in seeds if s in base]
        if not common:
            continue
        benches = sorted(set.intersection(*(set(per_seed[s]) & set(base[s]) for s in common)))
        tasks = {b: [t for t in per_seed[common[0]][b] if all(t in per_seed[s][b] and t in base[s][b] for s in common)]
                 for b in benches}
        m_b, _ = _matrices(per_seed, common, benches, tasks)
        m_a, _ = _matrices(base, common, benches, tasks)
        if not m_a:
            continue
        d = paired_differences(m_a, m_b, **kw)
        diffs.append({"label": _label(row), "method": row[0], "budget": row[1], "baseline": _label(base_row),
                      "seeds": common, "estimates": {k: v.to_dict() for k, v in d.items()}})
    return {"rows": out_rows, "differences": diffs}


# ---------------------------------------------------------------------------------------------
# Rendering.


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _benches(entries: list[dict]) -> list[str]:
    names = sorted({b for r in entries for b in r["estimates"] if b != AVG})
    return [*names, AVG] if names else []


def markdown(summary: dict[str, Any], cfg: Config, n_cells: int, n_done: int, header: list[str] | None = None) -> str:
    """The tables; `header` replaces the experiment's title and grid line (e.g. for the main job)."""
    e = cfg.experiment
    conf = f"{100 * e.confidence:.0f}%"
    lines = header or [f"# Experiment `{e.name}`", "",
                       f"{n_done} of {n_cells} cells finished. Model `{cfg.model.name_or_path}`; methods "
                       f"{', '.join(e.methods)}; seeds {', '.join(map(str, e.seeds))}; budgets "
                       f"{', '.join(f'{b:g}' for b in e.budgets)}."]
    lines += [f"pass@1 in percent, mean over seeds and problems, [{conf} bootstrap interval over problems and "
              f"seeds, {e.bootstrap_samples} resamples]; `avg` weighs every benchmark equally.", ""]
    name = cfg.model.name_or_path.lower()
    if "tiny-random" in name or "smollm2" in name:
        lines += ["> This model is a pipeline check (a random or 135M model that solves almost nothing): "
                  "these numbers prove the pipeline runs, not that any method works.", ""]
    benches = _benches(summary["rows"])
    if not benches:
        return "\n".join([*lines, "_no finished cell yet_", ""])
    sizes = {b: next(r["estimates"][b]["n_problems"] for r in summary["rows"] if b in r["estimates"]) for b in benches}
    head = ["method", "seeds", *[f"{b} (n={sizes[b]})" for b in benches]]
    lines += ["## pass@1", "", "| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(benches)]
    for r in summary["rows"]:
        cells = [f"{_pct(x['mean'])} [{_pct(x['low'])}, {_pct(x['high'])}]" if (x := r["estimates"].get(b)) else "-"
                 for b in benches]
        lines.append(f"| {r['label']} | {len(r['seeds'])} | " + " | ".join(cells) + " |")
    warnings: list[str] = []
    if summary["differences"]:
        lines += ["", f"## Difference against `{e.baseline}` (paired: same problems, same seeds)", "",
                  "Points of pass@1; flips = problems solved more / less often than by the baseline.", "",
                  "| method | seeds | " + " | ".join(benches) + " | flips (all) |",
                  "|---|---:|" + "---:|" * (len(benches) + 1)]
        for d in summary["differences"]:
            cells = []
            for b in benches:
                x = d["estimates"].get(b)
                if not x:
                    cells.append("-")
                    continue
                flag = " ~" if x["low"] <= 0 <= x["high"] else ""
                cells.append(f"{100 * x['mean']:+.1f} [{100 * x['low']:+.1f}, {100 * x['high']:+.1f}]{flag}")
                warnings += [f"{d['label']} / {b}: {w}" for w in x["warnings"] if "contains 0" in w]
            a = d["estimates"][AVG]
            lines.append(f"| {d['label']} | {len(d['seeds'])} | " + " | ".join(cells)
                         + f" | +{a['fail_to_pass']} / -{a['pass_to_fail']} |")
        lines += ["", "`~` the interval contains 0: not distinguishable from the baseline at this sample size."]
    if any(len(r["seeds"]) < 2 for r in summary["rows"]):
        lines += ["", "One seed in some rows: their intervals cover problem sampling only, not training noise."]
    if warnings:
        lines += ["", "<details><summary>small-sample warnings</summary>", "", *[f"- {w}" for w in warnings],
                  "", "</details>"]
    return "\n".join(lines) + "\n"


def _unchanged_plots(out: Path, doc: dict[str, Any]) -> list[Path] | None:
    """The plots of the last write when it had the same cells and numbers (and they still exist)."""
    try:
        prev = json.loads((out / "experiment.json").read_text())
    except (OSError, ValueError):
        return None
    names = prev.pop("plots", None)
    if names is None or prev != doc or not all((out / n).exists() for n in names):
        return None
    return [out / n for n in names]


def write_all(cfg: Config, cell_cfgs: dict[G.Cell, Config], tracker=None) -> dict[str, Any]:
    """Collect, summarise, write experiment.md/.json and the plots; log them to `tracker` (a ParentRun).
    `cell_cfgs`: every cell of the grid (in grid order) with its configuration."""
    from codeblock.experiment import plots

    grid = list(cell_cfgs)
    done = collect(cell_cfgs)
    summary = summarise(cfg, grid, done)
    md = markdown(summary, cfg, len(grid), len(done))
    out = results_dir(cfg)
    doc = {"experiment": cfg.experiment.name, "model": cfg.model.name_or_path,
           "grid": {"methods": cfg.experiment.methods, "seeds": cfg.experiment.seeds,
                    "budgets": cfg.experiment.budgets, "baseline": cfg.experiment.baseline},
           "cells": [{**c.to_dict(), "done": c in done, "finished": (G.read_marker(cc, c) or {}).get("finished")
                      if c in done else None} for c, cc in cell_cfgs.items()], **summary}
    doc = json.loads(json.dumps(doc, default=str))  # as it reads back from the file
    pngs = _unchanged_plots(out, doc)
    if pngs is None:  # a cell finished since the last write, or the statistics changed: redraw
        pngs = plots.write_plots(summary, {c: cc for c, (cc, _) in done.items()}, out)
    doc["plots"] = [p.name for p in pngs]
    write_json(out / "experiment.json", doc)
    atomic_write_text(out / "experiment.md", md)
    outputs = [str(out / "experiment.md"), str(out / "experiment.json"), *map(str, pngs)]
    if tracker is not None and tracker.enabled:
        tracker.log_text(md, "experiment/experiment.md")
        tracker.log_text(json.dumps(doc, indent=1, default=str), "experiment/experiment.json")
        for p in pngs:
            tracker.client.log_artifact(tracker.run_id, str(p), "experiment")
        for r in summary["rows"]:
            tracker.log_metrics({f"pass_at_1/{b}/{r['label']}": x["mean"] for b, x in r["estimates"].items()})
        for d in summary["differences"]:
            tracker.log_metrics({f"delta_pass_at_1/{b}/{d['label']}": x["mean"] for b, x in d["estimates"].items()})
    return {"markdown": md, "outputs": outputs, "summary": summary}


def show(cfg: Config, name: str | None = None) -> str:
    """The table of experiment `name` (default experiment.name) as last written: what
    `codeblock compare --experiment NAME` prints."""
    if name:
        cfg = dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, name=name))
    p = results_dir(cfg) / "experiment.md"
    if not p.exists():
        return f"no results for experiment {cfg.experiment.name!r} yet ({p}); run `codeblock experiment`"
    return p.read_text().rstrip("\n")


def compare_result(cfg: Config, name: str):
    """The StageResult `codeblock compare --experiment NAME` returns (summary: payload["experiment_md"])."""
    from codeblock.stages import StageResult

    p = results_dir(dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, name=name)))
    text = show(cfg, name)
    ok = (p / "experiment.md").exists()
    return StageResult("compare", [str(p / "experiment.md")] if ok else [], {}, payload={"experiment_md": text},
                       exit_code=0 if ok else 1)


def pipeline_table(cfg: Config, methods: list[str] | None = None) -> str:
    """The main job's comparison with the experiment's statistics: one seed per method (train.seed),
    each number with its interval and the problems it rests on, differences paired against
    experiment.baseline when it ran. Reads `<reports_dir>/eval/<method>/results.json`."""
    done = {}
    for m in methods or cfg.pipeline.methods:
        p = Path(cfg.paths.reports_dir) / "eval" / m / "results.json"
        if p.exists():
            done[G.Cell(m, cfg.train.seed, None)] = (cfg, read_scores(p))
    grid = list(done)
    if cfg.experiment.baseline not in {c.method for c in grid}:
        cfg = dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, baseline=""))
    header = [f"Model `{cfg.model.name_or_path}`, one training seed per method (`codeblock experiment` runs several)."]
    return markdown(summarise(cfg, grid, done), cfg, len(grid), len(done), header=header)
