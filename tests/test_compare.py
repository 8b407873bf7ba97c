"""`codeblock compare`, the parent-run helpers and the @champion alias, on a real MLflow store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from codeblock.core.config import load_config
from codeblock.core.tracking import PARENT_ENV, dvc_lock_tags, parent_run, set_model_alias, stage_run
from codeblock.report.compare import (
    best_method,
    from_mlflow,
    histogram,
    markdown,
    pass_metrics,
    problem_counts,
    run_compare,
    wilson_interval,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    return load_config(ROOT / "params.yaml", [
        f"tracking.tracking_uri=sqlite:///{tmp_path}/store/mlruns.db",
        f"tracking.artifact_dir={tmp_path}/art",
        "tracking.log_system_metrics=false",
        f"paths.reports_dir={tmp_path}/reports",
        f"paths.labels_dir={tmp_path}/labels",
        f"paths.runs_dir={tmp_path}/runs",
        f"pipeline.compare_dir={tmp_path}/metrics",
    ])


def test_pass_metrics_reads_every_naming():
    flat = {"pass_at_1/humaneval": 0.5, "mbpp/pass@1": 0.25, "dataframebench.pass_at_10": 0.75,
            "pass_at_1/avg": 0.9, "loss": 1.0, "eval/humaneval/n_problems": 164.0}
    assert pass_metrics(flat) == {("humaneval", 1): 0.5, ("mbpp", 1): 0.25, ("dataframebench", 10): 0.75}
    # A bare pass_at_1 needs the benchmark from the run (its `benchmark` tag).
    assert pass_metrics({"pass_at_1": 0.3}) == {}
    assert pass_metrics({"pass_at_1": 0.3}, benchmark="mbpp") == {("mbpp", 1): 0.3}


@pytest.mark.parametrize("k,n", [(0, 20), (1, 20), (7, 20), (20, 20), (82, 164), (3, 7)])
def test_wilson_interval_matches_scipy(k, n):
    from scipy.stats import binomtest

    want = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k / n, n)
    assert lo == pytest.approx(want.low, abs=1e-6) and hi == pytest.approx(want.high, abs=1e-6)


def test_wilson_interval_hand_worked():
    # 1 pass in 20: p = 0.05, z^2 = 3.8415, centre = (0.05 + 3.8415/40) / (1 + 3.8415/20) = 0.12251,
    # half = 1.96 / 1.19207 * sqrt(0.05 * 0.95 / 20 + 3.8415 / 1600) = 0.11363 -> [0.0089, 0.2361]
    lo, hi = wilson_interval(0.05, 20)
    assert (round(lo, 4), round(hi, 4)) == (0.0089, 0.2361)


def test_table_shows_problem_counts_intervals_and_the_note():
    table = {"codeblock": {"pass_at_1/humaneval": 0.05, "pass_at_1/avg": 0.05, "n_problems/humaneval": 20.0}}
    md = markdown(table, note="proves the pipeline")
    assert "| method | humaneval (n=20) | avg |" in md
    assert "| codeblock | 5.0 [0.9, 23.6] | 5.0 |" in md
    assert "Wilson" in md and md.rstrip().endswith("proves the pipeline")
    assert problem_counts({"benchmarks/mbpp/n_problems": 20.0, "benchmarks/mbpp/n_problems_total": 500.0,
                           "n_problems/humaneval": 164.0}) == {"mbpp": 20, "humaneval": 164}
    assert problem_counts({"n_problems": 7.0}, benchmark="mbpp") == {"mbpp": 7}


def _write_eval(cfg, method: str, obj: dict) -> None:
    p = Path(cfg.paths.reports_dir) / "eval" / method / "metrics.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))


def test_files_source_writes_summary_plots_and_table(cfg):
    _write_eval(cfg, "codeblock", {"humaneval": {"pass@1": 0.5, "n": 10}, "mbpp": {"pass@1": 0.3}})
    _write_eval(cfg, "full", {"pass_at_1/humaneval": 0.25, "pass_at_1/mbpp": 0.35})
    results = Path(cfg.paths.reports_dir) / "eval" / "codeblock" / "results.json"
    results.write_text(json.dumps({"benchmarks": {"humaneval": {"n_problems": 10, "n_problems_total": 164}}}))
    labels = Path(cfg.paths.labels_dir) / "codeblock"
    labels.mkdir(parents=True)
    (labels / "stats.json").write_text(json.dumps({"supervised_ratio": 0.019, "zero_supervision_samples": 2}))
    (labels / "ratios.csv").write_text("id,supervised_ratio\na,0.0\nb,0.01\nc,0.02\nd,0.2\n")
    runs = Path(cfg.paths.runs_dir) / "full"
    runs.mkdir(parents=True)
    (runs / "train_metrics.json").write_text(json.dumps({"train_loss": 1.5}))

    res = run_compare(cfg, source="files", write=True)
    table = res["table"]
    assert table["codeblock"]["pass_at_1/avg"] == pytest.approx(0.4)
    assert table["full"]["pass_at_1/avg"] == pytest.approx(0.3)
    assert res["best"] == "codeblock"
    summary = json.loads((Path(cfg.pipeline.compare_dir) / "summary.json").read_text())
    assert summary["codeblock"]["supervision/supervised_ratio"] == pytest.approx(0.019)
    assert summary["full"]["train/train_loss"] == 1.5
    rows = list(csv.DictReader((Path(cfg.pipeline.compare_dir) / "pass_at_1.csv").open()))
    assert {(r["method"], r["benchmark"]) for r in rows} == {
        ("codeblock", "humaneval"), ("codeblock", "mbpp"), ("codeblock", "avg"),
        ("full", "humaneval"), ("full", "mbpp"), ("full", "avg")}
    hist = [r for r in csv.DictReader((Path(cfg.pipeline.compare_dir) / "supervision_hist.csv").open())
            if r["method"] == "codeblock"]
    assert sum(int(r["samples"]) for r in hist) == 4
    md = (Path(cfg.pipeline.compare_dir) / "compare.md").read_text()
    assert "| method | humaneval (n=10) | mbpp | avg |" in md
    lo, hi = wilson_interval(0.5, 10)
    assert f"| codeblock | 50.0 [{100 * lo:.1f}, {100 * hi:.1f}] | 30.0 | 40.0 |" in md
    assert "| full | 25.0 | 35.0 | 30.0 |" in md


def test_histogram_bins_cover_every_value():
    bins = histogram([0.0, 0.019, 0.02, 0.5, 0.5], bins=5)
    assert sum(n for _, _, n in bins) == 5
    assert bins[-1][1] == pytest.approx(0.5) and bins[-1][2] == 2
    assert markdown({}) == "_no evaluation results yet_\n"
    tie = {"codeblock": {"pass_at_1/avg": 0.0}, "full": {"pass_at_1/avg": 0.0}}
    assert best_method(tie, "pass_at_1/avg") is None  # no champion on a tie
    assert best_method({**tie, "rho1": {"pass_at_1/avg": 0.1}}, "pass_at_1/avg") == "rho1"


def _pipeline_run(cfg, values: dict[str, float], per_benchmark: bool = False) -> str:
    """Runs shaped like the flow's: parent -> method-<m> -> evaluate (-> per-benchmark runs)."""
    with parent_run(cfg, "pipeline") as top:
        for method, v in values.items():
            with parent_run(cfg, f"method-{method}", tags={"method": method}):
                # The evaluator's shape: evaluate-<method> (param method) -> eval/<benchmark>.
                with stage_run(cfg, f"evaluate-{method}", params={"method": method}) as ev:
                    if per_benchmark:
                        for bench, x in (("humaneval", v), ("mbpp", v / 2)):
                            with stage_run(cfg, f"eval/{bench}", tags={"benchmark": bench}) as b:
                                b.log_metrics({"pass@1": x})
                    else:
                        ev.log_metrics({"pass@1/humaneval": v, "pass@1/mbpp": v / 2})
    return top.run_id


