"""Executor: every test format, error classes, limits, isolation facts, ground-truth self-check."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeblock.core.config import load_config
from codeblock.evaluate import registry as R
from codeblock.evaluate.executor import Executor, Limits, Task, isolation_mode
from codeblock.evaluate.pipeline import make_task

REPO = Path(__file__).resolve().parents[1]
HE_TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


@pytest.fixture(scope="module")
def ex():
    return Executor(Limits(timeout_s=5.0, memory_mb=1024), workers=2)


@pytest.fixture()
def cfg(tmp_path):
    c = load_config(REPO / "params.yaml", ["eval.use_hub=false", "tracking.enabled=false"])
    c.paths.raw_dir = str(REPO / "data" / "raw")
    c.paths.reports_dir = str(tmp_path / "reports")
    return c


def run(ex, *tasks):
    return ex.run(list(tasks), progress=False)


def test_formats_pass_and_fail(ex):
    ut = ("import unittest\nclass TestCases(unittest.TestCase):\n"
          "    def test_a(self):\n        self.assertEqual(task_func(2), 4)\n"
          "    def test_b(self):\n        self.assertTrue(task_func(0) == 0)\n")
    vs = run(
        ex,
        Task("he_ok", "def add(a, b):\n    return a + b\n", HE_TEST, "humaneval_check", "add"),
        Task("he_bad", "def add(a, b):\n    return a * b\n", HE_TEST, "humaneval_check", "add"),
        Task("mbpp_setup", "def f(x):\n    return K + x\n", "assert f(1) == 11", "mbpp_asserts", "f", setup="K = 10"),
        Task("ut_ok", "def task_func(x):\n    return 2 * x\n", ut, "unittest", "task_func"),
        Task("ut_bad", "def task_func(x):\n    return x + 2\n", ut, "unittest", "task_func"),
        Task("syntax", "def add(a, b)\n    return a + b\n", HE_TEST, "humaneval_check", "add"),
        Task("missing_lib", "import seaborn_not_installed_x\ndef task_func(x):\n    return x\n", ut, "unittest",
             "task_func", libs=["seaborn_not_installed_x"]),
        Task("hallucinated_import", "import nonexistent_mod_q\ndef add(a, b):\n    return a + b\n", HE_TEST,
             "humaneval_check", "add"),
        Task("exception", "def add(a, b):\n    return {}[a]\n", HE_TEST, "humaneval_check", "add"),
        Task("short_timeout", "import time\ntime.sleep(30)\n", HE_TEST, "humaneval_check", "add", timeout_s=1.0),
    )
    got = {v.key: (v.status, v.error) for v in vs}
    assert got["he_ok"] == ("passed", None)
    assert got["he_bad"] == ("failed", "assertion")
    assert got["mbpp_setup"] == ("passed", None)
    assert got["ut_ok"] == ("passed", None)
    assert got["ut_bad"] == ("failed", "assertion")
    assert got["syntax"] == ("failed", "syntax_error")
    assert got["missing_lib"] == ("failed", "missing_library")
    assert got["hallucinated_import"] == ("failed", "import_error")
    assert got["exception"] == ("failed", "exception:KeyError")
    assert got["short_timeout"] == ("timeout", "timeout")
    assert next(v for v in vs if v.key == "short_timeout").duration_s < 4.0


@pytest.mark.skipif(isolation_mode("auto") == "none", reason="needs namespaces")
def test_isolation_facts(ex):
    probe = (
        "import os, socket, resource\n"
        "FACTS = {'uid': os.getuid(), 'pid': os.getpid(), 'cwd': os.getcwd(), 'env': sorted(os.environ),\n"
        "         'nproc': resource.getrlimit(resource.RLIMIT_NPROC)[0], 'as': resource.getrlimit(resource.RLIMIT_AS)[0],\n"
        "         'ifaces': [n for _, n in socket.if_nameindex()], 'procs': len([p for p in os.listdir('/proc') if p.isdigit()])}\n"
        "def facts():\n    return FACTS\n"
    )
    test = ("def check(candidate):\n    f = candidate()\n    assert f['uid'] != 0, f\n    assert f['pid'] == 1, f\n"
            "    assert f['cwd'].startswith('/tmp'), f\n    assert not [k for k in f['env'] if 'SECRET' in k], f\n"
            "    assert f['nproc'] == 64 and f['as'] == 1024 << 20, f\n    assert f['ifaces'] == ['lo'], f\n"
            "    assert f['procs'] == 1, f\n")
    (v,) = run(ex, Task("facts", probe, test, "humaneval_check", "facts"))
    assert v.passed, v.detail


def test_python_on_path_is_the_sandbox_interpreter(ex):
    """A program that runs `python` by name gets the interpreter the sandbox runs (bigcodebench's
    image has its evaluation Python as `python`; BigCodeBench/1101, /1103 and /1104 need it)."""
    import sys

    prog = ("import subprocess\n"
            "def where():\n"
            "    r = subprocess.run(['python', '-c', 'import sys; print(sys.prefix)'], capture_output=True, text=True)\n"
            "    return r.returncode, r.stdout.strip()\n")
    test = f"def check(candidate):\n    assert candidate() == (0, {sys.prefix!r}), candidate()\n"
    (v,) = run(ex, Task("python_on_path", prog, test, "humaneval_check", "where"))
    assert v.passed, v.detail


def test_none_mode_still_gives_verdicts(tmp_path):
    ex = Executor(Limits(timeout_s=2.0), workers=1, isolation="none")
    assert ex.mode == "none"
    vs = run(ex, Task("ok", "def add(a, b):\n    return a + b\n", HE_TEST, "humaneval_check", "add"),
             Task("bad", "import os\nos._exit(0)\n", HE_TEST, "humaneval_check", "add"),
             Task("loop", "while True: pass\n", HE_TEST, "humaneval_check", "add"))
    assert [(v.status, v.error) for v in vs] == [("passed", None), ("failed", "no_verdict"), ("timeout", "timeout")]


def test_self_check_small(cfg, ex):
    """Canonical solutions pass (the full 164/164 and 499/500 run: `codeblock evaluate --self-check`)."""
    he = R.load_benchmark(cfg, "humaneval").problems[:20]
    mb = [p for p in R.load_benchmark(cfg, "mbpp").problems if p.task_id in {"11", "12", "13", "367", "400"}]
    tasks = [make_task(p, p.reference, p.task_id, 10.0) for p in he + mb]
    vs = {v.key: v for v in run(ex, *tasks)}
    assert all(vs[p.task_id].passed for p in he)
    assert [k for k, v in vs.items() if not v.passed] == ["367"]  # the known MBPP defect


@pytest.mark.slow
def test_full_self_check_rates(cfg):
    from codeblock.evaluate.pipeline import run_evaluate

    res = run_evaluate(cfg, self_check=True, benchmarks=["humaneval", "mbpp", "mbpp_plus"], progress=False, limit=0)
    b = res["results"]["benchmarks"]
    assert (b["humaneval"]["n_passed"], b["humaneval"]["n_problems"]) == (164, 164)
    assert (b["mbpp"]["n_passed"], b["mbpp"]["n_problems"]) == (499, 500)
    assert list(b["mbpp"]["self_check"]["known_defects"]) == ["367"] and not b["mbpp"]["self_check"]["unexpected_failures"]
    assert b["mbpp_plus"]["status"] == "unavailable" and b["mbpp_plus"]["reason"].startswith("unavailable: ")
    assert "pass_at_1/mbpp_plus" not in res["metrics"]  # never scored 0


def test_auto_never_degrades_silently(cfg, monkeypatch):
    """No isolation available: `auto` refuses with instructions; an explicit `none` runs and says so."""
    from codeblock.evaluate import executor as E
    from codeblock.evaluate.results import format_table, write_results

    monkeypatch.setitem(E._MODE_CACHE, "auto", "none")
    cfg.eval.isolation = "auto"
    with pytest.raises(RuntimeError, match="eval.isolation=none explicitly"):
        E.executor_from_cfg(cfg)
    cfg.eval.isolation = "none"
    ex = E.executor_from_cfg(cfg)
    assert ex.mode == "none"
    res = write_results(Path(cfg.paths.reports_dir), method="m", model_path="x", model_id="", harness=ex.describe(),
                        decoding={}, self_check=True, blocks={}, config_hash="h")
    assert res["sandbox"] == "unsandboxed" and "UNSANDBOXED" in format_table(res)


@pytest.mark.skipif(isolation_mode("auto") == "none", reason="needs namespaces")
def test_ipc_namespace_and_no_new_privs(ex):
    """System V IPC objects die with the program; no_new_privs is set before the program runs."""
    probe = ("import ctypes\nlibc = ctypes.CDLL(None)\n"
             "KEY = libc.msgget(0x5eed, 0o1666)\n"  # IPC_CREAT | 0666: a queue in the program's namespace
             "NNP = [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].split()[1]\n"
             "def add(a, b):\n    return a + b\n")
    test = "def check(candidate):\n    assert KEY >= 0 and NNP == '1'\n"
    (v,) = run(ex, Task("ipc", probe, test, "humaneval_check", "add"))
    assert v.passed, v.detail
    with open("/proc/sysvipc/msg") as fh:
        assert not any(line.split()[0] == str(0x5EED) for line in fh.readlines()[1:])


def _userns_ok() -> bool:
    try:
        return isolation_mode("userns") == "userns"
    except RuntimeError:
        return False


@pytest.mark.skipif(not _userns_ok(), reason="needs user namespaces")
def test_userns_mode_cannot_escape_its_tmpfs(tmp_path):
    """User-namespace mode (what a non-root user gets): the program is root of its namespace only.
    It cannot unmount or remount the /tmp cover, write to the checkout, or gain capabilities."""
    target = REPO / "tests" / f".userns_probe_{tmp_path.name}"
    probe = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "UMOUNT = libc.umount2(b'/tmp', 2)\n"
        "REMOUNT = libc.mount(None, b'" + str(REPO).encode().decode() + "', None, 32 | 4096, None)\n"
        "try:\n    open(" + repr(str(target)) + ", 'w').write('x')\n    WROTE = True\nexcept OSError:\n    WROTE = False\n"
        "open('/tmp/inside.txt', 'w').write('ok')\n"
        "CAPS = [l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapBnd'))]\n"
        "def add(a, b):\n    return a + b\n"
    )
    test = ("def check(candidate):\n    assert UMOUNT == -1 and REMOUNT == -1, (UMOUNT, REMOUNT)\n"
            "    assert not WROTE\n    assert CAPS == ['0000000000000000'] * 2, CAPS\n")
    ex = Executor(Limits(timeout_s=10.0), workers=1, isolation="userns")
    assert ex.mode == "userns"
    (v,) = ex.run([Task("userns", probe, test, "humaneval_check", "add")], progress=False)
    assert v.passed, v.detail
    assert not target.exists()
