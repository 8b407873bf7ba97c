"""The selection interface every method shares (CodeBlock and the baselines), and its writer.

A method returns a `Selection`: per sample, the response-relative token indices that get loss.
`write_selection` turns it into the files the trainer reads:
    <labels_dir>/<method>/labels.parquet   id (str), input_ids (list<int32>), labels (list<int32>)
    <labels_dir>/<method>/stats.json       flat numeric metrics (DVC metrics)
    <labels_dir>/<method>/ratios.csv       per-sample supervised ratio (DVC plot)
    <labels_dir>/<method>/items.parquet    codeblock only: U, Ũ, Reach, Bridge, P, selected per item
    <labels_dir>/<method>/prose_words.json codeblock only: the chosen prose words, most frequent first
Labels are -100 everywhere except the selected response tokens; prompt tokens are always -100.
Budget helpers (`fill_budget`, `top_tokens`, `budget_groups`) live here too, so every method
spends its budget by the same rules.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codeblock.stages import stage_hash

FULL_TOKEN_METHODS = ("full", "full_filtered", "ds2")  # their budget is every response token
TOP_WORDS = 100  # prose words listed in prose_words.json
GROUP_ROWS = 2048  # label rows per parquet row group (what the writer holds at once)
SEGMENT_BATCH_ROWS = 4096  # segment rows select holds at once


@dataclass
class Sample:
    id: str
    input_ids: np.ndarray  # int32
    response_start: int
    response_end: int
    selected: np.ndarray | None = None  # response-relative token indices (int64), sorted
    n_code: int = 0
    n_prose: int = 0
    n_items: int = 0

    @property
    def n_response(self) -> int:
        return self.response_end - self.response_start


@dataclass
class Selection:
    method: str
    samples: Iterable[Sample]  # a list, or a one-shot iterator the writer streams
    extra: dict = field(default_factory=dict)  # method-specific numeric stats
    items: object = None  # optional pyarrow Table of per-item details
    inputs: dict = field(default_factory=dict)  # input path -> sha256, for provenance
    words: list = field(default_factory=list)  # (prose word, times chosen), most frequent first



def fill_budget(order: np.ndarray, sizes: np.ndarray, budget: float) -> tuple[list[int], int]:
    """Take whole units in `order` while the budget allows (overshoot < half the unit's size).

    Returns (chosen unit indices, tokens taken)."""
    chosen: list[int] = []
    taken = 0
    if budget <= 0 or len(order) == 0:
        return chosen, 0
    min_size = int(sizes[order].min())
    for k in order.tolist():
        s = int(sizes[k])
        if taken + s <= budget + s / 2.0:
            chosen.append(k)
            taken += s
            if budget - taken < min_size / 2.0:
                break
    return chosen, taken


def top_tokens(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values (ties broken by position, deterministic)."""
    k = max(0, min(int(k), len(values)))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(values)), -values))
    return order[:k]



def budget_groups(scope: str, n_samples: int, keys: np.ndarray) -> list[np.ndarray]:
    """Index arrays into `keys` (sample ids of units) per budget group."""
    if scope == "global":
        return [np.arange(len(keys))]
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n_samples + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(n_samples)]


def labels_for(s: Sample) -> np.ndarray:
    lab = np.full(len(s.input_ids), -100, dtype=np.int32)
    if s.selected is not None and len(s.selected):
        idx = s.response_start + np.asarray(s.selected, dtype=np.int64)
        lab[idx] = s.input_ids[idx]
    return lab


