"""The in-sandbox test harness: runs ONE untrusted program against its tests, reports a verdict.

Started by `codeblock.evaluate.executor` as `python -I sandbox_runner.py <verdict_fd> <job_file>`,
normally as pid 1 of fresh network, pid and mount namespaces (`unshare --net --pid --mount
--fork --mount-proc`). It imports only the standard library (never `codeblock`), so the program
under test sees nothing of the pipeline. Order of operations:

1. As root: read the job (program, tests, limits, nonce) from a file in a root-only folder.
2. As root, inside the private mount namespace: mount fresh size-limited tmpfs over /tmp,
   /var/tmp, /dev/shm and /run/lock, and create the work dir in it. Everything a program writes
   anywhere it is allowed to write disappears with the namespace.
3. Set rlimits (CPU, address space, file size, process count, no core files), then drop to an
   unprivileged uid/gid with no supplementary groups (RLIMIT_NPROC is not enforced for root).
4. stdin/stdout/stderr -> /dev/null; every other fd except the verdict pipe is closed.
5. Execute the program, restore the interpreter state the program may have tampered with
   (builtins, unittest.TestCase, sys hooks and streams), execute the tests in a fresh namespace
   with a fresh copy of the builtins, and write ONE verdict line `{"nonce", "status", ...}` to the
   verdict pipe with the `os.write` captured before the program ran; then `os._exit(0)`, so no
   atexit hook, finaliser or thread of the program runs after the verdict.

Being pid 1 of its pid namespace also protects the harness: signals sent from inside the namespace
(`os.kill(os.getppid(), 9)`, `os.kill(1, 9)`, `os.killpg(0, 9)`) are ignored by a namespace init
that installed no handler, and when it exits the kernel kills every remaining process of the
namespace (forks, grandchildren, setsid daemons) before the parent's wait returns.
See `executor.py` for the threat model.
"""

import builtins
import json
import os
import resource
import sys

ALLOWED_STATUS = ("passed", "failed")


_KEEP = []  # runtime paths (interpreter, site-packages, this runner) that must stay visible


def _mount_tmpfs(size_bytes, keep=None):
    """Cover /tmp, /var/tmp, /dev/shm and /run/lock with fresh tmpfs. Runtime paths that live
    below one of them (a checkout or virtualenv under /tmp, say) are bind-mounted back at the
    same place from an O_PATH handle opened before the cover, so the interpreter and its
    packages stay importable while everything else there is hidden."""
    libc, ctypes = _libc()
    ms_bind, ms_rec = 4096, 16384
    opts = f"size={size_bytes},mode=1777".encode()
    keep = [os.path.realpath(p) for p in (_KEEP if keep is None else keep) if os.path.exists(p)]
    for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        if not os.path.isdir(d):
            continue
        real = os.path.realpath(d)
        inside = sorted({p for p in keep if p == real or p.startswith(real + "/")})
        handles = [(p, os.open(p, os.O_PATH)) for p in inside]
        if libc.mount(b"tmpfs", d.encode(), b"tmpfs", 0, opts) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount tmpfs on {d}: {os.strerror(err)}")
        for p, fd in handles:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(p, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "a").close()
            if libc.mount(f"/proc/self/fd/{fd}".encode(), p.encode(), None, ms_bind | ms_rec, None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"bind {p} back over the tmpfs: {os.strerror(err)}")
            os.close(fd)


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc, ctypes


def _expose_runtime(paths):
    """Make the interpreter readable by the unprivileged uid when it lives under a folder others
    cannot traverse (e.g. a pyenv under /root, mode 0700): inside the private mount namespace,
    cover that folder with an empty tmpfs (hiding everything else in it) and bind-mount back only
    the runtime paths. The host's permissions are untouched."""
    libc, ctypes = _libc()
    ms_bind, ms_rec, mnt_detach = 4096, 16384, 2

    def check(rc, what):
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    closed = {}  # first ancestor others cannot traverse -> runtime paths below it
    for p in paths:
        p = os.path.realpath(p)
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):
            anc = "/" + "/".join(parts[:i])
            if not os.stat(anc).st_mode & 0o001:
                closed.setdefault(anc, set()).add(p)
                break
    for n, (anc, subs) in enumerate(sorted(closed.items())):
        stash = []
        for k, sub in enumerate(sorted(subs)):
            st = f"/tmp/.runtime{n}_{k}"
            os.makedirs(st)
            check(libc.mount(sub.encode(), st.encode(), None, ms_bind | ms_rec, None), f"bind {sub}")
            stash.append((st, sub))
        check(libc.mount(b"tmpfs", anc.encode(), b"tmpfs", 0, b"size=1m,mode=0755"), f"tmpfs on {anc}")
        for st, sub in stash:
            os.makedirs(sub, exist_ok=True)
            check(libc.mount(st.encode(), sub.encode(), None, ms_bind | ms_rec, None), f"rebind {sub}")
            check(libc.umount2(st.encode(), mnt_detach), f"umount {st}")
            os.rmdir(st)


