"""Scoring and the result files: pass@k through the project's `evaluate` metric, results.json,
metrics.json, and the printed table."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from codeblock.core.io import write_json

METRIC_DIR = Path(__file__).resolve().parents[2] / "metrics" / "pass_at_k"
SCHEMA = "codeblock-eval-1"


@functools.lru_cache(maxsize=1)
def _metric():
    import evaluate

    return evaluate.load(str(METRIC_DIR))


def pass_at_k(total: list[int], correct: list[int], ks: list[int]) -> dict[str, float]:
    """Mean unbiased pass@k over problems, computed by metrics/pass_at_k (the `evaluate` module)."""
    if not total:
        return {}
    return _metric().compute(total=total, correct=correct, k=ks)


def flat_metrics(blocks: dict[str, Any]) -> dict[str, float]:
    ok = {n: b for n, b in blocks.items() if b["status"] == "ok" and b.get("pass_at_1") is not None}
    out = {f"pass_at_1/{n}": float(b["pass_at_1"]) for n, b in ok.items()}
    if ok:
        out["pass_at_1/avg"] = sum(out.values()) / len(ok)
    # evalplus's base tests of the same generations (HumanEval / MBPP); not part of the average
    out.update({f"base_pass_at_1/{n}": float(b["base_pass_at_1"]) for n, b in ok.items()
                if b.get("base_pass_at_1") is not None})
    return out


def write_results(out_dir: Path, *, method: str, model_path: str, model_id: str, harness: dict, decoding: dict,
                  self_check: bool, blocks: dict[str, Any], config_hash: str) -> dict[str, Any]:
    metrics = flat_metrics(blocks)
    result = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": method,
        "model": {"path": model_path, "identity": model_id},
        "self_check": self_check,
        "harness": harness,
        "sandbox": "unsandboxed" if harness.get("isolation") == "none" else harness.get("isolation"),
        "decoding": decoding,
        "config_hash": config_hash,
        "metrics": metrics,
        "average_over": [n for n in blocks if f"pass_at_1/{n}" in metrics],
        "unavailable": {n: b["reason"] for n, b in blocks.items() if b["status"] != "ok"},
        "benchmarks": blocks,
    }
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", result)
    write_json(out_dir / "metrics.json", metrics)
    return result


def format_table(result: dict[str, Any]) -> str:
    head = f"{'benchmark':<58} {'pass@1':>7} {'passed':>9}  notes"
    lines = [head, "-" * len(head)]
    for b in result["benchmarks"].values():
        title = f"{b['title']} [{b['label']}]" if b.get("label") else b["title"]
        if b["status"] != "ok":
            lines.append(f"{title:<58} {'-':>7} {'-':>9}  {b['reason']}")
            continue
        notes = []
        if b.get("limit"):
            notes.append(f"first {b['n_problems']} of {b['n_problems_total']}")
        if b.get("n_missing_library"):
            notes.append(f"{b['n_missing_library']} missing-library errors")
        sc = b.get("self_check")
        if sc:
            if sc["known_defects"]:
                notes.append("known defects: " + ", ".join(sc["known_defects"]))
            if sc.get("too_slow_here"):
                notes.append("over evalplus's time cap on this machine: " + ", ".join(sc["too_slow_here"]))
            if sc["unexpected_failures"]:
                notes.append(f"UNEXPECTED failures: {', '.join(sc['unexpected_failures'][:10])}")
        if b.get("ground_truth_pass_rate") is not None:  # BigCodeBench self-check, as --check-gt-only
            failed = list(b.get("ground_truth_failed") or {})
            notes.append(f"ground-truth pass rate {b['ground_truth_pass_rate']:.3f} ({b['harness']}, "
                         f"{b['interpreter']})" + (f"; failed: {', '.join(failed[:10])}" if failed else ""))
        if b.get("base_pass_at_1") is not None:
            notes.append(f"base tests {100 * b['base_pass_at_1']:.1f}% ({b['n_passed_base']}), {b['harness']}")
        p1 = b["pass_at_1"]
        lines.append(f"{title:<58} {100 * p1:>6.1f}% {b['n_passed']:>4}/{b['n_samples']:<4}  {'; '.join(notes)}")
    avg = result["metrics"].get("pass_at_1/avg")
    if avg is not None:
        lines.append(f"{'average (' + ', '.join(result['average_over']) + ')':<58} {100 * avg:>6.1f}%")
    h = result["harness"]
    sandbox = "UNSANDBOXED (eval.isolation: none)" if h["isolation"] == "none" else f"isolation {h['isolation']}"
    lines.append(f"harness {h['harness_version']}, {sandbox}, workers {h['workers']}, limits {h['limits']}")
    return "\n".join(lines)


def print_table(result: dict[str, Any]) -> None:
    print(format_table(result))


def group_by_task(recs: list[dict]) -> dict[str, list[dict]]:
    """A harness's per-sample records grouped by task, in sample order."""
    out: dict[str, list[dict]] = {}
    for r in recs:
        out.setdefault(r["task_id"], []).append(r)
    return out
