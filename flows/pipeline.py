"""The CodeBlock pipeline as Prefect 3 flows.

    python -m flows.pipeline --params params.yaml [--profile smoke] [-S key=value] [--methods codeblock full]

`compare` (the default entry) runs the shared stages once (data, and filter -> segment -> score
when some method needs them), then one `pipeline` subflow per method (select -> train ->
evaluate), the selection report, and the comparison: a markdown artifact with pass@1 per method
and benchmark, a link artifact to the selection report, `pipeline.compare_dir` files, and the
@champion alias on the best method's registered model.

Rules (docs/architecture.md): a task runs one stage of the registry (codeblock/stages.py) through
the launcher (codeblock/core/launch.py): by default as its own `codeblock <stage>` process, so
memory returns to the system between stages and `pipeline.launch.<stage>` can put it under
`accelerate launch`. A task receives the config *reference* (params file, profile, overrides) and
returns paths, sha256 hashes and metrics, never models or tensors. Prefect does not cache (DVC owns caching). MLflow: one parent run per
pipeline run, tagged with the git commit, the dvc.lock stage hashes, the Prefect flow-run id and
the methods; each method gets a nested run tagged `method`, and the stage runs nest under it
through CODEBLOCK_PARENT_RUN_ID (codeblock.core.tracking.parent_run).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

# The embedded (ephemeral) Prefect server would try to send telemetry; this project runs offline.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral API server gets 20 s to start by default, which a busy 2-core machine can miss
# ("Timed out while attempting to connect to ephemeral Prefect API server").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_link_artifact, create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from codeblock.core.config import Config, load_config  # noqa: E402
from codeblock.core.io import sha256_path  # noqa: E402
from codeblock.core.launch import install_signal_handlers, launch_stage  # noqa: E402
from codeblock.stages import PER_METHOD, SHARED_CHAIN, StageContext, get, run_stage  # noqa: E402

CHAIN = SHARED_CHAIN  # what a method that is not pool-only needs after `data`
HASH_LIMIT_BYTES = 2 << 30  # outputs larger than this are recorded by size, not hashed


def config_ref(params: str = "params.yaml", profile: str | None = None,
               overrides: list[str] | None = None) -> dict[str, Any]:
    """What a task receives instead of a Config object: enough to load it again, anywhere."""
    return {"params": params, "profile": profile or None, "overrides": list(overrides or [])}


def load(ref: dict[str, Any]) -> Config:
    return load_config(ref["params"], ref["overrides"], ref["profile"])


def needs_chain(cfg: Config, methods: list[str]) -> bool:
    return any(m not in cfg.pipeline.pool_only_methods for m in methods)


def _fingerprint(path: str) -> str:
    p = Path(path)
    if not p.exists():
        return "missing"
    size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return f"size:{size}" if size > HASH_LIMIT_BYTES else sha256_path(p)


def call_stage(stage: str, ref: dict[str, Any], method: str | None = None,
               model_path: str | None = None, log=print) -> dict[str, Any]:
    """Run one stage: as its own process (`pipeline.launcher: subprocess`, the default: the same
    `codeblock <stage>` command DVC runs, under `pipeline.launch.<stage>` if set), or in this
    process (`inprocess`). Returns {stage, method, outputs, hashes, metrics}."""
    get(stage)  # an unknown stage fails here, before any process starts
    cfg = load(ref)
    if cfg.pipeline.launcher == "subprocess":
        res = launch_stage(stage, ref, method=method, model_path=model_path,
                           prefix=cfg.pipeline.launch.get(stage, ""), log=log)
        outputs, metrics = list(res["outputs"]), dict(res["metrics"])
    else:
        r = run_stage(stage, cfg, StageContext(method=method, model_path=model_path))
        outputs, metrics = list(r.outputs), dict(r.metrics)
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
    return {"stage": stage, "method": method, "outputs": outputs,
            "hashes": {p: _fingerprint(p) for p in outputs}, "metrics": metrics}


@task(name="stage", cache_policy=NO_CACHE, task_run_name="{stage}", persist_result=False)
def stage_task(stage: str, ref: dict[str, Any], method: str | None = None,
               model_path: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    out = call_stage(stage, ref, method, model_path, log=logger.info)
    logger.info("%s%s -> %s", stage, f" [{method}]" if method else "", ", ".join(out["outputs"]) or "(no outputs)")
    return out


def _run(stage: str, cfg: Config, ref: dict[str, Any], method: str | None = None,
         model_path: str | None = None) -> dict[str, Any]:
    """The stage task with this config's retries and timeout."""
    timeout = cfg.pipeline.task_timeout_s or None
    name = f"{stage}-{method}" if method else stage
    t = stage_task.with_options(retries=cfg.pipeline.task_retries, retry_delay_seconds=cfg.pipeline.retry_delay_s,
                                timeout_seconds=timeout, task_run_name=name)
    return t(stage, ref, method, model_path)


