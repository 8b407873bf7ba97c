"""The one module that talks to MLflow.

Defaults: a SQLite store (`tracking.tracking_uri`, sqlite:///mlruns.db) with artifacts under
`tracking.artifact_dir` inside the repo; `MLFLOW_TRACKING_URI` overrides the store. Stages open a
run with `stage_run(cfg, "train")`; when a parent run is active (in this process, or handed down
through the `CODEBLOCK_PARENT_RUN_ID` environment variable by the orchestrator) the stage run is
nested under it. With `tracking.enabled: false` every call is a no-op, so stages never branch on it.

MLflow refuses `@` in metric names (STACK.md): `metric_name` maps `pass@1` to `pass_at_1`.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARENT_ENV = "CODEBLOCK_PARENT_RUN_ID"


def metric_name(name: str) -> str:
    name = name.replace("@", "_at_")
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", name)


def tracking_uri(cfg) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.tracking_uri


def setup(cfg):
    """Point MLflow at the configured store and experiment; return the mlflow module."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        uri = tracking_uri(cfg)
        location = None
        if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
            location = Path(cfg.tracking.artifact_dir).resolve().as_uri()
        mlflow.create_experiment(cfg.tracking.experiment, artifact_location=location)
    mlflow.set_experiment(cfg.tracking.experiment)
    return mlflow


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except Exception:
        return "unknown"


class Tracker:
    """Thin wrapper over an active MLflow run; every method is a no-op when disabled."""

    def __init__(self, mlflow=None, run=None):
        self.mlflow, self.run = mlflow, run

    @property
    def enabled(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run else None

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            clean = {k: (str(v)[:6000]) for k, v in params.items()}
            self.mlflow.log_params(clean)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.enabled:
            clean = {metric_name(k): float(v) for k, v in metrics.items() if v is not None}
            self.mlflow.log_metrics(clean, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).exists():
            if Path(path).is_dir():
                self.mlflow.log_artifacts(str(path), artifact_path)
            else:
                self.mlflow.log_artifact(str(path), artifact_path)

    def log_dict(self, obj: dict, name: str) -> None:
        if self.enabled:
            self.mlflow.log_dict(obj, name)


@contextlib.contextmanager
def stage_run(cfg, name: str, params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
              log_system_metrics: bool | None = None) -> Iterator[Tracker]:
    """Open an MLflow run for one stage (nested under the active or inherited parent)."""
    if not cfg.tracking.enabled:
        yield Tracker()
        return
    mlflow = setup(cfg)
    parent = mlflow.active_run()
    kwargs: dict[str, Any] = {"run_name": name}
    if parent is not None:
        kwargs["nested"] = True
    elif os.environ.get(PARENT_ENV):
        kwargs["parent_run_id"] = os.environ[PARENT_ENV]
    if log_system_metrics is None:
        log_system_metrics = cfg.tracking.log_system_metrics
    with mlflow.start_run(log_system_metrics=log_system_metrics, **kwargs) as run:
        tr = Tracker(mlflow, run)
        tr.set_tags({"codeblock.stage": name, "git_commit": git_commit(), **(tags or {})})
        if os.environ.get("PREFECT__FLOW_RUN_ID"):
            tr.set_tags({"prefect.flow_run_id": os.environ["PREFECT__FLOW_RUN_ID"]})
        if params:
            tr.log_params(params)
        yield tr
