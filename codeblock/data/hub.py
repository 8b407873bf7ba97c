"""Hub sources through `datasets.load_dataset`.

nvidia/OpenCodeInstruct (5M rows; columns id, input, output, domain, generation_algorithm,
llm_judgement, unit_tests, tests_execution_status, average_test_score) has a built-in column
mapping; any other dataset maps its columns with `data.sources[].columns` (source -> canonical) or
through the aliases in schema.py. With `limit > 0` the dataset is streamed, so taking the first
20K rows of a 5M-row dataset does not download all of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

OPENCODEINSTRUCT = "nvidia/OpenCodeInstruct"
PRESETS: dict[str, dict[str, str]] = {
    OPENCODEINSTRUCT: {
        "id": "id",
        "input": "instruction",
        "output": "response",
        "llm_judgement": "judge_score",
        "average_test_score": "test_score",
        "domain": "domain",
    },
}


def preset_columns(name: str) -> dict[str, str]:
    return dict(PRESETS.get(name, {}))


def iter_hub(name: str, split: str = "train", limit: int = 0, load=None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row index, raw row). `load` defaults to datasets.load_dataset (injectable for tests)."""
    if load is None:
        from datasets import load_dataset as load
    ds = load(name, split=split, streaming=limit > 0)
    for i, row in enumerate(ds):
        if limit and i >= limit:
            break
        yield i, row
