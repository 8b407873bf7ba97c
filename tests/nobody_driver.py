"""Runs as `nobody` with a plain system interpreter (see tests/test_sandbox_isolation.py): drives
the sandbox from outside the project's venv and prints one JSON line of what it saw.

    python nobody_driver.py REPO probe HOSTDIR TAG   -> the sandbox's mode and the probe's verdict
    python nobody_driver.py REPO refuse              -> what `eval.isolation: auto` does
"""

import json
import sys
from types import SimpleNamespace

sys.path.insert(0, sys.argv[1])

from codeblock.evaluate.executor import Executor, Limits, Task, executor_from_cfg  # noqa: E402
from codeblock.evaluate.isolation import isolation_mode  # noqa: E402

PROBE = """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def wrote(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError:
        return False
UMOUNT = libc.umount2(b"/tmp", 2)
HOST = wrote(HOSTDIR + "/escaped.txt")
INSIDE = wrote("/tmp/inside.txt")
VARTMP = wrote("/var/tmp/codeblock-" + TAG)
SHM = libc.shmget(0, 4096, 0o1000 | 0o600)
SEM = libc.semget(0, 1, 0o1000 | 0o600)
MSG = libc.msgget(0, 0o1000 | 0o600)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
cli = socket.create_connection(srv.getsockname(), timeout=5)
conn, _ = srv.accept()
cli.sendall(b"hi")
LOOPBACK = conn.recv(2)
try:
    socket.create_connection(("10.255.255.1", 80), timeout=3)
    OUT = True
except OSError:
    OUT = False
STATUS = dict(l.split(":", 1) for l in open("/proc/self/status"))
def add(a, b):
    return a + b
"""

CHECK = """
def check(candidate):
    assert UMOUNT == -1, "unmounted its /tmp cover"
    assert not HOST, "wrote outside its tmpfs"
    assert INSIDE and VARTMP, "its own tmpfs was not writable"
    assert min(SHM, SEM, MSG) >= 0, (SHM, SEM, MSG)
    assert LOOPBACK == b"hi" and not OUT, (LOOPBACK, OUT)
    assert STATUS["NoNewPrivs"].strip() == "1"
    assert STATUS["CapEff"].strip() == "0" * 16
"""


def main() -> None:
    what = sys.argv[2]
    out = {"mode": isolation_mode("auto")}
    if what == "probe":
        hostdir, tag = sys.argv[3], sys.argv[4]
        program = f"HOSTDIR = {hostdir!r}\nTAG = {tag!r}\n" + PROBE
        ex = Executor(Limits(timeout_s=20.0), workers=1, isolation="auto")
        (v,) = ex.run([Task("probe", program, CHECK, "humaneval_check", "add")], progress=False)
        out.update(passed=v.passed, error=v.error, detail=v.detail)
    else:
        cfg = SimpleNamespace(eval=SimpleNamespace(isolation="auto"))
        try:
            executor_from_cfg(cfg)
        except RuntimeError as e:
            out["refused"] = str(e)
        except AttributeError:  # it went on to build an executor from the (partial) config
            out["refused"] = ""
    print(json.dumps(out))


if __name__ == "__main__":
    main()
