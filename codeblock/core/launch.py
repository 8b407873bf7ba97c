"""The stage launcher: run a stage as its own process, the same `codeblock <stage>` command DVC runs.

The Prefect flows (and the experiment grid) call `launch_stage`, so every stage gets a fresh
process: the memory of a trained model or a scorer goes back to the system when the stage ends, and
a multi-GPU stage runs under its launcher (`pipeline.launch.train: "accelerate launch
--config_file configs/accelerate/ddp.yaml"`). The child writes its `StageResult` to a JSON file
(`--result-json`), which is all the parent reads back: paths, hashes and metrics, never objects.

Stopping: the child runs in its own session (process group). If the parent is interrupted
(Ctrl-C, SIGTERM from a Prefect cancel or a worker shutdown; see `install_signal_handlers`), the
whole group gets SIGTERM, then SIGKILL after `KILL_GRACE_S`, so no stage process, `accelerate`
rank or sandbox outlives the run. Finished outputs and checkpoints are left as they are; a rerun
resumes from them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

KILL_GRACE_S = 10.0  # SIGTERM -> SIGKILL delay for a stage's process group
TAIL_LINES = 40  # log lines quoted in the error of a failed stage
PROGRESS_INTERVAL_S = 10  # a stage's progress bars redraw at most this often in the flow's log
_LINE_SPLIT = re.compile(r"[\r\n]+")  # tqdm redraws with \r: each redraw is a line of the log

_LIVE: set[subprocess.Popen] = set()
_LOCK = threading.Lock()


class StageFailed(RuntimeError):
    def __init__(self, stage: str, returncode: int, tail: list[str]):
        self.stage, self.returncode, self.tail = stage, returncode, tail
        super().__init__(f"stage {stage!r} exited with code {returncode}; last lines:\n" + "\n".join(tail))


def stage_command(stage: str, ref: dict[str, Any], *, method: str | None = None, model_path: str | None = None,
                  result_json: str | None = None, prefix: str = "", python: str | None = None) -> list[str]:
    """The command line of one stage: `[prefix] python -m codeblock.cli <stage> --params ...`.

    A prefix is a launcher that takes `-m module args` (accelerate launch, torchrun)."""
    args = ["-m", "codeblock.cli", stage, "--params", ref["params"]]
    if ref.get("profile"):
        args += ["--profile", ref["profile"]]
    for ov in ref.get("overrides") or []:
        args += ["-S", ov]
    if method is not None:
        args += ["--method", method]
    if model_path is not None:
        args += ["--model-path", model_path]
    if result_json is not None:
        args += ["--result-json", result_json]
    head = shlex.split(prefix) if prefix.strip() else [python or sys.executable]
    return [*head, *args]


def _terminate(proc: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def terminate_all() -> None:
    """Stop every stage process this process started and that still runs."""
    with _LOCK:
        live = list(_LIVE)
    for proc in live:
        _terminate(proc)


def run_command(cmd: list[str], log: Callable[[str], None] = print, env: dict[str, str] | None = None,
                cwd: str | None = None, name: str = "stage", timeout: float | None = None) -> int:
    """Run `cmd` in its own process group, streaming its output line by line to `log`.

    Raises StageFailed on a non-zero exit. Whatever interrupts the wait (KeyboardInterrupt,
    SystemExit from a signal handler, a timeout) takes the process group down with it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd, start_new_session=True)
    with _LOCK:
        _LIVE.add(proc)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    timer = threading.Timer(timeout, _terminate, args=(proc,)) if timeout else None
    try:
        if timer:
            timer.start()
        buf = ""
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
            if not chunk:
                break
            buf += chunk.decode("utf-8", errors="replace")
            *lines, buf = _LINE_SPLIT.split(buf)
            for line in lines:
                if line.strip():
                    tail.append(line)
                    log(line)
        if buf.strip():
            tail.append(buf)
            log(buf)
        rc = proc.wait()
    finally:
        if timer:
            timer.cancel()
        _terminate(proc)
        with _LOCK:
            _LIVE.discard(proc)
    if rc != 0:
        raise StageFailed(name, rc, list(tail))
    return rc


def launch_stage(stage: str, ref: dict[str, Any], *, method: str | None = None, model_path: str | None = None,
                 prefix: str = "", log: Callable[[str], None] = print, timeout: float | None = None) -> dict[str, Any]:
    """Run one stage as a subprocess; return its StageResult JSON (stage, method, outputs, metrics)."""
    fd, result_json = tempfile.mkstemp(prefix=f"codeblock-{stage}-", suffix=".json")
    os.close(fd)
    try:
        cmd = stage_command(stage, ref, method=method, model_path=model_path, result_json=result_json, prefix=prefix)
        log("$ " + shlex.join(cmd))
        # tqdm reads TQDM_* defaults from the environment: one progress line per interval, not
        # one per redraw, in the Prefect task log
        env = {"TQDM_MININTERVAL": str(PROGRESS_INTERVAL_S), **os.environ, "PYTHONUNBUFFERED": "1"}
        run_command(cmd, log=log, env=env, name=stage, timeout=timeout)
        return json.loads(Path(result_json).read_text())
    finally:
        Path(result_json).unlink(missing_ok=True)


def install_signal_handlers() -> None:
    """SIGTERM/SIGINT in this (orchestrating) process: stop every stage process, then exit.

    Python turns SIGINT into KeyboardInterrupt already; SIGTERM (what a Prefect cancel and a
    worker shutdown send) would otherwise kill this process without running any cleanup."""
    def _stop(signum, frame):  # noqa: ARG001
        terminate_all()
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