def _model_dir(train_result: dict[str, Any], cfg: Config, method: str) -> str:
    """The trained model folder: the output named `model`, else runs_dir/<method>/model."""
    for p in train_result["outputs"]:
        if Path(p).name == "model":
            return p
    return str(Path(cfg.paths.runs_dir) / method / "model")


def _lock_path(profile: str | None) -> str:
    """The dvc.lock of the pipeline this config belongs to (pipelines/<profile>/ for a profile)."""
    return f"pipelines/{profile}/dvc.lock" if profile else "dvc.lock"


def dvc_commit(profile: str | None, stages: list[str]) -> dict[str, Any]:
    """Record the outputs of stages run by the flow in the pipeline's dvc.lock (`dvc commit -f`),
    so DVC's cache knows them and `dvc repro` finds them up to date. No-op outside a DVC repo."""
    import subprocess

    dvcfile = f"pipelines/{profile}/dvc.yaml" if profile else "dvc.yaml"
    if not Path(".dvc").is_dir() or not Path(dvcfile).exists():
        return {"committed": [], "skipped": f"no DVC project or no {dvcfile}"}
    dvc = str(Path(sys.executable).parent / "dvc")
    cmd = [dvc if Path(dvc).exists() else "dvc", "commit", "-f", "-q", *[f"{dvcfile}:{s}" for s in stages]]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"committed": [], "skipped": (res.stderr or res.stdout).strip()[-2000:]}
    return {"committed": stages, "lock": _lock_path(profile)}


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")


def prepare_stages(cfg: Config, ref: dict[str, Any], methods: list[str]) -> list[dict[str, Any]]:
    """data, then filter -> segment -> score when any method needs them."""
    results = [_run("data", cfg, ref)]
    if needs_chain(cfg, methods):
        results += [_run(s, cfg, ref) for s in CHAIN]
    return results


@flow(name="codeblock-method", log_prints=True)
def pipeline(method: str = "codeblock", params: str = "params.yaml", profile: str | None = None,
             overrides: list[str] | None = None, prepare: bool = True) -> dict[str, Any]:
    """One method end to end: [data -> filter -> segment -> score ->] select -> train -> evaluate
    [-> report]. With prepare=False the shared stages are assumed done (the compare flow)."""
    from codeblock.core.tracking import parent_run

    install_signal_handlers()
    ref = config_ref(params, profile, overrides)
    cfg = load(ref)
    results: list[dict[str, Any]] = []
    with parent_run(cfg, f"method-{method}", tags={"method": method, "prefect.flow_run_id": _flow_run_id(),
                                                   "codeblock.profile": profile or "default"},
                    lock_path=_lock_path(profile)) as pr:
        if prepare:
            results += prepare_stages(cfg, ref, [method])
        sel = _run("select", cfg, ref, method)
        tr = _run("train", cfg, ref, method)
        ev = _run("evaluate", cfg, ref, method, _model_dir(tr, cfg, method))
        results += [sel, tr, ev]
        if prepare and method not in cfg.pipeline.pool_only_methods:
            results.append(_run("report", cfg, ref))
        pr.log_metrics({k: v for k, v in ev["metrics"].items() if isinstance(v, (int, float))})
        pr.set_tags({f"hash/{Path(p).name}/{r['stage']}": h[:16] for r in results for p, h in r["hashes"].items()})
    return {"method": method, "run_id": pr.run_id, "stages": results}


def _selection_report(cfg, ref: dict[str, Any], methods: list[str]) -> dict[str, Any] | None:
    """The selection report shows select.method's labels: run it on a method that ran (if any)."""
    chain_methods = [m for m in methods if m not in cfg.pipeline.pool_only_methods]
    if not chain_methods:
        return None
    extra = [] if cfg.select.method in chain_methods else [f"select.method={chain_methods[0]}"]
    return _run("report", cfg, config_ref(ref["params"], ref["profile"], [*ref["overrides"], *extra]))


def _comparison(cfg, pr) -> dict[str, Any]:
    """The comparison: from MLflow (this pipeline run's runs) when tracking, else from the files."""
    from codeblock.report.compare import run_compare

    source = "mlflow" if pr.enabled else "files"
    res = run_compare(cfg, source=source, run_id=pr.run_id, write=True)
    if not res["table"] and source == "mlflow":  # e.g. an evaluator that logs nothing
        res = run_compare(cfg, source="files", write=True)
    return res


