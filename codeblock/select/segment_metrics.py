"""The segment stage's metrics: block kinds per response, and totals summed batch by batch so the
stage can stream its output (`SegmentTotals`)."""

from __future__ import annotations

from codeblock.select.fencelang import KINDS


def fence_counts(rows: list[dict]) -> dict[str, int]:
    """Code blocks by kind: tagged fences, unfenced code responses, and the verdicts on untagged fences."""
    counts: dict[str, int] = {}
    for r in rows:
        for k in r["block_kind"]:
            counts[k] = counts.get(k, 0) + 1
    untagged = {k: counts.get(k, 0) for k in KINDS}
    out = {"blocks_tagged": counts.get("tagged", 0), "blocks_unfenced": counts.get("unfenced", 0),
           "untagged_fences": sum(untagged.values()), "untagged_code": untagged["code"],
           "untagged_not_code": sum(untagged.values()) - untagged["code"]}
    out.update({f"untagged_{k}": v for k, v in untagged.items() if k != "code"})
    return out


class SegmentTotals:
    """The segment stage's metrics, summed batch by batch (ratios derived at the end)."""

    def __init__(self):
        self.sums: dict[str, int] = {}

    def add(self, out: list[dict]) -> None:
        part = {
            "samples": len(out),
            "dropped_samples": sum(r["dropped"] for r in out),
            "samples_without_code": sum(r["n_blocks"] == 0 for r in out),
            "code_blocks": sum(r["n_blocks"] for r in out),
            "items": sum(len(r["item_tokens"]) for r in out),
            "error_regions": sum(r["n_error_regions"] for r in out),
            "deep_blocks": sum(r["n_deep_blocks"] for r in out),
            "response_tokens": sum(r["response_end"] - r["response_start"] for r in out),
            "item_tokens": sum(len(t) for r in out for t in r["item_tokens"]),
            "prose_tokens_eligible": sum(len(r["prose_tokens"]) for r in out),
            **fence_counts(out),
        }
        for k, v in part.items():
            self.sums[k] = self.sums.get(k, 0) + v

    def metrics(self) -> dict[str, float]:
        m: dict[str, float] = {k: v for k, v in self.sums.items() if k != "item_tokens"}
        m["items_per_sample"] = self.sums.get("items", 0) / max(1, self.sums.get("samples", 0))
        m["item_token_share"] = self.sums.get("item_tokens", 0) / max(1, self.sums.get("response_tokens", 0))
        return m