def _set_limits(job):
    def lim(res, soft, hard=None):
        hard = soft if hard is None else hard
        cur_soft, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(res, (soft, hard))

    cpu = int(job["cpu_s"]) + 1
    lim(resource.RLIMIT_CPU, cpu, cpu + 1)
    lim(resource.RLIMIT_AS, job["memory_mb"] << 20)
    lim(resource.RLIMIT_FSIZE, job["fsize_mb"] << 20)
    lim(resource.RLIMIT_CORE, 0)
    if job.get("nproc"):
        lim(resource.RLIMIT_NPROC, job["nproc"])


def _prepare(job):
    """Namespaces, limits, privilege drop, fds. Returns the work dir."""
    if job.get("new_ns"):
        _mount_tmpfs(job["fsize_mb"] << 20)
        work = "/tmp/work"
    else:
        work = job["workdir"]
    os.makedirs(work, exist_ok=True)
    uid = job.get("uid")
    if uid is not None:
        os.chown(work, uid, uid)
    os.chmod(work, 0o700)
    _set_limits(job)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # real, effective and saved uid: no way back to root
    os.chdir(work)
    os.environ.clear()
    os.environ.update(job["env"])
    os.environ["HOME"] = work
    os.environ["TMPDIR"] = work
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return work


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


def _eq(out, exp, atol):
    """evalplus-style output comparison: exact, except floats within atol (default 1e-6)."""
    import math

    if isinstance(exp, float) or isinstance(out, float):
        if isinstance(out, (int, float)) and isinstance(exp, (int, float)) and not isinstance(out, bool):
            if math.isnan(exp) and math.isnan(out):
                return True
            return math.isclose(out, exp, rel_tol=1e-07, abs_tol=atol or 1e-6)
        return False
    if isinstance(exp, (list, tuple)) and isinstance(out, (list, tuple)):
        return type(out) is type(exp) and len(out) == len(exp) and all(_eq(o, e, atol) for o, e in zip(out, exp))
    return out == exp


def _run_tests(job, state):
    """Run program + tests; raise on failure, return normally when every test passed."""
    import copy
    import unittest

    fmt = job["format"]
    entry = job["entry_point"]
    program = compile(job["program"], "<program>", "exec")
    test_code = compile(job["test"], "<test>", "exec") if job.get("test") else None
    setup = compile(job["setup"], "<setup>", "exec") if job.get("setup") else None

    expected = None
    if fmt == "evalplus":  # reference outputs first, before the candidate has run at all
        ref_ns = {"__name__": "reference", "__builtins__": state.fresh_builtins()}
        exec(compile(job["reference"], "<reference>", "exec"), ref_ns)
        inputs = json.loads(job["inputs"])
        expected = [ref_ns[entry](*copy.deepcopy(args)) for args in inputs]

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
        check = tns["check"]
        check(ns[entry])
    elif fmt == "mbpp_asserts":
        if setup is not None:
            exec(setup, tns)
        exec(test_code, tns)
    elif fmt == "evalplus":
        fn = ns[entry]
        inputs = json.loads(job["inputs"])
        atol = float(job.get("atol") or 0.0)
        for i, (args, exp) in enumerate(zip(inputs, expected)):
            out = fn(*copy.deepcopy(args))
            state.restore()
            if not _eq(out, exp, atol):
                raise AssertionError(f"input #{i}: got {out!r:.200}, expected {exp!r:.200}")
    elif fmt == "unittest":
        exec(test_code, tns)
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
        state.restore()
        if result.testsRun == 0:
            raise AssertionError("no test ran")
        problems = result.errors + result.failures + [(t, "unexpected success") for t in result.unexpectedSuccesses]
        if problems:
            _, text = problems[0]
            last = [ln for ln in str(text).strip().splitlines() if ln.strip()][-1:] or ["?"]
            for _t, tb in result.errors:  # an import inside a test can also miss a declared library
                if "ModuleNotFoundError" in tb:
                    mod = tb.rsplit("No module named", 1)[-1].strip(" '\"\n").split(".")[0]
                    raise ModuleNotFoundError(f"No module named {mod!r}", name=mod)
            err = AssertionError if result.failures and not result.errors else RuntimeError
            raise err(f"{len(problems)}/{result.testsRun} tests failed; first: {last[0][:500]}")
    else:
        raise ValueError(f"unknown test format {fmt!r}")


