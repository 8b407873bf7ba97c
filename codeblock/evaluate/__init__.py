"""Six-benchmark pass@k evaluation: registry, generation, sandboxed execution, results.

The stage entry point is `codeblock.evaluate.stage.run`; the evaluation itself is
`codeblock.evaluate.pipeline.run_evaluate(cfg, model_path=None, method="base")`. This package
imports nothing at import time, so the filter stage can use
`codeblock.evaluate.registry.iter_problem_texts` cheaply and no submodule imports back through it.
"""
