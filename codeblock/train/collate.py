"""Training data for the sparse-loss trainer: label sets, token-budget batches, padding.

A label set (`labels_dir/<method>/labels.parquet`, written by `select` or a baseline) has one row
per sample: `id`, `input_ids` (list<int32>), `labels` (list<int32>, -100 = not supervised; a
supervised label equals the input id at the same position, as in every causal-LM dataset).

- `load_label_set` validates and truncates the rows, and DROPS the samples left with no supervised
  token (counted): at a ~2% budget many responses get no item, and a forward pass over them
  teaches nothing.
- `token_budget_batches` groups samples of similar length (sorted by length) into micro-batches
  whose padded size (rows x longest row) stays within `batch_tokens`.
- `MicroBatches` is a map-style dataset whose items ARE those micro-batches, so the Trainer's own
  sampler (seeded, resumable, sharded across processes by accelerate) shuffles whole batches, and
  `collate_micro_batch` pads one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from codeblock.core.io import BadRowError
from codeblock.train.sparse_loss import IGNORE_INDEX, shift_labels

REQUIRED_COLUMNS = ("id", "input_ids", "labels")


@dataclass
class LabelSet:
    ids: list[str]
    input_ids: list[np.ndarray]
    labels: list[np.ndarray]
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def load_label_set(path: str | Path, max_length: int) -> LabelSet:
    """Read, validate and truncate a labels parquet; drop samples with no supervised token."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: label set not found (run `codeblock select` or a baseline first)")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise BadRowError(path, "-", missing[0], f"missing column (have {table.column_names})")
    ids = table.column("id").to_pylist()
    all_ids = table.column("input_ids").to_pylist()
    all_labels = table.column("labels").to_pylist()
    del table

    out = LabelSet([], [], [])
    st = {"rows": len(ids), "kept": 0, "dropped_no_supervision": 0, "dropped_truncated": 0,
          "truncated": 0, "supervised_tokens": 0, "input_tokens": 0}
    seen: set[str] = set()
    for row, (sid, x, y) in enumerate(zip(ids, all_ids, all_labels)):
        if not isinstance(sid, str) or not sid:
            raise BadRowError(path, row, "id", f"expected a non-empty string, got {sid!r}")
        if sid in seen:
            raise BadRowError(path, row, "id", f"duplicate id {sid!r}")
        seen.add(sid)
        if x is None or y is None or len(x) != len(y):
            raise BadRowError(path, row, "labels", f"length {None if y is None else len(y)} != input_ids length "
                                                   f"{None if x is None else len(x)}")
        if len(x) < 2:
            raise BadRowError(path, row, "input_ids", f"needs at least 2 tokens, got {len(x)}")
        x = np.asarray(x, dtype=np.int64)
        y = np.asarray(y, dtype=np.int64)
        sup = y != IGNORE_INDEX
        if np.any(sup & (y != x)):
            t = int(np.flatnonzero(sup & (y != x))[0])
            raise BadRowError(path, row, "labels", f"label {y[t]} at position {t} differs from input id {x[t]} "
                                                   "(labels must be unshifted copies of input_ids or -100)")
        had = bool(sup[1:].any())
        if len(x) > max_length:
            x, y = x[:max_length], y[:max_length]
            st["truncated"] += 1
        y = y.copy()
        y[0] = IGNORE_INDEX  # position 0 is never predicted
        n_sup = int((y != IGNORE_INDEX).sum())
        if n_sup == 0:
            st["dropped_truncated" if had else "dropped_no_supervision"] += 1
            continue
        out.ids.append(sid)
        out.input_ids.append(x)
        out.labels.append(y)
        st["supervised_tokens"] += n_sup
        st["input_tokens"] += len(x)
    st["kept"] = len(out.ids)
    st["dropped"] = st["dropped_no_supervision"] + st["dropped_truncated"]
    out.stats = st
    return out


def token_budget_batches(lengths: list[int], batch_tokens: int, max_rows: int = 0) -> list[list[int]]:
    """Group sample indices, sorted by length, into batches with rows x longest <= batch_tokens.

    A sample longer than the budget forms a batch of its own. Deterministic for given lengths.
    """
    if batch_tokens <= 0:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i])
        full = cur and ((len(cur) + 1) * new_longest > batch_tokens or (max_rows and len(cur) >= max_rows))
        if full:
            batches.append(cur)
            cur, new_longest = [], lengths[i]
        cur.append(i)
        longest = new_longest
    if cur:
        batches.append(cur)
    return batches


class MicroBatches(torch.utils.data.Dataset):
    """Item i = the rows of micro-batch i, as a list of {"input_ids", "labels"} arrays."""

    def __init__(self, data: LabelSet, batches: list[list[int]]):
        self.data, self.batches = data, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> list[dict[str, np.ndarray]]:
        return [{"input_ids": self.data.input_ids[j], "labels": self.data.labels[j]} for j in self.batches[i]]


@dataclass
class MicroBatchCollator:
    """Pads one micro-batch (the DataLoader runs with batch_size=1 over `MicroBatches`).

    Returns input_ids, attention_mask, labels and shift_labels (labels moved one left: the target
    of each position). The Trainer counts the step's supervised tokens from `shift_labels`.
    """

    pad_token_id: int
    pad_to_multiple_of: int = 1

    def __call__(self, items: list[list[dict[str, np.ndarray]]]) -> dict[str, torch.Tensor]:
        rows = [r for item in items for r in item]
        width = max(len(r["input_ids"]) for r in rows)
        m = self.pad_to_multiple_of
        width = -(-width // m) * m
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[k, :n] = torch.as_tensor(r["input_ids"])
            labels[k, :n] = torch.as_tensor(r["labels"])
            attn[k, :n] = 1
        return {"input_ids": ids, "attention_mask": attn, "labels": labels, "shift_labels": shift_labels(labels)}
