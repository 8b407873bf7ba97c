"""dvc.yaml: the stages match the CLI, the config and the code; the smoke pipeline runs through DVC,
caches, and `dvc exp run -S select.budget=0.05` gives an experiment that `dvc exp show` lists."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from codeblock.core.config import describe, load_config
from flows.dvc_profile import render, target

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_stage_params_exist():
    """(Commands, matrices and params lists against the stage registry: tests/test_stages.py.)"""
    keys = {k for k, _, _ in describe()}
    groups = {k.split(".")[0] for k in keys}
    for name, st in _stages().items():
        assert "--params params.yaml" in st["cmd"]
        for p in st.get("params", []):
            assert p in groups or p in keys, f"{name}: params key {p!r} is not in codeblock/core/params.py"


def test_code_and_asset_deps_exist():
    for name, st in _stages().items():
        for dep in st.get("deps", []):
            if "${" in dep:
                continue
            if dep.startswith(("codeblock/", "data/raw", "models/")):
                assert (ROOT / dep).exists(), f"{name}: dependency {dep} does not exist"
    for dvcfile in ("data/raw.dvc", "models/smollm2.dvc", "models/minilm.dvc"):
        assert (ROOT / dvcfile).exists()


def test_methods_matrix_and_paths_come_from_params():
    st = _stages()
    for name in ("select", "train", "evaluate"):
        assert st[name]["matrix"] == {"method": "${pipeline.methods}"}
        assert "--method ${item.method}" in st[name]["cmd"]
    text = (ROOT / "dvc.yaml").read_text()
    cfg = load_config(ROOT / "params.yaml")
    for var in set(re.findall(r"\$\{(paths\.\w+|pipeline\.\w+)\}", text)):
        group, key = var.split(".")
        assert hasattr(getattr(cfg, group), key), var


def test_smoke_pipeline_is_generated_from_dvc_yaml():
    assert target(ROOT, "smoke").read_text() == render(ROOT, "smoke"), \
        "pipelines/smoke/dvc.yaml is stale: run `python -m flows.dvc_profile smoke`"
    smoke = load_config(ROOT / "params.yaml", profile="smoke")
    main = load_config(ROOT / "params.yaml")
    # The smoke outputs never overlap the main job's.
    for key in ("pool", "filtered", "segments", "scores_dir", "labels_dir", "runs_dir", "reports_dir"):
        assert getattr(smoke.paths, key) != getattr(main.paths, key)
    assert smoke.pipeline.compare_dir != main.pipeline.compare_dir
    assert smoke.tracking.tracking_uri != main.tracking.tracking_uri


def test_dvc_resolves_both_pipelines():
    for args in ([], ["pipelines/smoke/dvc.yaml"]):
        res = subprocess.run([DVC, "stage", "list", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        names = {line.split()[0].split(":")[-1] for line in res.stdout.splitlines() if line.strip()}
        cfg = load_config(ROOT / "params.yaml")
        for m in cfg.pipeline.methods:
            assert {f"select@{m}", f"train@{m}", f"evaluate@{m}"} <= names
        assert {"data", "filter", "segment", "score", "report", "compare"} <= names


@pytest.mark.slow
def test_smoke_through_dvc_then_an_experiment(tmp_path):
    from repo_copy import clean_env, make_repo_copy, run

    repo = make_repo_copy(tmp_path / "repo")
    env = clean_env(repo)
    pipe = "pipelines/smoke/dvc.yaml"
    run([DVC, "repro", pipe], repo, env, timeout=900)
    lock = yaml.safe_load((repo / "pipelines/smoke/dvc.lock").read_text())["stages"]
    assert {"data", "filter", "segment", "score", "select@codeblock", "select@full", "train@codeblock",
            "train@full", "evaluate@codeblock", "evaluate@full", "report", "compare"} <= set(lock)
    summary = json.loads((repo / "smoke/results/summary.json").read_text())
    for m in ("codeblock", "full"):
        assert "pass_at_1/avg" in summary[m], summary
        assert 0 <= summary[m]["pass_at_1/avg"] <= 1
    assert summary["codeblock"]["supervision/supervised_ratio"] < summary["full"]["supervision/supervised_ratio"]
    # Nothing changed: every stage is cached.
    again = run([DVC, "repro", pipe], repo, env, timeout=300)
    assert "up to date" in again.stdout.lower() or "didn't change" in again.stdout.lower(), again.stdout
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "smoke baseline"], repo, env)
    # An experiment with one knob changed, listed by `dvc exp show` with its metrics.
    run([DVC, "exp", "run", pipe, "-n", "budget5", "-S", "select.budget=0.05"], repo, env, timeout=900)
    shown = json.loads(run([DVC, "exp", "show", "--json"], repo, env, timeout=300).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or []) if e.get("name") == "budget5"]
    assert exps, shown
    data = exps[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["select"]["budget"] == 0.05
    metrics = data["metrics"]["smoke/results/summary.json"]["data"]
    assert "pass_at_1/avg" in metrics["codeblock"]
    assert metrics["codeblock"]["supervision/supervised_ratio"] != summary["codeblock"]["supervision/supervised_ratio"]
