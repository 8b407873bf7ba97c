"""Prefect: the flows, prefect.yaml, and the smoke deployment run on a real server by a process worker."""

from __future__ import annotations

import inspect
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from codeblock.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).parent / "prefect")


def test_flow_helpers():
    from codeblock.stages import STAGES
    from flows.pipeline import call_stage, config_ref, load, needs_chain

    ref = config_ref("params.yaml", "smoke", ["eval.limit=1"])
    assert ref == {"params": "params.yaml", "profile": "smoke", "overrides": ["eval.limit=1"]}
    cfg = load({**ref, "params": str(ROOT / "params.yaml")})
    assert cfg.eval.limit == 1 and cfg.model.name_or_path == "tiny-random"
    assert needs_chain(cfg, ["codeblock", "full"]) and not needs_chain(cfg, ["full"])
    assert list(STAGES) == ["data", "filter", "segment", "score", "select", "train", "evaluate", "report", "compare"]
    with pytest.raises(KeyError):
        call_stage("nonexistent", ref)


def test_prefect_yaml_deployments_point_at_real_flows():
    from prefect import Flow

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    pools = {p["name"] for p in spec["definitions"]["work_pools"].values()}
    assert {"codeblock-local", "codeblock-gpu"} <= pools
    names = set()
    for dep in spec["deployments"]:
        names.add(dep["name"])
        path, attr = dep["entrypoint"].split(":")
        assert (ROOT / path).exists()
        module = __import__(path[:-3].replace("/", "."), fromlist=[attr])
        fl = getattr(module, attr)
        assert isinstance(fl, Flow)
        sig = inspect.signature(fl.fn)
        assert set(dep["parameters"]) <= set(sig.parameters), dep["name"]
        assert dep["work_pool"]["name"] in pools
        p = dep["parameters"]
        load_config(ROOT / p.get("params", "params.yaml"), p.get("overrides"), p.get("profile"))  # valid config
    assert {"codeblock-main", "codeblock-smoke", "codeblock-gpu"} <= names
    gpu = next(d for d in spec["deployments"] if d["name"] == "codeblock-gpu")
    assert gpu["work_pool"]["job_variables"]["env"]["CUDA_VISIBLE_DEVICES"]
    assert "model.device=cuda" in gpu["parameters"]["overrides"]
    multi = next(d for d in spec["deployments"] if d["name"] == "codeblock-multigpu")
    assert "CUDA_VISIBLE_DEVICES" not in multi["work_pool"]["job_variables"]["env"]
    p = multi["parameters"]
    cfg = load_config(ROOT / p["params"], p["overrides"], None)
    assert cfg.pipeline.launch["train"].startswith("accelerate launch --config_file configs/accelerate/")
    assert (ROOT / cfg.pipeline.launch["train"].split("--config_file ")[1].split()[0]).exists()


def test_serve_entry_builds_a_runner_deployment():
    from flows.pipeline import compare

    dep = compare.to_deployment(name="codeblock-serve", parameters={"params": "params.yaml", "profile": "smoke"})
    assert dep.name == "codeblock-serve" and dep.parameters["profile"] == "smoke"
    import flows.serve

    assert callable(flows.serve.main)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(url)


@pytest.mark.slow
def test_smoke_deployment_on_a_process_worker(tmp_path):
    """prefect server on loopback -> deploy --all -> run the smoke deployment on a process worker
    -> COMPLETED; MLflow holds the parent run, nested method and stage runs, and the table."""
    from repo_copy import clean_env, make_repo_copy, run

    repo = make_repo_copy(tmp_path / "repo")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = clean_env(repo, PREFECT_HOME=str(tmp_path / "prefect_home"), PREFECT_API_URL=api,
                    PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
                    PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(f"{api}/health", server)
        for pool in ("codeblock-local", "codeblock-gpu"):
            run([PREFECT, "work-pool", "create", pool, "--type", "process"], repo, env)
        run([PREFECT, "--no-prompt", "deploy", "--all"], repo, env, timeout=300)
        out = run([PREFECT, "deployment", "run", "codeblock-compare/codeblock-smoke"], repo, env).stdout
        flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        run([PREFECT, "worker", "start", "--pool", "codeblock-local", "--run-once"], repo, env, timeout=900)
        state = run([sys.executable, "-c", (
            "import asyncio, sys\n"
            "from prefect.client.orchestration import get_client\n"
            "async def main():\n"
            "    async with get_client() as c:\n"
            f"        fr = await c.read_flow_run('{flow_run_id}')\n"
            "        arts = await c.read_artifacts()\n"
            "        print(fr.state.type.value, *sorted({a.key for a in arts if a.key}))\n"
            "asyncio.run(main())\n")], repo, env).stdout.split()
        assert state[0] == "COMPLETED", (state, (tmp_path / "server.log").read_text()[-3000:])
        assert {"codeblock-pass-at-1", "codeblock-selection-report"} <= set(state[1:])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    # MLflow: one parent run for the flow run, a nested run per method, stage runs below them.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo}/smoke/mlruns.db")
    exp = client.get_experiment_by_name("codeblock-smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("prefect.flow_run_id") == flow_run_id
               and r.info.run_name == "pipeline"]
    assert len(parents) == 1
    top = parents[0]
    assert top.info.status == "FINISHED"
    assert re.fullmatch(r"[0-9a-f]{40}", top.data.tags["git_commit"])
    children = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == top.info.run_id}
    methods = {r.data.tags.get("method") for r in children.values()}
    assert {"codeblock", "full"} <= methods
    method_runs = {r.data.tags["method"]: r for r in children.values() if r.data.tags.get("method")}
    for m, mr in method_runs.items():
        stages = {r.data.tags.get("codeblock.stage", "").split("/")[0].split("-")[0]
                  for r in runs if r.data.tags.get("mlflow.parentRunId") == mr.info.run_id}
        assert {"select", "train", "evaluate"} <= stages, (m, stages)
    assert any(k.startswith("codeblock/pass_at_1/") for k in top.data.metrics), top.data.metrics
    assert top.data.tags["dvc.lock"]  # the flow recorded its outputs in the smoke dvc.lock
    lock = yaml.safe_load((repo / "pipelines/smoke/dvc.lock").read_text())["stages"]
    assert {"data", "score", "select@codeblock", "train@full", "evaluate@codeblock", "compare"} <= set(lock)
    table = (repo / "smoke/results/compare.md").read_text()
    assert "| codeblock |" in table and "| full |" in table


def test_dvc_commit_records_stages_run_outside_dvc(tmp_path, monkeypatch):
    from flows.pipeline import dvc_commit

    monkeypatch.chdir(tmp_path)
    assert dvc_commit(None, ["data"])["committed"] == []  # not a DVC project: nothing to do
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], check=True)
    (tmp_path / "in.txt").write_text("x\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  data:\n    cmd: cp in.txt out.txt\n"
                                       "    deps: [in.txt]\n    outs: [out.txt]\n")
    (tmp_path / "out.txt").write_text("x\n")  # the flow ran the stage itself
    res = dvc_commit(None, ["data"])
    assert res["committed"] == ["data"], res
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["data"]
    assert lock["outs"][0]["path"] == "out.txt" and lock["outs"][0]["md5"]
    assert dvc_commit(None, ["no-such-stage"])["committed"] == []