def _list_array(arrays: list[np.ndarray]):
    import pyarrow as pa

    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def selection_stats(counts: dict[str, np.ndarray], extra: dict, budget: float) -> dict[str, float]:
    """The label set's metrics from its per-sample counts (`_write_labels`) and the method's extra."""
    resp, sup = counts["response"].astype(np.float64), counts["supervised"].astype(np.float64)
    n = len(resp)
    code, prose = float(counts["code"].sum()), float(counts["prose"].sum())
    ratio = np.divide(sup, resp, out=np.zeros_like(sup), where=resp > 0)
    total_sup, total_resp = float(sup.sum()), float(resp.sum())
    g = total_sup / total_resp if total_resp else 0.0
    q = np.percentile(ratio, [10, 25, 50, 75, 90]) if n else np.zeros(5)
    stats = {
        "samples": n,
        "response_tokens": total_resp,
        "supervised_tokens": total_sup,
        "supervised_ratio": g,
        "budget": budget,
        "ratio_vs_budget": g / budget if budget else 0.0,
        "code_tokens": code,
        "prose_tokens": prose,
        "prose_share": prose / total_sup if total_sup else 0.0,
        "items_selected": float(counts["items"].sum()),
        "samples_zero_supervision": float((sup == 0).sum()),
        "samples_zero_supervision_share": float((sup == 0).mean()) if n else 0.0,
        "sample_ratio_mean": float(ratio.mean()) if n else 0.0,
        "sample_ratio_std": float(ratio.std()) if n else 0.0,
        "sample_ratio_min": float(ratio.min()) if n else 0.0,
        "sample_ratio_p10": float(q[0]),
        "sample_ratio_p25": float(q[1]),
        "sample_ratio_p50": float(q[2]),
        "sample_ratio_p75": float(q[3]),
        "sample_ratio_p90": float(q[4]),
        "sample_ratio_max": float(ratio.max()) if n else 0.0,
    }
    stats.update({k: float(v) for k, v in extra.items()})
    return stats


def _write_labels(sink, samples: Iterable[Sample]) -> dict[str, np.ndarray]:
    """Stream the samples' (id, input_ids, labels) rows into `sink` (a ParquetStream), GROUP_ROWS
    at a time; return the per-sample counts the metrics and ratios.csv are made of."""
    import pyarrow as pa

    cols: dict[str, list] = {k: [] for k in ("id", "response", "supervised", "code", "prose", "items")}
    group: list[Sample] = []

    def flush() -> None:
        if group:
            sink.write_table(pa.table({"id": pa.array([s.id for s in group], pa.string()),
                                       "input_ids": _list_array([s.input_ids for s in group]),
                                       "labels": _list_array([labels_for(s) for s in group])}, schema=sink.schema))
            group.clear()

    for s in samples:
        group.append(s)
        cols["id"].append(s.id)
        cols["response"].append(s.n_response)
        cols["supervised"].append(0 if s.selected is None else len(s.selected))
        cols["code"].append(s.n_code)
        cols["prose"].append(s.n_prose)
        cols["items"].append(s.n_items)
        if len(group) >= GROUP_ROWS:
            flush()
    flush()
    return {k: (v if k == "id" else np.asarray(v, dtype=np.int64)) for k, v in cols.items()}


def write_selection(cfg, sel: Selection) -> dict:
    """Write labels.parquet, stats.json, ratios.csv (and items.parquet) for one method; log to MLflow.
    `sel.samples` is read once, as a stream: its labels go to disk a row group at a time."""
    import pyarrow as pa

    from codeblock.core.io import ParquetStream, atomic_write_text, write_json, write_parquet
    from codeblock.core.tracking import stage_run

    out_dir = Path(cfg.paths.labels_dir) / sel.method
    budget = 1.0 if sel.method.split("+")[0] in FULL_TOKEN_METHODS else cfg.select.budget
    schema = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    outputs = [str(out_dir / "labels.parquet"), str(out_dir / "stats.json"), str(out_dir / "ratios.csv")]
    params = {"select." + k: v for k, v in cfg.to_dict()["select"].items()}
    params["select.method"] = sel.method
    with stage_run(cfg, f"select-{sel.method}", params=params, tags={"codeblock.method": sel.method}) as tr:
        with ParquetStream(out_dir / "labels.parquet", schema, group_rows=GROUP_ROWS) as sink:
            counts = _write_labels(sink, sel.samples)
            stats = selection_stats(counts, sel.extra, budget)  # after the stream: extra may be filled by it
            meta = {"stage": "select", "method": sel.method, "config_hash": stage_hash(cfg, "select"),
                    "inputs": sel.inputs, "stats": stats}
            sink.metadata = meta
        write_json(out_dir / "stats.json", stats)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "response_tokens", "supervised_tokens", "code_tokens", "prose_tokens", "ratio"])
        for row in zip(counts["id"], *(counts[k].tolist() for k in ("response", "supervised", "code", "prose"))):
            n_resp, k = row[1], row[2]
            w.writerow([*row, f"{k / n_resp if n_resp else 0.0:.6f}"])
        atomic_write_text(out_dir / "ratios.csv", buf.getvalue())
        if sel.words:
            write_json(out_dir / "prose_words.json", {"top_words": [[w, c] for w, c in sel.words[:TOP_WORDS]],
                                                      "distinct": len(sel.words)})
            outputs.append(str(out_dir / "prose_words.json"))
            tr.log_artifact(out_dir / "prose_words.json")
        if sel.items is not None:
            write_parquet(out_dir / "items.parquet", sel.items, metadata=meta)
            outputs.append(str(out_dir / "items.parquet"))
        tr.log_metrics(stats)
        tr.log_artifact(out_dir / "stats.json")
    return {"outputs": outputs, "metrics": stats, "top_words": [list(x) for x in sel.words[:TOP_WORDS]]}


