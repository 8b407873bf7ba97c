"""The sandbox's isolation as an unprivileged user sees it, its loopback, its read-only host
and its aggregate memory limit (see codeblock/evaluate/executor.py and cgroup.py)."""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from codeblock.evaluate.cgroup import find_base
from codeblock.evaluate.executor import Executor, Limits, Task
from codeblock.evaluate.isolation import isolation_mode

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# A plain system interpreter `nobody` can run: the project's venv may live where others cannot read
SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)


def _ipc_objects() -> int:
    n = 0
    for kind in ("shm", "sem", "msg"):
        try:
            n += len(Path(f"/proc/sysvipc/{kind}").read_text().splitlines()) - 1
        except OSError:
            pass
    return n


def _as_nobody(*args: str, no_userns: bool = False) -> dict:
    cmd = [sys.executable, str(TESTS / "as_nobody.py"), *(["--no-userns"] if no_userns else []), "--",
           SYSTEM_PYTHON, str(TESTS / "nobody_driver.py"), str(REPO), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _nobody_ready() -> str:
    """Why the nobody tests cannot run here ("" when they can)."""
    if os.geteuid() != 0:
        return "needs root to become nobody"
    if SYSTEM_PYTHON is None:
        return "no system python3"
    probe = subprocess.run([sys.executable, str(TESTS / "as_nobody.py"), "--", SYSTEM_PYTHON, "-c",
                            f"import sys; sys.path.insert(0, {str(REPO)!r}); import codeblock.evaluate.executor"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"nobody cannot import the checkout with {SYSTEM_PYTHON}: {probe.stderr.strip()[-200:]}"
    userns = subprocess.run([sys.executable, str(TESTS / "as_nobody.py"), "--", shutil.which("unshare") or "unshare",
                             "--user", "--map-root-user", "true"], capture_output=True, timeout=60)
    return "" if userns.returncode == 0 else "unprivileged user namespaces are disabled here"


NOBODY = _nobody_ready()


@pytest.mark.skipif(bool(NOBODY), reason=NOBODY or "-")
def test_as_nobody_a_program_stays_in_its_tmpfs_and_leaves_no_ipc(tmp_path):
    """As `nobody` (no root anywhere), `auto` picks user namespaces. The program cannot write a
    world-writable host folder, cannot unmount its /tmp cover, has no capabilities and
    no_new_privs; the System V objects it creates vanish with it; it reaches its own loopback and
    nothing else."""
    hostdir = TESTS / f".nobody-{uuid.uuid4().hex[:8]}"
    hostdir.mkdir()
    os.chmod(hostdir, 0o1777)  # nobody could write here on the host
    tag = uuid.uuid4().hex[:8]
    before = _ipc_objects()
    try:
        out = _as_nobody("probe", str(hostdir), tag)
        assert out["mode"] == "userns"
        assert out["passed"], out
        assert list(hostdir.iterdir()) == []
        assert not Path(f"/var/tmp/codeblock-{tag}").exists()
        assert _ipc_objects() == before
    finally:
        shutil.rmtree(hostdir)


@pytest.mark.skipif(bool(NOBODY), reason=NOBODY or "-")
def test_as_nobody_without_user_namespaces_auto_refuses():
    out = _as_nobody("refuse", no_userns=True)
    assert out["mode"] == "none"
    assert "eval.isolation=none" in out["refused"] and "user namespaces" in out["refused"]


def _ns_ok() -> bool:
    try:
        return isolation_mode("auto") != "none"
    except RuntimeError:
        return False


SERVER = """
import socket, threading
def echo():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    PORT.append(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.sendall(conn.recv(16).upper())
PORT = []
t = threading.Thread(target=echo)
t.start()
while not PORT:
    pass
def roundtrip(msg):
    with socket.create_connection(("127.0.0.1", PORT[0]), timeout=5) as c:
        c.sendall(msg)
        return c.recv(16)
"""


@pytest.mark.skipif(not _ns_ok(), reason="needs namespaces")
def test_loopback_is_up_and_private_to_each_program():
    """A client/server program talks to itself on 127.0.0.1; a second program cannot see the
    first one's port (each has a network namespace of its own)."""
    test = "def check(candidate):\n    assert candidate(b'ping') == b'PING'\n"
    ex = Executor(Limits(timeout_s=20.0), workers=1)
    (v,) = ex.run([Task("srv", SERVER, test, "humaneval_check", "roundtrip")], progress=False)
    assert v.passed, v.detail


@pytest.mark.skipif(not _ns_ok(), reason="needs namespaces")
def test_host_disks_are_read_only_for_programs(tmp_path):
    """Even a folder the program's uid may write on the host (mode 1777, outside /tmp) is read-only."""
    hostdir = TESTS / f".rw-{uuid.uuid4().hex[:8]}"
    hostdir.mkdir()
    os.chmod(hostdir, 0o1777)
    program = f"def f():\n    open({str(hostdir / 'x.txt')!r}, 'w').write('x')\n    return 1\n"
    try:
        ex = Executor(Limits(timeout_s=20.0), workers=1)
        (v,) = ex.run([Task("ro", program, "def check(c):\n    assert c() == 1\n", "humaneval_check", "f")],
                      progress=False)
        assert not v.passed and "Read-only file system" in v.detail, v.detail
        assert list(hostdir.iterdir()) == []
    finally:
        shutil.rmtree(hostdir)


FORK_HOG = """
import os, time
def hog(n_children, mb):
    kids = []
    for _ in range(n_children):
        pid = os.fork()
        if pid == 0:
            block = bytearray(mb << 20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            time.sleep(1)
            os._exit(0)
        kids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids]
"""


@pytest.mark.skipif(find_base() is None, reason="no writable memory cgroup here")
def test_memory_limit_is_per_program_not_per_process():
    """Four children of 150 MiB each: every one is under the 400 MiB per-process limit, together
    they are over it. With the cgroup, the kernel kills some; a single child passes."""
    ex = Executor(Limits(timeout_s=30.0, memory_mb=400), workers=1)
    assert ex.describe()["memory_cgroup"] in ("v1", "v2")
    together = "def check(c):\n    assert c(4, 150) == [0, 0, 0, 0]\n"
    alone = "def check(c):\n    assert c(1, 150) == [0]\n"
    v4, v1 = ex.run([Task("four", FORK_HOG, together, "humaneval_check", "hog"),
                     Task("one", FORK_HOG, alone, "humaneval_check", "hog")], progress=False)
    assert not v4.passed, "four children of 150 MiB ran under one 400 MiB program limit"
    assert v1.passed, v1.detail
    assert not list(ex_base_children())


def ex_base_children():
    """Slot cgroups this test process created and left behind (there should be none)."""
    found = find_base()
    return [] if found is None else list(found[1].glob(f"codeblock-{os.getpid()}-*"))
