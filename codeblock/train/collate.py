"""Batching for the sparse-loss trainer: token-budget micro-batches and their padding.

- `token_budget_batches` groups samples of similar length (sorted by length) into micro-batches
  whose padded size (rows x longest row) stays within `batch_tokens`.
- `MicroBatches` is a map-style dataset whose items ARE those micro-batches, so the Trainer's own
  sampler (seeded, resumable, sharded across processes by accelerate) shuffles whole batches, and
  `MicroBatchCollator` pads one of them. Rows come from a `codeblock.train.labelset.LabelSet`
  (read lazily from a memory map during training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codeblock.train.labelset import LabelSet
from codeblock.train.sparse_loss import IGNORE_INDEX, shift_labels


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
