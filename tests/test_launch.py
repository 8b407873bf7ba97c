"""The stage launcher: a stage as its own process, its result read back, and stopping that kills
the whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from codeblock.core.launch import StageFailed, launch_stage, run_command, stage_command

ROOT = Path(__file__).resolve().parents[1]


def test_stage_command_prefix_and_options():
    ref = {"params": "params.yaml", "profile": "smoke", "overrides": ["train.lr=1e-3"]}
    cmd = stage_command("train", ref, method="full", result_json="r.json",
                        prefix="accelerate launch --config_file configs/accelerate/ddp.yaml")
    assert cmd[:4] == ["accelerate", "launch", "--config_file", "configs/accelerate/ddp.yaml"]
    assert cmd[4:7] == ["-m", "codeblock.cli", "train"]
    assert cmd[cmd.index("-S") + 1] == "train.lr=1e-3" and cmd[cmd.index("--method") + 1] == "full"
    assert stage_command("data", {"params": "p.yaml"})[0] == sys.executable


def test_failed_command_raises_with_its_last_lines():
    lines = []
    with pytest.raises(StageFailed) as e:
        run_command([sys.executable, "-c", "print('one'); print('two\\rthree'); raise SystemExit(3)"],
                    log=lines.append, name="demo")
    assert e.value.returncode == 3 and lines == ["one", "two", "three"]
    assert "three" in str(e.value)


def test_launch_stage_reads_the_result_back(cfg, tmp_path):
    import yaml

    cfg.tracking.enabled = False
    for src in cfg.data.sources:
        src.limit = 2
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.to_dict()))
    logged = []
    res = launch_stage("data", {"params": str(params), "profile": None, "overrides": []}, log=logged.append)
    assert res["stage"] == "data" and res["outputs"] == [cfg.paths.pool] and res["metrics"]["rows"] == 6
    assert Path(cfg.paths.pool).exists() and any("rows" in line for line in logged)


def test_sigterm_to_the_orchestrator_stops_the_stage_process_group(tmp_path):
    """SIGTERM to a process that launched a (grand)child stage ends both within seconds."""
    marker = tmp_path / "child.pid"
    child = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = textwrap.dedent(f"""
        import sys
        from codeblock.core.launch import install_signal_handlers, run_command
        install_signal_handlers()
        run_command([sys.executable, "-c", {child!r}], log=lambda s: None)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT)
    deadline = time.time() + 60
    while not (marker.exists() and marker.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child_pid = int(marker.read_text())
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    for _ in range(100):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the stage process survived its orchestrator")
    assert time.time() - t0 < 15