def test_mlflow_source_scopes_to_one_pipeline_run(cfg):
    first = _pipeline_run(cfg, {"codeblock": 0.6, "full": 0.4})
    second = _pipeline_run(cfg, {"codeblock": 0.2, "full": 0.8}, per_benchmark=True)
    newest = from_mlflow(cfg)
    assert newest["full"]["pass_at_1/humaneval"] == pytest.approx(0.8)
    assert newest["codeblock"]["pass_at_1/mbpp"] == pytest.approx(0.1)
    scoped = from_mlflow(cfg, run_id=first)
    assert scoped["codeblock"]["pass_at_1/avg"] == pytest.approx(0.45)
    assert best_method(scoped, "pass_at_1/avg") == "codeblock"
    assert best_method(from_mlflow(cfg, run_id=second), "pass_at_1/avg") == "full"


def test_parent_run_nests_stage_runs_and_tags_dvc_lock(cfg, tmp_path):
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  data:\n    cmd: codeblock data\n"
                                       "  select@codeblock:\n    cmd: codeblock select --method codeblock\n")
    tags = dvc_lock_tags(tmp_path / "dvc.lock")
    assert set(tags) == {"dvc.lock", "dvc.lock/data", "dvc.lock/select_at_codeblock"}
    with pytest.raises(RuntimeError):
        with parent_run(cfg, "pipeline", tags={"method": "codeblock"}) as pr:
            with stage_run(cfg, "data") as st:
                child = st.run_id
            raise RuntimeError("a stage failed")
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(pr.run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["method"] == "codeblock"
    assert parent.data.tags["dvc.lock/data"] == tags["dvc.lock/data"]
    assert len(parent.data.tags["git_commit"]) in (40, 7) or parent.data.tags["git_commit"] == "unknown"
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == pr.run_id
    import os

    assert PARENT_ENV not in os.environ  # restored after the run


def test_champion_alias_goes_to_the_methods_newest_version(cfg):
    import mlflow

    from codeblock.core.tracking import setup

    setup(cfg)
    client = mlflow.MlflowClient()
    name = f"{cfg.train.register_name}-codeblock"
    client.create_registered_model(name)
    with stage_run(cfg, "train", tags={"method": "codeblock"}) as tr:
        rid = tr.run_id
    for _ in range(2):
        client.create_model_version(name, source=f"runs:/{rid}/model", run_id=rid)
    assert set_model_alias(cfg, "champion", "codeblock") == f"{name}/2"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert set_model_alias(cfg, "champion", "nonexistent") is None


def test_compare_cli_prints_the_table(cfg, capsys):
    from codeblock.cli import main

    _pipeline_run(cfg, {"codeblock": 0.5, "full": 0.25})
    overrides = [f"tracking.tracking_uri={cfg.tracking.tracking_uri}", f"tracking.artifact_dir={cfg.tracking.artifact_dir}"]
    rc = main(["compare", "--params", str(ROOT / "params.yaml"), *sum((["-S", o] for o in overrides), [])])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| method | humaneval | mbpp | avg |" in out
    assert "| codeblock | 50.0 | 25.0 | 37.5 |" in out
    assert "best by pass_at_1/avg: codeblock" in out
