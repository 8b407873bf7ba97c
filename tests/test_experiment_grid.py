"""The experiment grid: cells, per-cell paths, resume after a crash, the table and plots.

The fast tests replace the per-cell stages with a recorder that writes the files the real
stages write (labels ratios.csv, loss.csv, an evaluate results.json with a known pass pattern),
so the grid logic (what runs, what is reused, what the statistics say) is checked in a second;
the slow test runs the real smoke grid on the tiny model, interrupted and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeblock.core.config import ConfigError, load_config
from codeblock.experiment import grid as G
from codeblock.experiment import runner as R
from codeblock.experiment import tables as T
from codeblock.stages import StageResult

ROOT = Path(__file__).resolve().parents[1]
N_PROBLEMS = 4


def _ref(tmp_path: Path, *extra: str) -> dict:
    return R.config_ref(str(ROOT / "params.yaml"), None, [
        f"experiment.dir={tmp_path}/exp", f"pipeline.compare_dir={tmp_path}/results", "experiment.name=t",
        "experiment.methods=[codeblock, full]", "experiment.seeds=[0, 1]", "experiment.budgets=[0.02, 0.1]",
        "experiment.bootstrap_samples=500", "tracking.enabled=false", *extra])


def _solved(method: str, budget: float, seed: int) -> int:
    """full solves problems 0-1; codeblock at 0.1 solves 0-2 (one more); at 0.02 it solves 0-1 on
    seed 0 and 0-2 on seed 1."""
    if method == "full":
        return 2
    return 3 if budget == 0.1 or seed == 1 else 2


class FakeStages:
    """Writes what select/train/evaluate write; records every call; can crash one cell once."""

    def __init__(self, crash: tuple[str, int] | None = None):
        self.calls: list[tuple[str, str, int]] = []
        self.crash = crash

    def __call__(self, name, cfg, ctx):
        m, seed = ctx.method, cfg.train.seed
        assert cfg.select.seed == seed and cfg.select.method == m
        self.calls.append((name, m, seed))
        if name == "select":
            d = Path(cfg.paths.labels_dir) / m
            d.mkdir(parents=True, exist_ok=True)
            ratio = 1.0 if m == "full" else cfg.select.budget
            (d / "ratios.csv").write_text("id,supervised_ratio\n" + "".join(f"s{i},{ratio}\n" for i in range(5)))
        elif name == "train":
            if self.crash == (m, seed):
                self.crash = None
                raise RuntimeError("simulated crash")
            d = Path(cfg.paths.runs_dir) / m
            d.mkdir(parents=True, exist_ok=True)
            (d / "loss.csv").write_text("step,loss\n1,2.0\n2,1.5\n")
        else:
            k = _solved(m, cfg.select.budget, seed)
            tasks = [{"task_id": f"HE/{i}", "n": 1, "c": int(i < k)} for i in range(N_PROBLEMS)]
            res = {"benchmarks": {"humaneval": {"status": "ok", "tasks": tasks},
                                 "mbpp": {"status": "unavailable", "reason": "test"}}}
            d = Path(cfg.paths.reports_dir) / "eval" / m
            d.mkdir(parents=True, exist_ok=True)
            (d / "results.json").write_text(json.dumps(res))
        return StageResult(name, [], {"pass_at_1/avg": 0.5}, method=m)


def _shared(calls):
    def run(ref, name):
        calls.append(name)
        p = Path(load_config(ref["params"], ref["overrides"]).experiment.dir) / f"{name}.out"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(name)
        return [str(p)]
    return run


def test_cells_and_overrides(tmp_path):
    ref = _ref(tmp_path)
    cfg = load_config(ref["params"], ref["overrides"])
    keys = [c.key for c in G.cells(cfg)]
    # full ignores the budget: one cell per seed; codeblock: one per seed and budget
    assert keys == ["codeblock-b0.02-s0", "codeblock-b0.02-s1", "codeblock-b0.1-s0", "codeblock-b0.1-s1",
                    "full-s0", "full-s1"]
    cell = G.find_cell(cfg, "codeblock-b0.1-s1")
    cc = G.cell_config(ref, cell, cfg)
    assert (cc.select.method, cc.select.seed, cc.train.seed, cc.select.budget) == ("codeblock", 1, 1, 0.1)
    assert cc.paths.runs_dir == f"{tmp_path}/exp/t/cells/codeblock-b0.1-s1/runs"
    others = {G.cell_config(ref, c, cfg).paths.labels_dir for c in G.cells(cfg)}
    assert len(others) == len(keys)  # no two cells share an output folder
    assert G.cell_hash(cc) != G.cell_hash(G.cell_config(ref, G.find_cell(cfg, "codeblock-b0.1-s0"), cfg))


def test_select_variant_names_are_grid_methods(tmp_path):
    """`codeblock+rerank=none` (codeblock/select/variants.py) is a method like any other."""
    ref = _ref(tmp_path, "experiment.methods=[codeblock+rerank=none, full]", "experiment.seeds=[0]")
    cfg = load_config(ref["params"], ref["overrides"])
    keys = [c.key for c in G.cells(cfg)]
    assert keys[-1] == "full-s0" and len(keys) == 3
    cc = G.cell_config(ref, G.cells(cfg)[0], cfg)
    assert cc.select.method == "codeblock+rerank=none"


@pytest.mark.parametrize("extra, msg", [
    (["experiment.baseline=random_items"], "baseline"),
    (["experiment.methods=[codeblock, nosuch]"], "unknown method 'nosuch'"),
    (["experiment.methods=[codeblock+nosuch=1, full]"], "not a select key"),
    (["experiment.seeds=[0, 0]"], "duplicate"),
    (["experiment.budgets=[1.5]"], "not a share"),
    (["experiment.methods=[v, full]", "experiment.variants={v: [codeblock, score.gce_q=0.5]}"], "read by a shared stage"),
    (["experiment.methods=[v, full]", "experiment.variants={v: [codeblock, select.budget=0.5]}"], "set by the grid"),
    (["experiment.methods=[v, full]", "experiment.variants={v: [nosuch]}"], "unknown base method"),
    (["experiment.methods=[full]", "experiment.variants={full: [codeblock]}"], "existing method"),
])
def test_bad_grid_fails_before_work(tmp_path, extra, msg):
    ref = _ref(tmp_path, *extra)
    calls: list[str] = []
    with pytest.raises(ConfigError, match=msg):
        R.run_experiment(ref, shared_runner=_shared(calls), log=lambda s: None)
    assert calls == []


def test_crash_resume_and_statistics(tmp_path, monkeypatch):
    fake = FakeStages(crash=("codeblock", 1))
    monkeypatch.setattr(G, "run_stage", fake)
    ref = _ref(tmp_path)
    shared: list[str] = []
    quiet = {"log": lambda s: None, "progress": False}

    res = R.run_experiment(ref, shared_runner=_shared(shared), **quiet)
    assert shared == ["data", "filter", "segment", "score"]
    # the crash hit the first seed-1 codeblock cell; every other cell finished
    assert list(res["failed"]) == ["codeblock-b0.02-s1"]
    assert len(res["ran"]) == 5
    md = (tmp_path / "results/experiments/t/experiment.md").read_text()
    assert "5 of 6 cells finished" in md

    fake.calls.clear()
    res = R.run_experiment(ref, shared_runner=_shared(shared), **quiet)
    assert res["ran"] == ["codeblock-b0.02-s1"] and not res["failed"]
    assert {(m, s) for _, m, s in fake.calls} == {("codeblock", 1)}  # only the crashed cell ran again
    assert shared == ["data", "filter", "segment", "score"]  # shared stages reused

    png = tmp_path / "results/experiments/t/train_loss.png"
    drawn = png.stat().st_mtime_ns  # redrawn by the second run: a cell finished since the first
    fake.calls.clear()
    res = R.run_experiment(ref, shared_runner=_shared(shared), **quiet)
    assert fake.calls == [] and res["ran"] == [] and len(res["reused"]) == 6
    assert png.stat().st_mtime_ns == drawn  # nothing new: the plots are kept, not redrawn

    md_final = (tmp_path / "results/experiments/t/experiment.md").read_text()
    doc = json.loads((tmp_path / "results/experiments/t/experiment.json").read_text())
    rows = {r["label"]: r for r in doc["rows"]}
    assert rows["full"]["estimates"]["humaneval"]["mean"] == pytest.approx(0.5)  # 2 of 4, both seeds
    assert rows["codeblock@0.1"]["estimates"]["humaneval"]["mean"] == pytest.approx(0.75)
    assert rows["codeblock@0.02"]["estimates"]["humaneval"]["mean"] == pytest.approx(0.625)  # (2 + 3) / 8
    assert rows["full"]["estimates"]["humaneval"]["n_problems"] == N_PROBLEMS
    diffs = {d["label"]: d for d in doc["differences"]}
    d = diffs["codeblock@0.1"]["estimates"]["humaneval"]
    # +1 problem on every seed: the paired difference is exactly 1/4 wherever problem 2 is drawn
    assert d["mean"] == pytest.approx(0.25) and (d["fail_to_pass"], d["pass_to_fail"]) == (1, 0)
    assert d["low"] == 0.0 and d["high"] > 0.25
    assert diffs["codeblock@0.02"]["baseline"] == "full"
    assert "mbpp" not in rows["full"]["estimates"]  # unavailable benchmarks are left out
    out = tmp_path / "results/experiments/t"
    for png in ("pass_at_1_vs_budget.png", "pass_at_1_benchmarks.png", "supervised_ratio.png", "train_loss.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = load_config(ref["params"], ref["overrides"])
    assert "codeblock@0.1" in T.show(cfg)
    assert T.compare_result(cfg, "t").payload["experiment_md"] == md_final.rstrip("\n")
    assert T.compare_result(cfg, "nosuch").exit_code == 1


def test_changed_config_reruns_cells_and_changed_output_reruns_shared(tmp_path, monkeypatch):
    fake = FakeStages()
    monkeypatch.setattr(G, "run_stage", fake)
    shared: list[str] = []
    quiet = {"log": lambda s: None, "progress": False}
    R.run_experiment(_ref(tmp_path, "experiment.methods=[full]"), shared_runner=_shared(shared), **quiet)
    assert shared == ["data"]  # full needs only the pool
    fake.calls.clear()
    res = R.run_experiment(_ref(tmp_path, "experiment.methods=[full]", "train.lr=0.001"),
                           shared_runner=_shared(shared), **quiet)
    assert sorted(res["ran"]) == ["full-s0", "full-s1"]  # a result-changing key: the marker is stale
    fake.calls.clear()
    res = R.run_experiment(_ref(tmp_path, "experiment.methods=[full]", "train.lr=0.001", "experiment.workers=1",
                                "train.save_steps=7"), shared_runner=_shared(shared), **quiet)
    assert res["ran"] == []  # a volatile key changes nothing
    (tmp_path / "exp" / "data.out").write_text("rewritten by someone else")
    R.run_experiment(_ref(tmp_path, "experiment.methods=[full]", "train.lr=0.001"), shared_runner=_shared(shared),
                     **quiet)
    assert shared == ["data", "data"]


def test_read_scores_names_the_bad_field(tmp_path):
    p = tmp_path / "results.json"
    p.write_text(json.dumps({"benchmarks": {"humaneval": {"status": "ok", "tasks": [{"task_id": "a", "n": 1}]}}}))
    with pytest.raises(ValueError, match=r"results.json: benchmarks.humaneval.tasks\[0\]"):
        T.read_scores(p)


@pytest.mark.slow
def test_smoke_grid_interrupted_then_resumed(tmp_path):
    """The real smoke grid on the tiny model (2 cells to keep it short): the first run is killed
    (SIGKILL) once its first cell is done; the rerun (cells in child processes) runs only the
    second cell and writes the table and plots."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    d = tmp_path / "data"
    over = [f"experiment.dir={tmp_path}/exp", f"pipeline.compare_dir={tmp_path}/res", "experiment.seeds=[0]",
            "experiment.budgets=[0.1]", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlruns.db",
            f"tracking.artifact_dir={tmp_path}/art", f"paths.pool={d}/pool.parquet", f"paths.filtered={d}/f.parquet",
            f"paths.filter_report={d}/dropped.parquet", f"paths.segments={d}/seg.parquet", f"paths.scores_dir={d}/scores"]
    cmd = [sys.executable, "-m", "codeblock.cli", "experiment", "--profile", "smoke", "--no-progress",
           *[a for o in over for a in ("-S", o)]]
    first_done = tmp_path / "exp/smoke/cells/codeblock-b0.1-s0/done.json"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        while not first_done.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert first_done.exists()
    stamp = first_done.stat().st_mtime_ns
    second = subprocess.run([*cmd, "-S", "experiment.workers=2"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 already done, 1 to run" in second.stdout
    assert first_done.stat().st_mtime_ns == stamp  # the finished cell was not recomputed
    assert (tmp_path / "exp/smoke/cells/full-s0/done.json").exists()
    assert "2 of 2 cells finished" in (tmp_path / "res/experiments/smoke/experiment.md").read_text()
    assert (tmp_path / "res/experiments/smoke/train_loss.png").exists()


@pytest.mark.slow
def test_prefect_flow_runs_the_same_grid(tmp_path, monkeypatch):
    """flows/experiment.py: shared stages and cells as Prefect tasks, same resume behaviour."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from flows import experiment as F

    fake = FakeStages(crash=("full", 0))
    monkeypatch.setattr(G, "run_stage", fake)
    shared: list[str] = []
    monkeypatch.setattr(R, "in_process_stage", _shared(shared))
    ref = _ref(tmp_path, "experiment.budgets=[0.1]", "pipeline.task_retries=0")
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 300}):  # a busy CI host
        res = F.run(ref["params"], None, ref["overrides"])
    assert list(res["failed"]) == ["full-s0"] and sorted(res["ran"]) == ["codeblock-b0.1-s0", "codeblock-b0.1-s1",
                                                                         "full-s1"]
    assert shared == ["data", "filter", "segment", "score"]
    res = F.run(ref["params"], None, ref["overrides"])
    assert res["ran"] == ["full-s0"] and not res["failed"]
    assert shared == ["data", "filter", "segment", "score"]
    assert any(p.endswith("experiment.md") for p in res["outputs"])


def test_variants_run_their_base_method_with_overrides(tmp_path, monkeypatch):
    fake = FakeStages()
    monkeypatch.setattr(G, "run_stage", fake)
    ref = _ref(tmp_path, "experiment.methods=[no_rerank, full]", "experiment.seeds=[0]",
               "experiment.budgets=[0.1]", "experiment.variants={no_rerank: [codeblock, select.alpha=0, select.beta=0]}")
    cfg = load_config(ref["params"], ref["overrides"])
    cell = G.find_cell(cfg, "no_rerank-b0.1-s0")
    cc = G.cell_config(ref, cell, cfg)
    assert (cell.runs, cc.select.method, cc.select.alpha, cc.select.beta) == ("codeblock", "codeblock", 0.0, 0.0)
    res = R.run_experiment(ref, shared_runner=_shared([]), log=lambda s: None, progress=False)
    assert not res["failed"] and len(res["ran"]) == 2
    assert [d["label"] for d in res["summary"]["differences"]] == ["no_rerank@0.1"]
    assert ("select", "codeblock", 0) in fake.calls  # the stages ran the base method



def test_pipeline_table_gives_the_main_job_intervals(tmp_path):
    """The main job's one-seed results: each number with the problems it rests on, an interval,
    and the difference against full paired over the same problems."""
    ref = _ref(tmp_path, f"paths.reports_dir={tmp_path}/reports", "pipeline.methods=[codeblock, full]")
    cfg = load_config(ref["params"], ref["overrides"])
    for m, k in (("codeblock", 1), ("full", 2)):
        d = tmp_path / "reports/eval" / m
        d.mkdir(parents=True)
        tasks = [{"task_id": f"HE/{i}", "n": 1, "c": int(i < k)} for i in range(20)]
        (d / "results.json").write_text(json.dumps({"benchmarks": {"humaneval": {"status": "ok", "tasks": tasks}}}))
    md = T.pipeline_table(cfg)
    assert "humaneval (n=20)" in md and "| full | 1 | 10.0 [" in md and "| codeblock | 1 | 5.0 [" in md
    assert "| codeblock | 1 | -5.0 [" in md and "+0 / -1" in md and "contains 0" in md
    assert "one training seed per method" in md and "One seed in some rows" in md