def _statistics(cfg) -> str:
    """The paired view of this run (one seed per method): each method against
    experiment.baseline with a bootstrap interval and the problems that flip; written beside the
    comparison as statistics.md."""
    from codeblock.core.io import atomic_write_text
    from codeblock.experiment.tables import pipeline_table

    text = pipeline_table(cfg)
    atomic_write_text(Path(cfg.pipeline.compare_dir) / "statistics.md", text)
    return text


def _publish(pr, table_md: str, stats_md: str, metrics: dict[str, Any], report: dict[str, Any] | None) -> None:
    """MLflow (table + metrics on the parent run) and Prefect artifacts (table, report link)."""
    pr.log_text(table_md, "compare.md")
    pr.log_text(stats_md, "statistics.md")
    pr.log_metrics(metrics)
    create_markdown_artifact(markdown=f"# pass@1 per method and benchmark\n\n{table_md}\n\n{stats_md}",
                             key="codeblock-pass-at-1", description="pass@1 per method x benchmark")
    html = next((p for p in (report or {}).get("outputs", []) if p.endswith(".html")), None)
    if html:
        create_link_artifact(link=Path(html).resolve().as_uri(), link_text="selection report",
                             key="codeblock-selection-report")


def _record_in_dvc(cfg, ref: dict[str, Any], methods: list[str], with_report: bool, pr, logger) -> None:
    """`dvc commit` the stages this run produced, and tag the parent run with the lock's hashes."""
    from codeblock.core.tracking import dvc_lock_tags

    if not cfg.pipeline.dvc_commit or ref["overrides"]:
        return
    stages = ["data", *(CHAIN if needs_chain(cfg, methods) else ()),
              *[f"{s}@{m}" for m in methods for s in PER_METHOD],
              *(["report"] if with_report else []), "compare"]
    committed = dvc_commit(ref["profile"], stages)
    if committed["committed"]:
        pr.set_tags(dvc_lock_tags(committed["lock"]))
    else:
        logger.warning("dvc commit skipped: %s", committed["skipped"])


def _promote(cfg, best: str | None, pr) -> dict[str, Any] | None:
    """The best method's registered model gets the @champion alias."""
    from codeblock.core.tracking import set_model_alias

    if not (cfg.pipeline.promote_champion and best):
        return None
    version = set_model_alias(cfg, "champion", best)
    pr.set_tags({"champion": best, "champion_version": version or "unregistered"})
    return {"method": best, "version": version}


@flow(name="codeblock-compare", log_prints=True)
def compare(methods: list[str] | None = None, params: str = "params.yaml", profile: str | None = None,
            overrides: list[str] | None = None) -> dict[str, Any]:
    """Every method of `methods` (default: pipeline.methods) on shared data, then the comparison."""
    from codeblock.core.tracking import parent_run
    from codeblock.report.compare import markdown

    install_signal_handlers()
    ref = config_ref(params, profile, overrides)
    cfg = load(ref)
    methods = list(methods or cfg.pipeline.methods)
    logger = get_run_logger()
    with parent_run(cfg, "pipeline", tags={"methods": ",".join(methods), "prefect.flow_run_id": _flow_run_id(),
                                           "codeblock.profile": profile or "default"},
                    lock_path=_lock_path(profile)) as pr:
        pr.log_params({"params": params, "profile": profile or "", "overrides": " ".join(ref["overrides"])})
        prepare_stages(cfg, ref, methods)
        per_method = {m: pipeline(method=m, params=params, profile=profile, overrides=ref["overrides"],
                                  prepare=False) for m in methods}
        report = _selection_report(cfg, ref, methods)
        res = _comparison(cfg, pr)
        table_md = markdown(res["table"], note=res["note"])
        stats_md = _statistics(cfg)
        _publish(pr, table_md, stats_md, res["metrics"], report)
        _record_in_dvc(cfg, ref, methods, report is not None, pr, logger)
        champion = _promote(cfg, res["best"], pr)
        logger.info("comparison:\n%s", table_md)
    return {"run_id": pr.run_id, "methods": {m: r["run_id"] for m, r in per_method.items()},
            "table": res["table"], "outputs": res["outputs"], "champion": champion, "note": res["note"], "statistics": stats_md}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="overlay profiles/<name>.yaml (e.g. smoke)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--methods", nargs="*", default=None, help="default: pipeline.methods")
    ap.add_argument("--method", default=None, help="run only this method (the `pipeline` flow)")
    args = ap.parse_args(argv)
    load_config(args.params, args.overrides, args.profile)  # fail fast on a bad config
    if args.method:
        pipeline(method=args.method, params=args.params, profile=args.profile, overrides=args.overrides)
        return 0
    from codeblock.report.compare import markdown

    res = compare(methods=args.methods, params=args.params, profile=args.profile, overrides=args.overrides)
    print(markdown(res["table"], note=res.get("note", "")), end="")
    print("\n" + res.get("statistics", ""), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
