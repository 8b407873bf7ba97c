"""`codeblock data`: build the canonical training pool from the configured sources.

Sources are read in order, normalised to the canonical schema (schema.py), prefixed with their
source name so ids are unique across sources, and written atomically to `paths.pool` (parquet)
with provenance metadata (config hash, per-source counts and skip counts). A bad row stops the
build with an error naming the file, row and field, unless `data.on_bad_row: skip`, in which
case it is skipped and counted per source.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from codeblock.data import hub, local, offline
from codeblock.data.schema import ARROW_SCHEMA, COLUMNS, normalise, resolve_mapping
from codeblock.core.io import BadRowError, write_parquet
from codeblock.core.tracking import stage_run
from codeblock.stages import StageContext, StageResult, stage_hash


def _source_label(src) -> str:
    if src.kind == "offline":
        return src.name
    if src.kind == "hub":
        return src.name.split("/")[-1]
    return src.name or Path(src.path).stem


def iter_source(cfg, src, stats: dict[str, Counter], load_hub=None) -> Iterator[dict[str, Any]]:
    """Yield canonical records of one source, applying its limit and the bad-row policy."""
    label = _source_label(src)
    if src.kind == "offline":
        rows, file = offline.iter_offline(src.name, cfg.paths.raw_dir, src.split), offline.offline_file(
            src.name, cfg.paths.raw_dir)
        mapping: dict[str, str] = dict(src.columns)
    elif src.kind == "local":
        if not src.path:
            raise ValueError(f"data.sources: local source '{label}' needs a path")
        rows, file, mapping = local.iter_local(src.path, src.split), src.path, dict(src.columns)
    else:
        rows = hub.iter_hub(src.name, src.split, src.limit, load=load_hub)
        file, mapping = f"hub:{src.name}[{src.split}]", {**hub.preset_columns(src.name), **src.columns}
    fields = None
    kept = 0
    for rowno, raw in rows:
        try:
            if isinstance(raw, BadRowError):  # the reader could not even parse the row
                raise raw
            if fields is None:
                fields = resolve_mapping(list(raw.keys()), mapping)
            rec = normalise(raw, fields, label, file, rowno)
        except BadRowError:
            if cfg.data.on_bad_row == "error":
                raise
            stats[label]["skipped"] += 1
            continue
        rec["id"] = f"{label}/{rec['id']}"
        stats[label]["kept"] += 1
        kept += 1
        yield rec
        if src.limit and kept >= src.limit:
            break


def run_data(cfg, load_hub=None) -> dict[str, Any]:
    stats: dict[str, Counter] = {}
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for src in cfg.data.sources:
        label = _source_label(src)
        stats.setdefault(label, Counter())
        for rec in tqdm(iter_source(cfg, src, stats, load_hub), desc=f"data:{label}", unit="row"):
            if rec["id"] in seen:
                if cfg.data.on_bad_row == "error":
                    raise BadRowError(src.path or label, rec["id"], "id", "duplicate id within the pool")
                stats[label]["skipped"] += 1
                stats[label]["kept"] -= 1
                continue
            seen[rec["id"]] = label
            records.append({c: rec.get(c) for c in COLUMNS})
    if not records:
        raise ValueError("data: the configured sources produced no rows")
    counts = {label: dict(c) for label, c in stats.items()}
    meta = {
        "stage": "data",
        "config_hash": stage_hash(cfg, "data"),
        "counts": counts,
        "python": platform.python_version(),
        "builders": offline.BUILDER_VERSION,
    }
    import pyarrow as pa

    out = write_parquet(cfg.paths.pool, pa.Table.from_pylist(records, schema=ARROW_SCHEMA), meta)
    metrics = {"rows": len(records)}
    for label, c in counts.items():
        metrics[f"rows/{label}"] = c.get("kept", 0)
        metrics[f"skipped/{label}"] = c.get("skipped", 0)
    with stage_run(cfg, "data", params={"data.on_bad_row": cfg.data.on_bad_row,
                                        "data.sources": [s.name or s.path for s in cfg.data.sources]}) as tr:
        tr.log_metrics(metrics)
    return {"outputs": [str(out)], "metrics": metrics, "counts": counts}


def run(cfg, ctx: StageContext) -> StageResult:
    return StageResult.from_dict("data", run_data(cfg))


def summary(res: StageResult) -> str:
    lines = [f"wrote {res.outputs[0]}: {res.metrics['rows']} rows"]
    for label, c in res.payload["counts"].items():
        lines.append(f"  {label:24s} {c.get('kept', 0):6d} rows   {c.get('skipped', 0):4d} skipped")
    return "\n".join(lines)
