"""bigcodebench 0.2.5's own checker, run inside the sandbox.

Two job formats (the pipeline side is `codeblock/evaluate/bcb_plan.py`):
- `bigcodebench`: one candidate program through bigcodebench's `untrusted_check`, called in the
  sandbox's pid 1 with the arguments `bigcodebench.evaluate` passes. Its child runs
  `unsafe_execute`: `safe_environment` (kill / exec / subprocess interception), a fresh temporary
  working directory, its `reliability_guard` (address space, data and stack limits in MiB,
  TZ=UTC, OMP_NUM_THREADS=1, no exit/quit, matplotlib.pyplot imported), the program and the tests
  concatenated into ONE module named `__test__` that also holds `sys`, `os` and `environ`, only
  the class `TestCases` loaded, the test run under its `time_limit`; its status is
  `untrusted_check`'s (no report within `timeout + 1` s: "timeout"; a failure or error recorded
  in `details`: "fail"). The executor's own wall-clock limit is only a backstop above that.
- `bigcodebench_gt`: the canonical program (trusted) through bigcodebench's `trusted_exec`, as
  `trusted_check` (the ground truth of `bigcodebench.evaluate --check-gt-only`) runs it, in a
  child of pid 1 that reports itself (so the exception of a failing ground truth is kept): the
  reported time is the test suite's, or none when a test failed.

Standard library only at import time: bigcodebench is imported inside the job, from the
interpreter the fork server runs (eval.bigcodebench_python).
"""

MAX_TRACE = 2000  # characters of each failing test's traceback sent back (the verdict's size is capped)


class _Shared:
    """Stands in for multiprocessing.Value: what the child writes, read back in the same process."""

    def __init__(self, value):
        self.value = value


def ground_truth(job):
    import bigcodebench.gen.util as G

    b = job["bigcodebench"]
    G.TIMEOUT_LIMIT = b["task_limit"]  # its suite alarm (240 s unless a caller chose less)
    times = _Shared(-1.0)
    try:
        G.trusted_exec(job["program"], job["test"], b["task_id"], b["max_as_limit"], b["max_data_limit"],
                     b["max_stack_limit"], times)
    except BaseException as e:  # trusted_check's child would die here; no time was recorded
        return "failed", "ground_truth_failed", f"{type(e).__name__}: {e}"[:MAX_TRACE], {"time": None}
    if times.value == -1:
        return "failed", "ground_truth_failed", "a test of the canonical solution failed", {"time": None}
    return "passed", None, "", {"time": float(times.value)}


def check(job):
    """bigcodebench's `untrusted_check` itself, in the sandbox's pid 1: its shared `Value` and
    manager dict, its forked child running `unsafe_execute`, its `join(timeout + 1)`, terminate and
    kill. The processes around the checker count, not only its code: with `unsafe_execute` in a
    child of ours (a plain dict for `details`, matplotlib imported ahead) BigCodeBench/363's
    `multiprocessing.Pool` passed 3 of 18 runs; bigcodebench's own check never passed it (0 of 31),
    and neither does this (0 of 12; docs/evaluation.md)."""
    import bigcodebench.eval as E

    b = job["bigcodebench"]
    E.TIMEOUT_LIMIT = b["task_limit"]  # the module global untrusted_check reads (240 s by default)
    status, details = E.untrusted_check(job["program"], job["test"], job["entry_point"], b["max_as_limit"],
                                        b["max_data_limit"], b["max_stack_limit"], b["min_time_limit"],
                                        b["gt_time_limit"])
    shown = {str(k): str(v)[-MAX_TRACE:] for k, v in list(details.items())[:20]}
    data = {"bigcodebench": status, "details": shown}
    if status == E.PASS:
        return "passed", None, "", data
    first = next(iter(shown.items()), ("", ""))
    last = [ln for ln in first[1].strip().splitlines() if ln.strip()][-1:] or [""]
    return "failed", f"bigcodebench_{status}", f"{first[0]}: {last[0]}"[:500] if first[0] else "", data


def run(job):
    """In the sandbox's pid 1. A check is `untrusted_check`, which forks the checked process itself.
    The ground truth forks it here, as `trusted_check` starts its child, so the program is an
    ordinary process (one that kills itself dies, as upstream's child does; pid 1 would ignore the
    signal); the child reports, pid 1 waits and leaves no verdict of its own."""
    import os

    if job["format"] == "bigcodebench":
        return check(job)
    pid = os.fork()
    if pid == 0:
        return ground_truth(job)
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    os._exit(0)
