"""The experiment's plots as PNG files (matplotlib, Agg backend: no display needed).

    pass_at_1_vs_budget.png   average pass@1 against the budget, one line per method, interval band;
                              a budget-free method (full) is a horizontal line with its band
    pass_at_1_benchmarks.png  per-benchmark bars of every row with interval whiskers
    supervised_ratio.png      histogram of the per-sample supervised ratio of every row (first seed)
    train_loss.png            training loss against the step, mean over seeds, one line per row
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from codeblock.core.params import Config  # noqa: E402
from codeblock.experiment.grid import Cell  # noqa: E402
from codeblock.experiment.stats import AVG  # noqa: E402


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str, grid: str | None = "both") -> Path:
    """Labels, legend, grid; render to a temp file beside `path`, then rename (atomic like every other output)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    if grid:
        ax.grid(axis=grid, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def _conf(rows: list[dict]) -> str:
    return f"{100 * next(iter(rows[0]['estimates'].values()))['confidence']:.0f}%"


def pass_vs_budget(summary: dict[str, Any], path: Path) -> Path | None:
    rows = [r for r in summary["rows"] if AVG in r["estimates"]]
    if not rows:
        return None
    budgets = sorted({r["budget"] for r in rows if r["budget"] is not None})
    span = (min(budgets), max(budgets)) if budgets else (0.0, 1.0)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    for i, (method, rs) in enumerate(by_method.items()):
        color = f"C{i}"
        if rs[0]["budget"] is None:  # budget-free: a level across the budget axis
            e = rs[0]["estimates"][AVG]
            ax.axhline(100 * e["mean"], linestyle="--", color=color, label=f"{method} (all tokens)")
            ax.axhspan(100 * e["low"], 100 * e["high"], color=color, alpha=0.12)
            continue
        rs = sorted(rs, key=lambda r: r["budget"])
        x = [100 * r["budget"] for r in rs]
        est = [r["estimates"][AVG] for r in rs]
        mean = [100 * e["mean"] for e in est]
        ax.plot(x, mean, marker="o", color=color, label=method)
        ax.fill_between(x, [100 * e["low"] for e in est], [100 * e["high"] for e in est], color=color, alpha=0.18)
        ax.errorbar(x, mean, yerr=[[m - 100 * e["low"] for m, e in zip(mean, est)],
                                   [100 * e["high"] - m for m, e in zip(mean, est)]],
                    fmt="none", ecolor=color, capsize=3)
    if len(budgets) > 1 and span[1] / max(span[0], 1e-9) > 8:
        ax.set_xscale("log")
    top = max(100 * r["estimates"][AVG]["high"] for r in rows)
    ax.set_ylim(0, max(5.0, 1.1 * top))  # an all-zero run still gets a readable percent axis
    return _finish(fig, ax, path, "budget: supervised share of response tokens (%)",
                   "pass@1, average over benchmarks (%)", f"pass@1 vs budget (mean over seeds, {_conf(rows)} interval)")


def benchmark_bars(summary: dict[str, Any], path: Path) -> Path | None:
    rows = summary["rows"]
    benches = sorted({b for r in rows for b in r["estimates"] if b != AVG})
    if not benches:
        return None
    benches.append(AVG)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.4 * len(benches) * max(1, len(rows)) / 2), 4.2))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs, means, lo, hi = [], [], [], []
        for j, b in enumerate(benches):
            e = r["estimates"].get(b)
            if e is None:
                continue
            xs.append(j - 0.4 + (i + 0.5) * width)
            means.append(100 * e["mean"])
            lo.append(100 * (e["mean"] - e["low"]))
            hi.append(100 * (e["high"] - e["mean"]))
        ax.bar(xs, means, width=width, yerr=[lo, hi], capsize=3, label=f"{r['label']} ({len(r['seeds'])} seeds)")
    ax.set_xticks(range(len(benches)), benches)
    top = max(100 * e["high"] for r in rows for e in r["estimates"].values())
    ax.set_ylim(0, max(5.0, 1.1 * top))
    return _finish(fig, ax, path, "benchmark", "pass@1 (%)",
                   f"pass@1 per benchmark (mean over seeds, {_conf(rows)} interval)", grid="y")


def supervised_ratio_hist(cells: dict[Cell, Config], path: Path) -> Path | None:
    from codeblock.report.supervision import supervision

    first: dict[str, tuple[Cell, Config]] = {}
    for c, cc in sorted(cells.items(), key=lambda kv: kv[0].seed):
        first.setdefault(c.row, (c, cc))
    series = {label: supervision(cc, c.runs)[1] for label, (c, cc) in sorted(first.items())}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    top = max(max(v) for v in series.values())
    bins = np.linspace(0, max(top, 0.05), 21)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, ratios in series.items():
        ax.hist(ratios, bins=bins, histtype="step", linewidth=1.5, label=f"{label} ({len(ratios)} samples)")
    return _finish(fig, ax, path, "supervised share of the sample's response tokens", "samples",
                   "per-sample supervised ratio", grid=None)


def read_loss(path: Path) -> dict[int, float]:
    """step -> loss from a train stage's loss.csv ({} when absent)."""
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh) if r.get("loss")}


def loss_curves(cells: dict[Cell, Config], path: Path) -> Path | None:
    groups: dict[str, list[dict[int, float]]] = defaultdict(list)
    for c, cc in cells.items():
        curve = read_loss(Path(cc.paths.runs_dir) / c.runs / "loss.csv")
        if curve:
            groups[c.row].append(curve)
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, curves in sorted(groups.items()):
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        mean = [float(np.mean([c[s] for c in curves])) for s in steps]
        ax.plot(steps, mean, marker="." if len(steps) < 30 else None, label=f"{label} ({len(curves)} seeds)")
    return _finish(fig, ax, path, "optimizer step", "training loss (supervised tokens)",
                   "training loss, mean over seeds")


def write_plots(summary: dict[str, Any], cells: dict[Cell, Config], out_dir: Path) -> list[Path]:
    """Every plot that has data; returns the files written."""
    made = [pass_vs_budget(summary, out_dir / "pass_at_1_vs_budget.png"),
            benchmark_bars(summary, out_dir / "pass_at_1_benchmarks.png"),
            supervised_ratio_hist(cells, out_dir / "supervised_ratio.png"),
            loss_curves(cells, out_dir / "train_loss.png")]
    return [p for p in made if p is not None]
