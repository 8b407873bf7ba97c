"""Supervision statistics of a method's label set, as the comparison and the experiment plots
read them: the global stats (stats.json) and the per-sample supervised ratios (ratios.csv)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


def flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    """Nested dict -> {"a/b/c": number}; non-numeric leaves are dropped."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if math.isfinite(float(obj)):
            out[prefix] = float(obj)
    return out


def _read_csv_column(path: Path, names: tuple[str, ...]) -> list[float]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        col = next((n for n in names if n in (reader.fieldnames or [])), None)
        if col is None:
            return []
        out = []
        for row in reader:
            try:
                out.append(float(row[col]))
            except (TypeError, ValueError):
                continue
        return out


def histogram(values: list[float], bins: int = 10) -> list[tuple[float, float, int]]:
    """Equal-width bins over [0, max(values)] (at least [0, 0.05]): (low, high, count)."""
    top = max([0.05, *values])
    width = top / bins
    counts = [0] * bins
    for v in values:
        counts[min(int(v / width), bins - 1) if v > 0 else 0] += 1
    return [(i * width, (i + 1) * width, c) for i, c in enumerate(counts)]


def supervision(cfg, method: str) -> tuple[dict[str, float], list[float]]:
    """Global supervision stats (stats.json) and the per-sample ratios (ratios.csv) of a method."""
    d = Path(cfg.paths.labels_dir) / method
    stats: dict[str, float] = {}
    if (d / "stats.json").exists():
        stats = flatten(json.loads((d / "stats.json").read_text()))
    ratios = _read_csv_column(d / "ratios.csv", ("supervised_ratio", "ratio"))
    return stats, ratios
