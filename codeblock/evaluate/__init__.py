"""Six-benchmark pass@k evaluation: registry, generation, sandboxed execution, results.

`run_evaluate(cfg, model_path=None, method="base")` is the stage entry point (see
`codeblock.evaluate.pipeline`). This package imports nothing heavy at import time, so the filter
stage can use `codeblock.evaluate.registry.iter_problem_texts` cheaply.
"""

from __future__ import annotations

from codeblock.evaluate.registry import BenchmarkUnavailable, iter_problem_texts  # noqa: F401


def run_evaluate(cfg, model_path=None, method: str = "base", **kwargs) -> dict:
    from codeblock.evaluate.pipeline import run_evaluate as _run

    return _run(cfg, model_path=model_path, method=method, **kwargs)


__all__ = ["run_evaluate", "iter_problem_texts", "BenchmarkUnavailable"]
