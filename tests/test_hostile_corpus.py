"""The hostile program corpus (tests/hostile/): every program gets its declared verdict, in ONE
parallel batch, the harness survives, and nothing the programs started or wrote outlives them."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from codeblock.evaluate.executor import Executor, Limits, Task, isolation_mode

HOSTILE = Path(__file__).with_name("hostile")
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
UID = 60150  # a uid range of its own, so leftovers are attributable to this test


def corpus() -> list[tuple[str, str, list[str], str | None]]:
    out = []
    for path in sorted(HOSTILE.glob("*.py")):
        src = path.read_text()
        expect = re.search(r"^# expect: (.+)$", src, re.M).group(1).split()
        err = re.search(r"^# error: (.+)$", src, re.M)
        out.append((path.stem, src, expect, err.group(1).strip() if err else None))
    return out


def _uid_processes(uids: set[int]) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/status") as fh:
                    for line in fh:
                        if line.startswith("Uid:") and int(line.split()[1]) in uids:
                            found.append(int(d))
            except OSError:
                pass
    return found


def test_corpus_is_large_enough():
    assert len(corpus()) >= 20


@pytest.mark.skipif(isolation_mode("auto") == "none", reason="needs namespaces (documented fallback)")
def test_hostile_corpus_verdicts_and_cleanup(monkeypatch, tmp_path):
    monkeypatch.setenv("CODEBLOCK_HOSTILE_SECRET", "hunter2")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 47231))
    listener.listen(8)
    canary = HOSTILE / "canary.txt"
    before = canary.read_text()
    items = corpus()
    tasks = [Task(name, src, TEST, "humaneval_check", "add") for name, src, _, _ in items]
    tasks.append(Task("control_after", "def add(a, b):\n    return a + b\n", TEST, "humaneval_check", "add"))
    ex = Executor(Limits(timeout_s=3.0, memory_mb=512, nproc=32), workers=2, sandbox_uid=UID)
    try:
        verdicts = ex.run(tasks, progress=False)
    finally:
        listener.close()
    assert len(verdicts) == len(tasks)  # every sample got a verdict
    by = {v.key: v for v in verdicts}
    wrong = []
    for name, _, expect, err in items:
        v = by[name]
        if v.status not in expect or (err and v.error != err):
            wrong.append(f"{name}: got {v.status}/{v.error} ({v.detail[:120]}), expected {expect}/{err}")
    assert not wrong, "\n".join(wrong)
    assert by["control_after"].passed  # the batch survived everything before it
    # nothing survives: processes of the sandbox uids, files outside, files in the host's /tmp
    if ex.uid_switch:
        assert _uid_processes({UID, UID + 1}) == []
    assert canary.exists() and canary.read_text() == before
    repo = HOSTILE.parents[1]
    assert not (repo / "HOSTILE_WAS_HERE").exists() and not (HOSTILE / "HOSTILE_WAS_HERE").exists()
    for d in ("/tmp", "/dev/shm", "/var/tmp"):
        assert not Path(d, "codeblock_hostile_marker").exists()