def read_segments(path: str | Path, include_dropped: bool = False) -> list[dict]:
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    return rows if include_dropped else [r for r in rows if not r["dropped"]]


def load_scores(cfg) -> dict[str, dict]:
    from codeblock.select.score import load_scores as _load

    return _load(cfg)


def segment_batches(path: str | Path, scores, column: str = "gce", batch_rows: int | None = None,
                    progress: bool = True):
    """`batches(scored)` for `priority.plan_codeblock`: the kept rows of a segments file,
    `batch_rows` at a time, each time the file is walked, with their `column` scores (joined
    from `scores`, anything with `.get(id)`: a dict or a `score_cache.ScoreLookup`) when `scored`."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    def batches(scored: bool):
        pf = pq.ParquetFile(path)
        row = 0
        with tqdm(total=pf.metadata.num_rows, desc="select: priorities" if scored else "select: labels",
                  unit="row", disable=not progress) as bar:
            for b in pf.iter_batches(batch_size=batch_rows or SEGMENT_BATCH_ROWS):
                rows = b.to_pylist()
                kept = [(row + k, r) for k, r in enumerate(rows) if not r["dropped"]]
                row += len(rows)
                segs = [r for _, r in kept]
                yield segs, (join_scores(segs, scores, str(path), column, [k for k, _ in kept]) if scored else None)
                bar.update(len(rows))

    return batches


def join_scores(segments: list[dict], scores, path: str = "segments", column: str = "gce",
                rows: list[int] | None = None) -> list[np.ndarray]:
    """The per-response-token score array (`column`: gce | ce) of each segmented sample, checking
    that tokenization matches; errors name `rows[k]` (default k) as the sample's row."""
    from codeblock.core.io import BadRowError

    out = []
    for j, r in enumerate(segments):
        k = rows[j] if rows is not None else j
        sc = scores.get(r["id"])
        if sc is None:
            raise BadRowError(path, k, "id", f"sample {r['id']!r} has no score (run `codeblock score`)")
        if int(sc["response_start"]) != r["response_start"] or not np.array_equal(
                np.asarray(sc["input_ids"], dtype=np.int64), np.asarray(r["input_ids"], dtype=np.int64)):
            raise BadRowError(path, k, "input_ids", f"sample {r['id']!r}: scored and segmented tokenizations differ "
                              "(score.max_length or the model changed; re-run segment and score)")
        if column not in sc:
            raise BadRowError(path, k, column, f"sample {r['id']!r}: the score cache has no {column!r} column "
                              "(re-run `codeblock score`)")
        g = np.asarray(sc[column], dtype=np.float64)
        if len(g) != r["response_end"] - r["response_start"]:
            raise BadRowError(path, k, column, f"{len(g)} scores for {r['response_end'] - r['response_start']} tokens")
        out.append(g)
    return out


def sample_from_row(r: dict) -> Sample:
    return Sample(r["id"], np.asarray(r["input_ids"], dtype=np.int32), int(r["response_start"]), int(r["response_end"]))
