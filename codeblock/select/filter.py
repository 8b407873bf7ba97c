"""Stage 1: sample filtering - quality, long-tail, duplicates, decontamination.

Reads the canonical pool (`paths.pool`) and writes
- `paths.filtered`: the kept rows, same schema plus `quality` (in [0, 1]), `quality_source`
  (`judge` | `heuristic`), `longtail` (mean(1 - cos) to the k nearest instructions) and `rank`;
  rows keep their pool order;
- `paths.filter_report`: one row per dropped pair with its `reason` and a `detail`.

Each row is dropped for the first reason that hits, in this order:
1. `contaminated:<benchmark>` - shares a `filter.decontam_ngram`-word n-gram with a problem of a
   benchmark in `filter.decontam_benchmarks` (texts from the evaluation registry). A benchmark
   text shorter than n words is matched whole if it has at least `filter.decontam_min_words`
   words. Boilerplate is not used: import lines, and n-grams mostly (> half their words) under
   an n-gram that `filter.decontam_common_problems` or more problems of one benchmark share
   (dataframebench repeats one instruction template in every prompt, which every
   dataframebench_train pair carries too; see `Decontaminator`). The report's
   detail names the problem and the matching n-gram. A benchmark that cannot be loaded is logged, skipped, and counted in the metrics
   (`decontam_unavailable`) and in the report's metadata.
2. `quality` - rows with judge scores (OpenCodeInstruct): test_score < `filter.min_test_score`
   or mean judge score < `filter.min_judge_score`; quality = (judge - 1) / 4. Rows without
   judges get the heuristic rater below, gated by `filter.min_quality` (test_score, when
   present, is gated for them too).
3. `exact_dup` - same normalised (NFKC, casefolded, whitespace-collapsed) instruction and
   response as a better-ranked row.
4. `near_dup` - word-shingle Jaccard >= `filter.near_dup_threshold` with a better-ranked row,
   found with MinHash + LSH (numpy) and confirmed by the exact Jaccard of the shingle sets.
5. `not_kept_rank` - ranked by quality first, long-tail second, outside `filter.keep`.
"Better-ranked" means higher quality (ties: earlier in the pool).

Heuristic rater (rows without judge scores), a score in [0, 1]:
    0                                   if len(response) is outside [min_response_chars, max_response_chars]
    0                                   if the response contains no code
    0.4 + 0.6 * parse_fraction          otherwise
where code is a fenced block (codeblock/core/markdown.py; an untagged one only when
codeblock/select/fencelang.py rates it code, not shell, output or data), or an unfenced response
that parses as Python and is more than data; parse_fraction is the share of Python blocks (tag python/py/none) that
`ast.parse` accepts (1.0 when every block is in another language: not checked). Parsing never
executes anything. With the default gate 0.5, a response whose Python does not parse at all is
dropped; one with one good block out of two passes (0.7).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from codeblock.core.io import BadRowError, read_parquet_metadata, sha256_file, write_parquet
from codeblock.core.markdown import fenced_blocks
from codeblock.data.decontam import Decontaminator, ProblemTexts, build_decontaminator
from codeblock.select.dedup import exact_key, near_duplicates
from codeblock.select.fencelang import classify_untagged
from codeblock.select.languages import get_spec
from codeblock.stages import StageContext, StageResult, stage_hash

log = logging.getLogger(__name__)

PY_TAGS = {"", "python", "py", "python3", "py3", "ipython", "pycon"}


# ---------------------------------------------------------------------------------------------
# Quality


def code_blocks(response: str) -> list[tuple[str, str]]:
    """(language tag, code) of each fenced block that holds code (codeblock/core/markdown.py; an
    untagged fence only when codeblock/select/fencelang.py rates it code, so a shell command or
    printed output is not code); an unfenced response that parses as Python and is more than
    data is one untagged block."""
    fences = fenced_blocks(response)
    spec = get_spec("python")
    blocks = [(f.lang, f.code) for f in fences if f.lang or classify_untagged(f.code, spec) == "code"]
    if blocks or fences:
        return blocks
    return [("", response)] if classify_untagged(response, spec) == "code" else []


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def heuristic_quality(response: str, min_chars: int, max_chars: int) -> tuple[float, str]:
    """The documented rater (module docstring): (score in [0, 1], short reason)."""
    n = len(response)
    if n < min_chars or n > max_chars:
        return 0.0, f"length {n} outside [{min_chars}, {max_chars}]"
    blocks = code_blocks(response)
    if not blocks:
        return 0.0, "no code"
    py = [code for tag, code in blocks if tag in PY_TAGS]
    frac = sum(_parses(c) for c in py) / len(py) if py else 1.0
    return 0.4 + 0.6 * frac, f"{len(blocks)} block(s), python parse fraction {frac:.2f}"


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if np.isnan(v) else v


def rate_row(row: dict, fc) -> tuple[float, str, bool, str]:
    """(quality in [0,1], quality_source, passes the gate, reason text)."""
    judge, test = _num(row.get("judge_score")), _num(row.get("test_score"))
    if test is not None and test < fc.min_test_score:
        why = f"test_score {test:.3f} < {fc.min_test_score}"
        q = (judge - 1.0) / 4.0 if judge is not None else 0.0
        return q, ("judge" if judge is not None else "heuristic"), False, why
    if judge is not None:
        q = (judge - 1.0) / 4.0
        ok = judge >= fc.min_judge_score
        return q, "judge", ok, "" if ok else f"judge_score {judge:.3f} < {fc.min_judge_score}"
    q, why = heuristic_quality(row["response"], fc.min_response_chars, fc.max_response_chars)
    ok = q >= fc.min_quality
    return q, "heuristic", ok, "" if ok else f"heuristic {q:.2f} < {fc.min_quality}: {why}"


# ---------------------------------------------------------------------------------------------
# The stage


def _read_pool(path: str) -> list[dict]:
    import pyarrow.parquet as pq

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: pool not found (run `codeblock data` first)")
    rows = pq.read_table(path).to_pylist()
    seen: set[str] = set()
    for i, r in enumerate(rows):
        for field in ("id", "instruction", "response"):
            if not isinstance(r.get(field), str):
                raise BadRowError(path, i, field, f"expected a string, got {type(r.get(field)).__name__}")
        if r["id"] in seen:
            raise BadRowError(path, i, "id", f"duplicate id {r['id']!r}")
        seen.add(r["id"])
    return rows


def n_to_keep(keep: float, n: int) -> int:
    """`filter.keep`: a fraction of the candidates when <= 1, else a count."""
    if keep < 0:
        raise ValueError(f"filter.keep must be >= 0, got {keep}")
    return min(n, int(round(keep * n)) if keep <= 1 else int(keep))


@dataclass
class FilterOutcome:
    """What the filter decided for every pool row (indices into the pool's rows)."""

    dropped: dict[int, tuple[str, str]]  # row -> (reason, detail)
    quality: np.ndarray
    quality_source: list[str]
    longtail: np.ndarray
    rank: dict[int, int]  # row -> rank among the candidates (quality, then long-tail)
    kept: list[int]  # kept rows, in pool order

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reason, _ in self.dropped.values():
            out[reason] = out.get(reason, 0) + 1
        return out


def _drop_duplicates(rows: list[dict], quality: np.ndarray, dropped: dict, fc, progress: bool) -> list[int]:
    """Exact, then near duplicates, scanned best first (higher quality, then pool order); returns
    the surviving rows in that order."""
    order = sorted((i for i in range(len(rows)) if i not in dropped), key=lambda i: (-quality[i], i))
    first: dict[str, int] = {}
    for i in order:
        key = exact_key(rows[i]["instruction"], rows[i]["response"])
        if key in first:
            dropped[i] = ("exact_dup", f"same normalised text as {rows[first[key]]['id']}")
        else:
            first[key] = i
    order = [i for i in order if i not in dropped]
    near = near_duplicates([rows[i]["instruction"] + "\n" + rows[i]["response"] for i in order],
                           fc.near_dup_threshold, fc.near_dup_shingle, fc.minhash_perms, progress)
    for pos, (other, jac) in near.items():
        dropped[order[pos]] = ("near_dup", f"Jaccard {jac:.3f} with {rows[order[other]]['id']}")
    return [i for i in order if i not in dropped]


def filter_rows(rows: list[dict], fc, dec: Decontaminator,
                embed: Callable[[list[str]], np.ndarray], progress: bool = False) -> FilterOutcome:
    """The filter's decisions, without files: decontamination, quality gate, exact and near
    duplicates, then long-tail ranking (`embed` maps instructions to unit vectors) and the cut."""
    from codeblock.select.embed import knn_longtail

    n = len(rows)
    dropped: dict[int, tuple[str, str]] = {}
    for i, r in enumerate(tqdm(rows, desc="decontaminate", unit="row", disable=not progress)):
        found = dec.hit(r["instruction"] + "\n" + r["response"])
        if found:
            dropped[i] = (f"contaminated:{found[0]}", f"{found[0]}/{found[1]}: '{found[2]}'")
    quality = np.zeros(n)
    qsource = [""] * n
    for i, r in enumerate(tqdm(rows, desc="quality", unit="row", disable=not progress)):
        q, src, ok, why = rate_row(r, fc)
        quality[i], qsource[i] = q, src
        if not ok and i not in dropped:
            dropped[i] = ("quality", why)
    cands = _drop_duplicates(rows, quality, dropped, fc, progress)
    longtail = np.zeros(n)
    if cands:
        longtail[cands] = knn_longtail(embed([rows[i]["instruction"] for i in cands]), fc.knn_k, progress=progress)
    ranked = sorted(cands, key=lambda i: (-quality[i], -longtail[i], i))
    n_keep = n_to_keep(fc.keep, len(ranked))
    rank = {i: k for k, i in enumerate(ranked)}
    for i in ranked[n_keep:]:
        dropped[i] = ("not_kept_rank", f"rank {rank[i]} >= keep {n_keep}")
    return FilterOutcome(dropped, quality, qsource, longtail, rank, sorted(ranked[:n_keep]))


def filter_metrics(n: int, out: FilterOutcome, dec: Decontaminator, unavailable: dict[str, str],
                   benchmarks: list[str]) -> dict[str, float]:
    reasons, kept = out.reasons(), out.kept
    metrics: dict[str, float] = {
        "pool_rows": n,
        "kept": len(kept),
        "dropped": len(out.dropped),
        "dropped_quality": reasons.get("quality", 0),
        "dropped_exact_dup": reasons.get("exact_dup", 0),
        "dropped_near_dup": reasons.get("near_dup", 0),
        "dropped_not_kept_rank": reasons.get("not_kept_rank", 0),
        "dropped_contaminated": sum(v for k, v in reasons.items() if k.startswith("contaminated:")),
        "decontam_unavailable": len(unavailable),
        "mean_quality_kept": float(out.quality[kept].mean()) if kept else 0.0,
        "mean_longtail_kept": float(out.longtail[kept].mean()) if kept else 0.0,
    }
    for name in benchmarks:
        metrics[f"dropped_contaminated/{name}"] = reasons.get(f"contaminated:{name}", 0)
        metrics[f"decontam_problems/{name}"] = dec.counts.get(name, 0)
    return metrics


def write_filter_outputs(cfg, rows: list[dict], out: FilterOutcome, meta: dict) -> None:
    """The kept pool (with quality, source of the quality, long-tail score and rank) and the report
    of every dropped row with its reason, both atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kept_rows = [
        {**rows[i], "quality": float(out.quality[i]), "quality_source": out.quality_source[i],
         "longtail": float(out.longtail[i]), "rank": out.rank[i]}
        for i in out.kept
    ]
    pool_schema = pq.read_schema(cfg.paths.pool).remove_metadata()
    for name in ("quality", "quality_source", "longtail", "rank"):  # re-filtering a filtered pool
        if name in pool_schema.names:
            pool_schema = pool_schema.remove(pool_schema.get_field_index(name))
    schema = pool_schema.append(pa.field("quality", pa.float64())).append(pa.field("quality_source", pa.string()))
    schema = schema.append(pa.field("longtail", pa.float64())).append(pa.field("rank", pa.int64()))
    write_parquet(cfg.paths.filtered, pa.Table.from_pylist(kept_rows, schema=schema), {**meta, "rows": len(kept_rows)})
    report_rows = [
        {"id": rows[i]["id"], "source": rows[i].get("source"), "reason": reason, "detail": detail,
         "quality": float(out.quality[i])}
        for i, (reason, detail) in sorted(out.dropped.items())
    ]
    report_schema = pa.schema([("id", pa.string()), ("source", pa.string()), ("reason", pa.string()),
                               ("detail", pa.string()), ("quality", pa.float64())])
    write_parquet(cfg.paths.filter_report, pa.Table.from_pylist(report_rows, schema=report_schema),
                  {**meta, "rows": len(report_rows)})


def run_filter(cfg, problem_texts: ProblemTexts | None = None, progress: bool = True) -> dict:
    """Filter `paths.pool` into `paths.filtered` and `paths.filter_report` (module docstring)."""
    from codeblock.core.models import resolve_device
    from codeblock.core.tracking import stage_run
    from codeblock.select.embed import embed_texts

    fc = cfg.filter
    rows = _read_pool(cfg.paths.pool)
    dec, unavailable = build_decontaminator(cfg, problem_texts)

    def embed(texts: list[str]) -> np.ndarray:
        return embed_texts(texts, fc.embedder, fc.embed_batch_size, device=str(resolve_device(cfg.model)),
                           models_dir=cfg.paths.models_dir, progress=progress)

    out = filter_rows(rows, fc, dec, embed, progress)
    meta = {
        "stage": "filter",
        "config_hash": stage_hash(cfg, "filter"),
        "input": {"pool": cfg.paths.pool, "sha256": sha256_file(cfg.paths.pool)},
        "pool_meta_hash": read_parquet_metadata(cfg.paths.pool).get("config_hash"),
        "decontam_problems": dec.counts,
        "decontam_unavailable": unavailable,
        "embedder": fc.embedder,
    }
    write_filter_outputs(cfg, rows, out, meta)
    reasons = out.reasons()
    metrics = filter_metrics(len(rows), out, dec, unavailable, fc.decontam_benchmarks)
    params = {f"filter.{k}": v for k, v in cfg.to_dict()["filter"].items()}
    with stage_run(cfg, "filter", params=params, tags={"decontam_unavailable": ",".join(unavailable) or "none"}) as tr:
        tr.log_metrics(metrics)
        tr.log_dict({"reasons": reasons, "decontam_unavailable": unavailable}, "filter_reasons.json")
    return {
        "outputs": [cfg.paths.filtered, cfg.paths.filter_report],
        "metrics": metrics,
        "reasons": reasons,
        "decontam_unavailable": unavailable,
    }


def run(cfg, ctx: StageContext) -> StageResult:
    return StageResult.from_dict("filter", run_filter(cfg, progress=ctx.progress))


def summary(res: StageResult) -> str:
    m = res.metrics
    lines = [f"filter: kept {m['kept']} of {m['pool_rows']} -> {res.outputs[0]}"]
    lines += [f"  dropped {reason:28s} {count}" for reason, count in sorted(res.payload["reasons"].items())]
    lines += [f"  WARNING decontamination skipped {name}: {why}"
              for name, why in res.payload["decontam_unavailable"].items()]
    if len(res.outputs) > 1:
        lines.append(f"  report -> {res.outputs[1]}")
    return "\n".join(lines)
