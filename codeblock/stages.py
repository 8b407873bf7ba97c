"""The one stage registry: every pipeline stage, its entry point, what it reads and what it writes.

Everything that runs stages reads this table: the CLI (`codeblock <stage>`), the Prefect flows
(`flows/`), the experiment grid, and `tests/test_stages.py`, which checks `dvc.yaml` against it.
A stage module exposes one entry point with one signature:

    run(cfg: Config, ctx: StageContext) -> StageResult

`ctx.method` names the method for per-method stages (select, train, evaluate); `ctx.options` holds
the stage's own command-line options (`add_args` in its module). The module may also define
`add_args(parser)` and `summary(result) -> str` (what the CLI prints).

`params` lists the configuration a stage's RESULT depends on (groups or `group.key`): it is
hashed into the stage's outputs (`stage_hash`) and is what dvc.yaml declares for the stage.
Keys marked `volatile` in `codeblock/core/params.py` (parallelism, progress, logging) are left
out of both, so changing them never reruns a stage. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from codeblock.core.params import Config


@dataclass(frozen=True)
class StageContext:
    """What a stage needs besides the configuration."""

    method: str | None = None  # select / train / evaluate: whose labels, model, results
    model_path: str | None = None  # evaluate: the model to evaluate (default: runs_dir/<method>/model)
    progress: bool = True  # progress bars (never part of any hash)
    options: dict[str, Any] = field(default_factory=dict)  # the stage's own CLI options


@dataclass
class StageResult:
    """What every stage returns: the files it wrote, its metrics, and the rest of its report."""

    stage: str
    outputs: list[str]
    metrics: dict[str, Any]
    method: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)  # stage-specific details (tables, reasons, ...)
    exit_code: int = 0  # non-zero: the stage ran but its check failed (e.g. evaluate --self-check)

    @classmethod
    def from_dict(cls, stage: str, res: dict[str, Any], method: str | None = None, exit_code: int = 0) -> StageResult:
        """Wrap a stage function's plain-dict report (outputs, metrics, anything else)."""
        rest = {k: v for k, v in res.items() if k not in ("outputs", "metrics")}
        return cls(stage=stage, outputs=[str(p) for p in res.get("outputs") or []],
                   metrics=dict(res.get("metrics") or {}), method=method, payload=rest, exit_code=exit_code)

    def to_json(self) -> dict[str, Any]:
        """The JSON-safe part (what a stage subprocess hands back to the flow)."""
        scalars = {k: v for k, v in self.metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
        return {"stage": self.stage, "method": self.method, "outputs": self.outputs, "metrics": scalars,
                "exit_code": self.exit_code}


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # defines run(cfg, ctx) -> StageResult
    help: str
    params: tuple[str, ...]  # the config its result depends on (hashed; declared in dvc.yaml)
    per_method: bool = False  # runs once per method (dvc.yaml matrix over pipeline.methods)
    needs_chain: bool = False  # needs filter -> segment -> score (unless the method is pool-only)

    def load(self):
        return importlib.import_module(self.module)

    def run(self, cfg: Config, ctx: StageContext | None = None) -> StageResult:
        return self.load().run(cfg, ctx or StageContext())


_EVAL_DATA = ("eval.humaneval_plus_path", "eval.mbpp_plus_path", "eval.bigcodebench_path",
              "eval.bigcodebench_hard_path", "paths.raw_dir")

# In pipeline order. The method's five steps are filter (1), segment (2), score (3) and select (4-5).
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("data", "codeblock.data.build", "Build the canonical training pool from the configured sources.",
          ("data", "paths.pool", "paths.raw_dir")),
    Stage("filter", "codeblock.select.filter", "Stage 1: quality + long-tail filtering, dedup, decontamination.",
          ("filter", *_EVAL_DATA, "paths.models_dir")),
    Stage("segment", "codeblock.select.segment", "Stage 2: split responses into coding items and prose.",
          ("segment", "dataflow", "model", "score.max_length")),
    Stage("score", "codeblock.select.score", "Stage 3: GCE utility over core logic tokens.",
          ("score", "model")),
    Stage("select", "codeblock.select.methods", "Stages 4-5: data-flow rerank, budgeted selection into sparse labels.",
          ("select", "segment", "dataflow", "score", "model"), per_method=True),
    Stage("train", "codeblock.train.trainer", "Sparse-loss fine-tuning.", ("train", "model"), per_method=True),
    Stage("evaluate", "codeblock.evaluate.stage", "pass@k on the benchmark registry, in the sandbox.",
          ("eval", "model"), per_method=True),
    Stage("report", "codeblock.report.selection", "HTML report of the selected items.",
          ("select.method", "select.seed", "model", "score.max_length")),
    Stage("compare", "codeblock.report.compare", "Method x benchmark table (MLflow or result files).",
          ("pipeline.methods", "pipeline.champion_metric", "pipeline.compare_dir")),
)}

# Stages every non-pool-only method needs after `data`, computed once and shared.
SHARED_CHAIN = ("filter", "segment", "score")
PER_METHOD = tuple(n for n, s in STAGES.items() if s.per_method)


def get(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None


def run_stage(name: str, cfg: Config, ctx: StageContext | None = None) -> StageResult:
    """Run one stage in this process (the CLI, tests, and the flow's in-process mode)."""
    return get(name).run(cfg, ctx)


def stage_hash(cfg: Config, name: str) -> str:
    """The hash of the configuration that the stage's result depends on (volatile keys excluded)."""
    return cfg.keys_hash(*get(name).params)
