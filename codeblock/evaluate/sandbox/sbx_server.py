"""The sandbox fork server: one job per line on stdin, one report per line on stdout.

Started by `codeblock.evaluate.executor` as `python -I sbx_server.py`, normally inside fresh
network, pid and mount namespaces (`unshare --net --pid --mount --fork --mount-proc`). It is
trusted and never runs untrusted code itself: per job it forks a child that unshares new pid,
mount, IPC and network namespaces and forks the program's process (pid 1 there, see `sbx_harness.run_job`), waits
for it under the wall-clock limit, kills what is left of the namespace and relays what arrived
on the job's verdict pipe. Standard library only (plus evalplus inside `evalplus` jobs).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sbx_harness  # noqa: E402
import sbx_setup  # noqa: E402
from sbx_proctree import children, kill_tree  # noqa: E402

_CLONE_NEWPID, _CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWNET = 0x20000000, 0x00020000, 0x08000000, 0x40000000
_MS_REC, _MS_PRIVATE = 16384, 1 << 18
_EXIT_NO_CGROUP = 71


def _fork_sandbox(job, w):
    """In the forked child C1: into the slot's memory cgroup, then new pid, mount, IPC and
    network namespaces (System V queues, semaphores and shared memory die with the program; its
    network is a loopback of its own), then the program's process is our child."""
    try:
        sbx_setup.join_cgroup(job.get("cgroup_procs"))
    except OSError:
        os._exit(_EXIT_NO_CGROUP)  # never run the program outside the limit it was promised
    if job.get("new_ns"):
        lib, ctypes = sbx_setup.libc()
        if lib.unshare(_CLONE_NEWPID | _CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        lib.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None)
        sbx_setup.loopback_up()
        child = os.fork()
        if child == 0:
            sbx_harness.run_job(job, w)
        os.close(w)
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) % 256 if status & 0x7F == 0 else 128 + (status & 0x7F))
    sbx_harness.run_job(job, w)


def _collect(r, pidfd, deadline, cap):
    """Read the verdict pipe until the sandbox ends or the deadline passes -> (chunks, timed_out)."""
    import select
    import time

    chunks, size, open_r = [], 0, True
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return chunks, True
        ready, _, _ = select.select([r, pidfd] if open_r else [pidfd], [], [], left)
        if r in ready:
            b = os.read(r, 1 << 20)
            if not b:
                open_r = False
            elif size < cap:
                chunks.append(b)
                size += len(b)
        if pidfd in ready:
            return chunks, False


def _drain(r, chunks, cap):
    os.set_blocking(r, False)
    size = sum(map(len, chunks))
    try:
        while size < cap:
            b = os.read(r, 1 << 20)
            if not b:
                break
            chunks.append(b)
            size += len(b)
    except BlockingIOError:
        pass


def _serve_one(job):
    """Fork the sandbox for one job; wait for it under the wall-clock limit; return the report."""
    import time

    new_ns = bool(job.get("new_ns"))
    cap = int(job.get("max_report") or 65536)
    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            _fork_sandbox(job, w)
        finally:
            os._exit(70)
    os.close(w)
    pidfd = os.pidfd_open(pid)
    chunks, timed_out = _collect(r, pidfd, t0 + float(job["wall_s"]), cap)
    if new_ns:
        # kill the namespace init (C1's child), not C1: C1 reaps it, and the init's exit returns
        # only once the kernel has killed and reaped every process of the pid namespace
        for child in children(pid):
            kill_tree(child)
    else:
        kill_tree(pid)
        if job.get("uid") is not None:
            _kill_uid(job["uid"])
    _, status = os.waitpid(pid, 0)
    _drain(r, chunks, cap)
    os.close(r)
    os.close(pidfd)
    if not new_ns and job.get("workdir"):
        import shutil

        shutil.rmtree(job["workdir"], ignore_errors=True)
    rep = {"data": b"".join(chunks).decode("utf-8", "replace"), "rc": os.waitstatus_to_exitcode(status),
           "timed_out": timed_out, "dt": time.monotonic() - t0}
    if rep["rc"] == _EXIT_NO_CGROUP and not rep["data"]:
        rep["harness_error"] = f"could not join the memory cgroup {job.get('cgroup_procs')}"
    return rep


def _kill_uid(uid):
    """No namespaces, as root: kill every process of the sandbox uid (setsid daemons included)."""
    import signal

    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(50):
                try:
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    break
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def serve():
    import copy  # noqa: F401 - warm the modules every job uses, so forks start hot
    import importlib
    import unittest  # noqa: F401

    setup = json.loads(sys.stdin.readline())
    if setup.get("new_ns"):
        sbx_setup.KEEP[:] = setup.get("runtime_paths") or []
        sbx_setup.mount_tmpfs(64 << 20)  # a scratch /tmp for the stash mounts
        if setup.get("uid_switch"):
            sbx_setup.expose_runtime(setup["runtime_paths"])
        sbx_setup.make_all_readonly()
    sbx_setup.libc()
    import sbx_evalplus

    sbx_evalplus.warm()
    for mod in setup.get("preload") or []:  # heavy libraries imported once, inherited by every fork
        try:
            importlib.import_module(mod)
        except Exception:  # absent or broken: the program's own import reports it
            pass
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            job = json.loads(line)
            line = None  # a big job (evalplus data) is held once, by `job`, which the program may trim
            rep = _serve_one(job)
        except Exception as e:  # reported as a harness error for this job; the server lives on
            rep = {"data": "", "rc": None, "timed_out": False, "dt": 0.0, "harness_error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(rep) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