def _run_job(job, vfd):
    """In the process that will run the untrusted program (pid 1 of its pid namespace)."""
    write = os.write  # captured before any untrusted code runs
    _exit = os._exit
    dumps = json.dumps
    getframe = sys._getframe
    main_code = getframe(0).f_code
    nonce = job.pop("nonce")

    def verdict(status, error=None, detail=""):
        if getframe(1).f_code is not main_code:  # found through the stack and called by the program
            status, error, detail = "failed", "tampered", "the verdict function was called by the program"
        msg = dumps({"nonce": nonce, "status": status, "error": error, "detail": detail[:4000]}) + "\n"
        write(vfd, msg.encode())
        _exit(0)

    try:
        if job.get("new_ns"):
            _mount_proc()
        _prepare(job)
        os.closerange(3, vfd)
        os.closerange(vfd + 1, 1 << 16)
    except BaseException as e:  # the sandbox could not be set up: the executor reports it loudly
        verdict("failed", "sandbox_error", f"{type(e).__name__}: {e}")
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


def _mount_proc():
    libc, ctypes = _libc()
    if libc.mount(b"proc", b"/proc", b"proc", 2 | 4 | 8, None) != 0:  # nosuid, nodev, noexec
        err = ctypes.get_errno()
        raise OSError(err, f"mount proc: {os.strerror(err)}")


def _children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


def _kill_all(pid):
    import signal

    seen, stack = [], [pid]
    while stack:
        p = stack.pop()
        seen.append(p)
        stack.extend(_children(p))
    for p in seen:  # top-down: a namespace init first takes its whole namespace with it
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def _serve_one(job):
    """Fork the sandbox for one job; wait for it under the wall-clock limit; return the report."""
    import select
    import time

    new_ns = bool(job.get("new_ns"))
    timeout = float(job["wall_s"])
    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # C1: new pid + mount namespaces, then the program's process is our child, pid 1
        try:
            os.close(r)
            os.setsid()
            if new_ns:
                libc, ctypes = _libc()
                if libc.unshare(0x20000000 | 0x00020000) != 0:  # CLONE_NEWPID | CLONE_NEWNS
                    raise OSError(ctypes.get_errno(), "unshare")
                libc.mount(None, b"/", None, 16384 | (1 << 18), None)  # MS_REC | MS_PRIVATE
                child = os.fork()
                if child == 0:
                    _run_job(job, w)
                os.close(w)
                _, status = os.waitpid(child, 0)
                os._exit(os.waitstatus_to_exitcode(status) % 256 if status & 0x7F == 0 else 128 + (status & 0x7F))
            _run_job(job, w)
        finally:
            os._exit(70)
    os.close(w)
    pidfd = os.pidfd_open(pid)
    chunks, timed_out = [], False
    deadline = t0 + timeout
    open_r = True
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r, pidfd] if open_r else [pidfd], [], [], left)
        if r in ready:
            b = os.read(r, 65536)
            if not b:
                open_r = False
            elif sum(map(len, chunks)) < 65536:
                chunks.append(b)
        if pidfd in ready:
            break
    if new_ns:
        # kill the namespace init (C1's child), not C1: C1 reaps it, and the init's exit returns
        # only once the kernel has killed and reaped every process of the pid namespace
        for child in _children(pid):
            _kill_all(child)
    else:
        _kill_all(pid)
        if job.get("uid") is not None:
            _kill_uid(job["uid"])
    _, status = os.waitpid(pid, 0)
    os.set_blocking(r, False)
    try:
        while True:
            b = os.read(r, 65536)
            if not b or sum(map(len, chunks)) >= 65536:
                break
            chunks.append(b)
    except BlockingIOError:
        pass
    os.close(r)
    os.close(pidfd)
    if not new_ns and job.get("workdir"):
        import shutil

        shutil.rmtree(job["workdir"], ignore_errors=True)
    rc = os.waitstatus_to_exitcode(status)
    return {"data": b"".join(chunks).decode("utf-8", "replace"), "rc": rc, "timed_out": timed_out,
            "dt": time.monotonic() - t0}


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
    """Fork server: one job per line on stdin, one report per line on stdout."""
    import copy  # noqa: F401 - warm the modules every job uses, so forks start hot
    import unittest  # noqa: F401

    setup = json.loads(sys.stdin.readline())
    if setup.get("new_ns"):
        _KEEP[:] = setup.get("runtime_paths") or []
        _mount_tmpfs(64 << 20)  # a scratch /tmp for the stash mounts
        if setup.get("uid_switch"):
            _expose_runtime(setup["runtime_paths"])
    _libc()
    import importlib

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
            rep = _serve_one(json.loads(line))
        except Exception as e:  # reported as a harness error for this job; the server lives on
            rep = {"data": "", "rc": None, "timed_out": False, "dt": 0.0, "harness_error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(rep) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
