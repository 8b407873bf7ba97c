"""The canonical training record and the row normaliser every source goes through.

Canonical columns (parquet): id, instruction, response, source (str, non-empty), judge_score and
test_score (float or null; present only for sources that carry quality labels, such as
OpenCodeInstruct), domain (str or null). A bad row raises BadRowError naming file, row and field.
"""

from __future__ import annotations

import json
import math
from typing import Any

from codeblock.core.io import BadRowError

COLUMNS = ["id", "instruction", "response", "source", "judge_score", "test_score", "domain"]
REQUIRED = ("id", "instruction", "response")
JUDGE_KEYS = ("requirement_conformance", "logical_correctness", "edge_case_consideration")

# Column names other datasets use for the canonical fields, tried when no mapping is given.
ALIASES = {
    "id": ("id", "task_id", "uid", "idx"),
    "instruction": ("instruction", "input", "prompt", "question", "query"),
    "response": ("response", "output", "completion", "answer", "solution"),
}

try:
    import pyarrow as pa

    ARROW_SCHEMA = pa.schema(
        [
            ("id", pa.string()),
            ("instruction", pa.string()),
            ("response", pa.string()),
            ("source", pa.string()),
            ("judge_score", pa.float64()),
            ("test_score", pa.float64()),
            ("domain", pa.string()),
        ]
    )
except ImportError:  # pragma: no cover - pyarrow is a hard dependency
    ARROW_SCHEMA = None


def judge_mean(value: Any, where: tuple[str, int | str]) -> float | None:
    """Mean of OpenCodeInstruct's three 1-5 judge scores; `value` is a dict or its JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise BadRowError(where[0], where[1], "llm_judgement", f"not JSON: {e.msg}") from e
    if not isinstance(value, dict):
        raise BadRowError(where[0], where[1], "llm_judgement", f"expected a mapping, got {type(value).__name__}")
    scores = []
    for k in JUDGE_KEYS:
        if k not in value:
            raise BadRowError(where[0], where[1], "llm_judgement", f"missing key '{k}'")
        v = value[k]
        if isinstance(v, dict):  # {"score": 5, "justification": ...}
            v = v.get("score")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise BadRowError(where[0], where[1], f"llm_judgement.{k}", f"not a number: {v!r}") from None
        if not 1.0 <= v <= 5.0:
            raise BadRowError(where[0], where[1], f"llm_judgement.{k}", f"out of range 1-5: {v}")
        scores.append(v)
    return sum(scores) / len(scores)


def _float01(value: Any, file: str, row: int | str, field: str) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BadRowError(file, row, field, f"not a number: {value!r}") from None
    if math.isnan(v):
        return None
    if not 0.0 <= v <= 1.0:
        raise BadRowError(file, row, field, f"out of range [0, 1]: {v}")
    return v


def resolve_mapping(columns: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """canonical field -> source column: the explicit mapping first, then the known aliases."""
    out = {canon: src for src, canon in mapping.items()}
    for canon, names in ALIASES.items():
        if canon not in out:
            for n in names:
                if n in columns:
                    out[canon] = n
                    break
    return out


def normalise(raw: dict[str, Any], fields: dict[str, str], source: str, file: str, row: int) -> dict[str, Any]:
    """Map one raw row to the canonical schema, or raise BadRowError."""
    rec: dict[str, Any] = {"source": source}
    for canon in REQUIRED:
        col = fields.get(canon)
        if col is None:
            raise BadRowError(file, row, canon, "no column maps to this field (set data.sources[].columns)")
        value = raw.get(col)
        if canon == "id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise BadRowError(file, row, col, f"expected a string, got {type(value).__name__}")
        if not value.strip():
            raise BadRowError(file, row, col, "empty")
        rec[canon] = value
    judge_col = fields.get("judge_score", "llm_judgement")
    rec["judge_score"] = (
        judge_mean(raw.get(judge_col), (file, row)) if judge_col == "llm_judgement"
        else _float_or_none(raw.get(judge_col), file, row, judge_col)
    )
    test_col = fields.get("test_score", "average_test_score")
    rec["test_score"] = _float01(raw.get(test_col), file, row, test_col)
    dom = raw.get(fields.get("domain", "domain"))
    rec["domain"] = None if dom is None else str(dom)
    return rec


def _float_or_none(value: Any, file: str, row: int | str, field: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadRowError(file, row, field, f"not a number: {value!r}") from None
