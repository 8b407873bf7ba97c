"""The one module that talks to MLflow.

Defaults: a SQLite store (`tracking.tracking_uri`, sqlite:///mlruns.db) with artifacts under
`tracking.artifact_dir` inside the repo; `MLFLOW_TRACKING_URI` overrides the store. Stages open a
run with `stage_run(cfg, "train")`; when a parent run is active (in this process, or handed down
through the `CODEBLOCK_PARENT_RUN_ID` environment variable by the orchestrator) the stage run is
nested under it. With `tracking.enabled: false` every call is a no-op, so stages never branch on it.

MLflow refuses `@` in metric names: `metric_name` maps `pass@1` to `pass_at_1`.
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
PARAM_VALUE_LIMIT = 6000  # characters of a param value MLflow stores (its limit, with margin)


def metric_name(name: str) -> str:
    name = name.replace("@", "_at_")
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", name)


# mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI; remember what we exported so that a
# later config in the same process is not overridden by our own earlier choice.
_EXPORTED: set[str] = set()


def tracking_uri(cfg) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env not in _EXPORTED:
        return env  # the user's override
    return cfg.tracking.tracking_uri


def setup(cfg):
    """Point MLflow at the configured store and experiment; return the mlflow module."""
    import mlflow

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):  # a relative store in a folder (e.g. a profile's): create it
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if uri == cfg.tracking.tracking_uri:  # ours, not the user's: later configs may replace it
        _EXPORTED.add(uri)
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
            clean = {k: (str(v)[:PARAM_VALUE_LIMIT]) for k, v in params.items()}
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


# ---------------------------------------------------------------------------------------------
# Orchestration helpers (flows/): one parent run per pipeline run, dvc.lock hashes, aliases.


def dvc_lock_tags(lock_path: str | os.PathLike = "dvc.lock") -> dict[str, str]:
    """`dvc.lock/<stage>` -> md5 of that stage's lock entry (cmd, deps, params, outs hashes), plus
    `dvc.lock` -> md5 of the whole file; {} when there is no dvc.lock yet."""
    import hashlib
    import json

    import yaml

    p = Path(lock_path)
    if not p.exists():
        return {}
    raw = p.read_bytes()
    tags = {"dvc.lock": hashlib.md5(raw).hexdigest()}
    stages = (yaml.safe_load(raw) or {}).get("stages") or {}
    for name, entry in stages.items():
        digest = hashlib.md5(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()
        tags[f"dvc.lock/{metric_name(name)}"] = digest
    return tags


class ParentRun:
    """A run created through the client (so it works from any thread); `env` hands its id to the
    stage runs (threads of this process and child processes) via CODEBLOCK_PARENT_RUN_ID."""

    def __init__(self, client=None, run_id: str | None = None):
        self.client, self.run_id = client, run_id

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, str(v))

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.enabled:
            for k, v in metrics.items():
                if v is not None:
                    self.client.log_metric(self.run_id, metric_name(k), float(v))

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            for k, v in params.items():
                self.client.log_param(self.run_id, k, str(v)[:PARAM_VALUE_LIMIT])

    def log_text(self, text: str, name: str) -> None:
        if self.enabled:
            self.client.log_text(self.run_id, text, name)


@contextlib.contextmanager
def parent_run(cfg, name: str, tags: dict[str, Any] | None = None, parent_id: str | None = None,
               lock_path: str | os.PathLike = "dvc.lock") -> Iterator[ParentRun]:
    """A pipeline-level run: stages started while it is open nest under it. Nests under
    `parent_id` (or the inherited CODEBLOCK_PARENT_RUN_ID) when given; FAILED on an exception.
    Tagged with the git commit and the stage hashes of `lock_path` (when it exists)."""
    if not cfg.tracking.enabled:
        yield ParentRun()
        return
    mlflow = setup(cfg)
    client = mlflow.MlflowClient()
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    parent_id = parent_id or os.environ.get(PARENT_ENV)
    all_tags = {"git_commit": git_commit(), **dvc_lock_tags(lock_path), **(tags or {})}
    if parent_id:
        all_tags["mlflow.parentRunId"] = parent_id
    run = client.create_run(exp.experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
    pr = ParentRun(client, run.info.run_id)
    previous = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = pr.run_id
    status = "FAILED"
    try:
        yield pr
        status = "FINISHED"
    finally:
        if previous is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous
        client.set_terminated(pr.run_id, status)


def set_model_alias(cfg, alias: str, method: str) -> str | None:
    """Point `alias` at the newest registered version trained for `method`: the model
    `<train.register_name>-<method>` (one registered model per method), else versions of
    `train.register_name` tagged `method` (or whose run is). Returns "<name>/<version>", or None
    when nothing of that method is registered."""
    if not cfg.tracking.enabled:
        return None
    mlflow = setup(cfg)
    client = mlflow.MlflowClient()
    base = cfg.train.register_name
    for name, need_tag in ((f"{base}-{method}", False), (base, True)):
        try:
            versions = client.search_model_versions(f"name='{name}'")
        except Exception:
            continue
        best = None
        for v in versions:
            if need_tag:
                m = (v.tags or {}).get("method")
                if m is None and v.run_id:
                    try:
                        m = client.get_run(v.run_id).data.tags.get("method")
                    except Exception:
                        m = None
                if m != method:
                    continue
            if best is None or int(v.version) > int(best.version):
                best = v
        if best is not None:
            client.set_registered_model_alias(name, alias, best.version)
            return f"{name}/{best.version}"
    return None


def log_model_dir(tracker: Tracker, model_dir: str | os.PathLike, register_name: str | None = None,
                  aliases: tuple[str, ...] = ("candidate",), artifact_path: str = "model") -> dict[str, Any]:
    """Log a saved model folder (adapter or full model, safetensors) from its path as an MLflow
    pyfunc model (codeblock/mlflow_pyfunc.py, "model from code"), register it under
    `register_name` and point `aliases` at the new version. The folder is copied file by file
    into the artifact store; no model is loaded in memory. No-op when tracking is disabled."""
    if not tracker.enabled:
        return {}
    mlflow = tracker.mlflow
    code = Path(__file__).with_name("mlflow_pyfunc.py")
    info = mlflow.pyfunc.log_model(
        name=artifact_path,
        python_model=str(code),
        artifacts={"model_dir": str(Path(model_dir).resolve())},
        pip_requirements=["torch", "transformers", "peft", "safetensors"],
        registered_model_name=register_name,
    )
    out: dict[str, Any] = {"model_uri": info.model_uri}
    if register_name:
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient()
        for alias in aliases:
            client.set_registered_model_alias(register_name, alias, version)
        out.update({"name": register_name, "version": version, "aliases": list(aliases)})
    return out
