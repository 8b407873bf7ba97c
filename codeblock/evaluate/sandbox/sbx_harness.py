"""The in-sandbox test harness: runs ONE untrusted program against its tests, reports a verdict.

`run_job` runs in the process forked by the fork server for one program, normally pid 1 of fresh
pid and mount namespaces. Order of operations:

1. As root, inside the private mount namespace: mount /proc and fresh size-limited tmpfs over
   /tmp, /var/tmp, /dev/shm and /run/lock, and create the work dir in it (`sbx_setup.prepare`).
2. Set rlimits and no_new_privs, then drop to an unprivileged uid/gid with no supplementary groups.
3. stdin/stdout/stderr -> /dev/null; every other fd except the verdict pipe is closed.
4. Execute the program and its tests (test formats below), and write ONE verdict line
   `{"nonce", "status", "error", "detail", "data"}` to the verdict pipe with the `os.write`
   captured before the program ran; then `os._exit(0)`, so no atexit hook, finaliser or thread
   of the program runs after the verdict.

Test formats: `humaneval_check`, `mbpp_asserts` and `unittest` run the program, restore the
interpreter state it may have tampered with (builtins, unittest.TestCase, sys hooks and streams),
then run the tests in a fresh namespace with a fresh copy of the builtins. `evalplus` and
`evalplus_gt` are delegated to `sbx_evalplus` (evalplus's own checker, run here), `bigcodebench`
and `bigcodebench_gt` to `sbx_bigcodebench` (bigcodebench's own).

Being pid 1 of its pid namespace also protects the harness: signals sent from inside the namespace
(`os.kill(os.getppid(), 9)`, `os.kill(1, 9)`, `os.killpg(0, 9)`) are ignored by a namespace init
that installed no handler. See `codeblock/evaluate/executor.py` for the threat model.
"""

import builtins
import json
import os
import sys

import sbx_setup


class _State:
    """Snapshot of interpreter state a program may tamper with, restored before the tests run."""

    def __init__(self):
        import unittest

        self.builtins = dict(builtins.__dict__)
        self.testcase = dict(unittest.TestCase.__dict__)
        self.sys = {k: getattr(sys, k) for k in ("stdout", "stderr", "stdin", "excepthook", "displayhook")}
        self.recursion = sys.getrecursionlimit()

    def restore(self):
        import unittest

        sys.settrace(None)
        sys.setprofile(None)
        for k, v in self.sys.items():
            setattr(sys, k, v)
        sys.setrecursionlimit(self.recursion)
        bd = builtins.__dict__
        for k in [k for k in bd if k not in self.builtins]:
            del bd[k]
        bd.update(self.builtins)
        tc = unittest.TestCase
        for k in [k for k in list(tc.__dict__) if k not in self.testcase]:
            delattr(tc, k)
        for k, v in self.testcase.items():
            if k not in ("__dict__", "__weakref__") and tc.__dict__.get(k) is not v:
                setattr(tc, k, v)

    def fresh_builtins(self):
        return dict(self.builtins)


def _classify(exc, job):
    """(error class, detail) of an exception raised by the program or its tests."""
    name = type(exc).__name__
    detail = f"{name}: {exc}"[:2000]
    if isinstance(exc, AssertionError):
        return "assertion", detail
    if isinstance(exc, SyntaxError):
        return "syntax_error", detail
    if isinstance(exc, ImportError):
        mod = (getattr(exc, "name", None) or "").split(".")[0]
        if isinstance(exc, ModuleNotFoundError) and mod and mod in set(job.get("libs") or []):
            return "missing_library", f"missing library {mod!r} (declared by the benchmark): {detail}"
        return "import_error", detail
    if isinstance(exc, MemoryError):
        return "memory", detail
    if isinstance(exc, RecursionError):
        return "recursion", detail
    if isinstance(exc, SystemExit):
        return "system_exit", f"SystemExit({exc.code!r}) before the tests finished"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", detail
    return f"exception:{name}", detail


def _run_unittest(tns):
    import unittest

    cases = [v for v in tns.values() if isinstance(v, type) and issubclass(v, unittest.TestCase)
             and v is not unittest.TestCase and v.__module__ == "tests"]
    if not cases:
        raise AssertionError("no unittest.TestCase in the tests")
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for c in cases:
        suite.addTests(loader.loadTestsFromTestCase(c))
    result = unittest.TestResult()
    suite.run(result)
    return result


