"""The experiment grid: cells (method x seed x budget), their folders, configs and done-markers,
and running one cell (select -> train -> evaluate).

A cell is the configuration of the experiment plus, last, its own overrides:

    select.method=<method>  select.seed=<seed>  train.seed=<seed>  select.budget=<budget>
    paths.labels_dir / paths.runs_dir / paths.reports_dir = <experiment.dir>/<name>/cells/<key>/...

so no two cells share an output, and the shared stages (data, filter, segment, score) read and
write the usual paths. `full` and `full_filtered` supervise every response token whatever the
budget (see `codeblock.select.methods.write_selection`): they get one cell per seed, and that
cell serves every budget of the comparison. A *variant* (`experiment.variants`, e.g. an ablation
`codeblock_no_rerank: [codeblock, select.alpha=0, select.beta=0]`) is a method of the grid that
runs its base method with extra overrides; it may not change a key a shared stage reads.

A cell that finished writes `done.json` beside its outputs, holding the hash of every
result-changing key the cell's stages read; a cell whose marker holds the current hash (and whose
results.json exists) is never run again. A cell that crashed has no marker and reruns alone (the
train stage resumes from its last checkpoint).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeblock.core.config import ConfigError, load_config, parse_override
from codeblock.core.io import write_json
from codeblock.core.params import Config
from codeblock.select.variants import SEP, parse_method
from codeblock.stages import StageContext, get, run_stage

BUDGET_FREE = frozenset({"full", "full_filtered"})  # methods whose labels ignore select.budget
CELL_STAGES = ("select", "train", "evaluate")
MARKER = "done.json"


@dataclass(frozen=True)
class Cell:
    method: str  # the grid's name: a method, or a variant (experiment.variants)
    seed: int
    budget: float | None  # None: a budget-free method
    base: str = ""  # the select method it runs (a variant's base; else the method itself)

    @property
    def runs(self) -> str:
        return self.base or self.method

    @property
    def key(self) -> str:
        b = "" if self.budget is None else f"-b{self.budget:g}"
        return f"{self.method}{b}-s{self.seed}"

    @property
    def row(self) -> str:
        """The table row it belongs to: the method at its budget (seeds are the row's samples)."""
        return self.method if self.budget is None else f"{self.method}@{self.budget:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "method": self.method, "base": self.runs, "seed": self.seed, "budget": self.budget}


def known_methods() -> list[str]:
    """Base method names; `<base>+<select key>=<value>` variants of them are accepted too."""
    from codeblock.select import baselines

    return ["codeblock", *baselines.METHODS]


def shared_keys(cfg: Config) -> set[str]:
    """`group.key` of every result-changing key the shared stages read."""
    return set(cfg.result_values(*[k for n in ("data", "filter", "segment", "score") for k in get(n).params]))


def variant(cfg: Config, name: str) -> tuple[str, list[str]]:
    """(base method, overrides) of experiment.variants[name]; ConfigError naming what is wrong."""
    spec = cfg.experiment.variants[name]
    where = f"experiment.variants.{name}"
    if not spec or "=" in spec[0]:
        raise ConfigError(f"{where}: expected [base method, key=value, ...], got {spec}")
    base, overrides = spec[0], spec[1:]
    if base not in known_methods():
        raise ConfigError(f"{where}: unknown base method {base!r}; methods: {', '.join(known_methods())}")
    shared = shared_keys(cfg)
    for i, o in enumerate(overrides, 1):
        key, _ = parse_override(o)
        if key in shared or key.split(".")[0] in ("paths", "experiment") or key in ("select.method", "select.seed",
                                                                                    "train.seed", "select.budget"):
            raise ConfigError(f"{where}[{i}]: {key} is set by the grid or read by a shared stage (computed "
                              f"once for every cell); vary it in a separate experiment")
    return base, overrides


def cells(cfg: Config) -> list[Cell]:
    """Every cell of the grid, budget-free methods once per seed. Fails on a bad grid before any work."""
    e = cfg.experiment
    for name, values in (("methods", e.methods), ("seeds", e.seeds), ("budgets", e.budgets)):
        if not values:
            raise ConfigError(f"experiment.{name}: empty")
        if len(set(values)) != len(values):
            raise ConfigError(f"experiment.{name}: duplicate values in {values}")
    known = known_methods()
    bases = {}
    for m in e.methods:
        if m in e.variants:
            if m in known:
                raise ConfigError(f"experiment.variants.{m}: the name of an existing method")
            bases[m] = variant(cfg, m)[0]
        elif m in known:
            bases[m] = m
        elif SEP in m and parse_method(m)[0] in known:  # `codeblock+rerank=none`: select resolves it
            bases[m] = m
        else:
            raise ConfigError(f"experiment.methods: unknown method {m!r}; methods: {', '.join(known)}"
                              f"{'; variants: ' + ', '.join(e.variants) if e.variants else ''}")
    if e.baseline not in e.methods:
        raise ConfigError(f"experiment.baseline {e.baseline!r} is not in experiment.methods {e.methods}")
    for b in e.budgets:
        if not 0 < b <= 1:
            raise ConfigError(f"experiment.budgets: {b} is not a share in (0, 1]")
    out = []
    for m in e.methods:
        budgets = [None] if parse_method(bases[m])[0] in BUDGET_FREE else list(e.budgets)
        out += [Cell(m, int(s), b, bases[m]) for b in budgets for s in e.seeds]
    return out


def find_cell(cfg: Config, key: str) -> Cell:
    grid = cells(cfg)
    for c in grid:
        if c.key == key:
            return c
    raise KeyError(f"no cell {key!r} in experiment {cfg.experiment.name!r}; cells: {', '.join(c.key for c in grid)}")


def experiment_dir(cfg: Config) -> Path:
    return Path(cfg.experiment.dir) / cfg.experiment.name


def cell_dir(cfg: Config, cell: Cell) -> Path:
    return experiment_dir(cfg) / "cells" / cell.key


def mlflow_experiment(cfg: Config) -> str:
    return cfg.experiment.mlflow_experiment or f"{cfg.tracking.experiment}-grid"


def grid_ref(ref: dict[str, Any]) -> dict[str, Any]:
    """The experiment's config reference with MLflow pointed at the grid's experiment (the parent
    run, the shared stages and every cell log there)."""
    cfg = load_config(ref["params"], ref["overrides"], ref["profile"])
    return {**ref, "overrides": [*ref["overrides"], f"tracking.experiment={mlflow_experiment(cfg)}"]}


def cell_overrides(cfg: Config, cell: Cell) -> list[str]:
    d = cell_dir(cfg, cell).as_posix()
    out = [f"paths.labels_dir={d}/labels", f"paths.runs_dir={d}/runs", f"paths.reports_dir={d}/reports",
           *(variant(cfg, cell.method)[1] if cell.method in cfg.experiment.variants else []),
           f"select.method={cell.runs}", f"select.seed={cell.seed}", f"train.seed={cell.seed}",
           f"train.log_model={'true' if cfg.experiment.log_models else 'false'}"]
    if cell.budget is not None:
        out.append(f"select.budget={cell.budget!r}")
    return out


def cell_config(ref: dict[str, Any], cell: Cell, base: Config | None = None) -> Config:
    """The cell's configuration: the experiment's (params, profile, -S) plus the cell's overrides."""
    base = base or load_config(ref["params"], ref["overrides"], ref["profile"])
    return load_config(ref["params"], [*ref["overrides"], *cell_overrides(base, cell)], ref["profile"])


def cell_hash(cfg: Config) -> str:
    """Hash of what a cell's result depends on: the params of the shared stages and its own."""
    keys = [k for name in ("data", "filter", "segment", "score", *CELL_STAGES) for k in get(name).params]
    return cfg.keys_hash(*dict.fromkeys(keys))


def results_path(cfg: Config, cell: Cell) -> Path:
    """The cell's evaluate output (cfg is the cell's config)."""
    return Path(cfg.paths.reports_dir) / "eval" / cell.runs / "results.json"


def read_marker(cfg: Config, cell: Cell) -> dict[str, Any] | None:
    p = cell_dir(cfg, cell) / MARKER
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged marker: the cell reruns


def is_done(cell_cfg: Config, cell: Cell) -> bool:
    m = read_marker(cell_cfg, cell)
    return bool(m) and m.get("config_hash") == cell_hash(cell_cfg) and results_path(cell_cfg, cell).exists()


def run_cell(ref: dict[str, Any], key: str, progress: bool = True) -> dict[str, Any]:
    """select -> train -> evaluate for one cell, in this process, as one MLflow run (nested under
    the experiment run handed down in CODEBLOCK_PARENT_RUN_ID) tagged method, seed and budget.
    Returns the marker (also when the cell was already done)."""
    from codeblock.core.tracking import parent_run

    base = load_config(ref["params"], ref["overrides"], ref["profile"])
    cell = find_cell(base, key)
    cfg = cell_config(ref, cell, base)
    if is_done(cfg, cell):
        return {**read_marker(cfg, cell), "skipped": True}
    t0 = time.time()
    tags = {"codeblock.experiment": cfg.experiment.name, "codeblock.cell": cell.key, "method": cell.method,
            "codeblock.base_method": cell.runs,
            "seed": cell.seed, "budget": "none" if cell.budget is None else cell.budget}
    with parent_run(cfg, f"cell {cell.key}", tags=tags) as pr:
        pr.log_params({"method": cell.method, "seed": cell.seed, "budget": cell.budget,
                       "config_hash": cell_hash(cfg)})
        metrics: dict[str, Any] = {}
        for stage in CELL_STAGES:
            res = run_stage(stage, cfg, StageContext(method=cell.runs, progress=progress))
            if res.exit_code:
                raise RuntimeError(f"cell {cell.key}: stage {stage} failed (exit code {res.exit_code})")
            metrics.update({f"{stage}/{k}": v for k, v in res.metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        pr.log_metrics(metrics)
        marker = {"cell": cell.to_dict(), "config_hash": cell_hash(cfg), "mlflow_run_id": pr.run_id,
                  "results": str(results_path(cfg, cell)), "seconds": round(time.time() - t0, 1),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metrics": metrics}
    write_json(cell_dir(cfg, cell) / MARKER, marker)  # only after every stage and the run closed cleanly
    return {**marker, "skipped": False}
