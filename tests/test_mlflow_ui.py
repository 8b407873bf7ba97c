"""The MLflow UI, served on loopback, shows the pipeline's runs and metrics in a real browser.

Runs are written the way the pipeline writes them (codeblock.core.tracking: a parent run per pipeline
run, a nested run per method, stage runs below), then `mlflow server` serves the SQLite store and
headless Chromium renders the pages (JavaScript on) and dumps the DOM. CI installs the browser
with `apt-get install -y chromium`; without it this test is skipped locally and fails in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from codeblock.core.config import load_config
from codeblock.core.tracking import parent_run, stage_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def _page_text(browser: str, url: str, profile_dir: Path) -> str:
    """Render `url` with JavaScript, return the visible text of the final DOM."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
           f"--user-data-dir={profile_dir}", "--virtual-time-budget=20000", "--dump-dom", url]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def test_mlflow_ui_lists_runs_and_metrics(tmp_path, monkeypatch):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("no chromium on this machine (apt-get install -y chromium)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "mlruns.db"
    cfg = load_config(ROOT / "params.yaml", [f"tracking.tracking_uri=sqlite:///{db}",
                                             f"tracking.artifact_dir={tmp_path / 'art'}",
                                             "tracking.log_system_metrics=false"])
    values = {"codeblock": 0.4321, "full": 0.1234}
    eval_ids = {}
    with parent_run(cfg, "pipeline-ui-check", tags={"methods": "codeblock,full"}):
        for method, v in values.items():
            with parent_run(cfg, f"method-{method}", tags={"method": method}):
                with stage_run(cfg, f"evaluate-{method}", tags={"method": method}) as tr:
                    tr.log_metrics({"pass@1/humaneval": v})
                    eval_ids[method] = tr.run_id
    import mlflow

    exp_id = mlflow.get_experiment_by_name(cfg.tracking.experiment).experiment_id

    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/health", server)
        runs_page = _page_text(browser, f"{base}/#/experiments/{exp_id}/runs", tmp_path / "chrome1")
        assert "pipeline-ui-check" in runs_page, runs_page[:2000]
        assert "Training runs" in runs_page or "Run Name" in runs_page
        run_page = _page_text(browser, f"{base}/#/experiments/{exp_id}/runs/{eval_ids['codeblock']}",
                              tmp_path / "chrome2")
        assert "evaluate-codeblock" in run_page, run_page[:2000]
        assert "pass_at_1/humaneval" in run_page and "0.4321" in run_page, run_page[:3000]
        assert "method-codeblock" in run_page  # the parent run is shown: the nesting is visible
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