def _raise_unittest_problems(result):
    if result.testsRun == 0:
        raise AssertionError("no test ran")
    problems = result.errors + result.failures + [(t, "unexpected success") for t in result.unexpectedSuccesses]
    if not problems:
        return
    _, text = problems[0]
    last = [ln for ln in str(text).strip().splitlines() if ln.strip()][-1:] or ["?"]
    for _t, tb in result.errors:  # an import inside a test can also miss a declared library
        if "ModuleNotFoundError" in tb:
            mod = tb.rsplit("No module named", 1)[-1].strip(" '\"\n").split(".")[0]
            raise ModuleNotFoundError(f"No module named {mod!r}", name=mod)
    err = AssertionError if result.failures and not result.errors else RuntimeError
    raise err(f"{len(problems)}/{result.testsRun} tests failed; first: {last[0][:500]}")


def _run_tests(job, state):
    """Run program + tests; raise on failure, return normally when every test passed."""
    fmt = job["format"]
    program = compile(job["program"], "<program>", "exec")
    test_code = compile(job["test"], "<test>", "exec") if job.get("test") else None
    setup = compile(job["setup"], "<setup>", "exec") if job.get("setup") else None
    ns = {"__name__": "candidate", "__builtins__": builtins}
    if setup is not None:
        exec(setup, ns)
    exec(program, ns)
    state.restore()
    # the tests see the program's names (MBPP asserts, unittest) but run with pristine builtins
    tns = dict(ns)
    tns["__builtins__"] = state.fresh_builtins()
    tns["__name__"] = "tests"
    if fmt == "humaneval_check":
        exec(test_code, tns)
        tns["check"](ns[job["entry_point"]])
    elif fmt == "mbpp_asserts":
        if setup is not None:
            exec(setup, tns)
        exec(test_code, tns)
    elif fmt == "unittest":
        exec(test_code, tns)
        result = _run_unittest(tns)
        state.restore()
        _raise_unittest_problems(result)
    else:
        raise ValueError(f"unknown test format {job['format']!r}")


def run_job(job, vfd):
    """In the process that will run the untrusted program (pid 1 of its pid namespace)."""
    write = os.write  # captured before any untrusted code runs
    _exit = os._exit
    dumps = json.dumps
    getframe = sys._getframe
    main_code = getframe(0).f_code
    nonce = job.pop("nonce")

    def verdict(status, error=None, detail="", data=None):
        if getframe(1).f_code is not main_code:  # found through the stack and called by the program
            status, error, detail, data = "failed", "tampered", "the verdict function was called by the program", None
        msg = memoryview((dumps({"nonce": nonce, "status": status, "error": error, "detail": detail[:4000],
                                 "data": data}) + "\n").encode())
        while msg:
            msg = msg[write(vfd, msg):]
        _exit(0)

    try:
        if job.get("new_ns"):
            sbx_setup.mount_proc()
        sbx_setup.prepare(job)
        os.closerange(3, vfd)
        os.closerange(vfd + 1, 1 << 16)
    except BaseException as e:  # the sandbox could not be set up: the executor reports it loudly
        verdict("failed", "sandbox_error", f"{type(e).__name__}: {e}")
    if job["format"] in ("evalplus", "evalplus_gt"):
        import sbx_evalplus

        try:
            status, error, detail, data = sbx_evalplus.run(job)
        except BaseException as e:  # the reference solution (or evalplus itself) raised
            status, error, detail, data = "failed", f"exception:{type(e).__name__}", f"{e!r}"[:2000], None
        verdict(status, error, detail, data)
    if job["format"] in ("bigcodebench", "bigcodebench_gt"):
        import sbx_bigcodebench

        try:
            status, error, detail, data = sbx_bigcodebench.run(job)
        except BaseException as e:  # bigcodebench is not importable from this interpreter
            status, error, detail, data = "failed", f"exception:{type(e).__name__}", f"{e!r}"[:2000], None
        verdict(status, error, detail, data)
    state = _State()
    try:
        _run_tests(job, state)
    except BaseException as e:  # SystemExit, KeyboardInterrupt, ... are failures too
        try:
            state.restore()
            error, detail = _classify(e, job)
        except BaseException:
            error, detail = "exception:unprintable", ""
        verdict("failed", error, detail)
    verdict("passed")
