"""bigcodebench 0.2.5's own checker, run inside the sandbox.

Two job formats (the pipeline side is `codeblock/evaluate/bcb_plan.py`):
- `bigcodebench`: one candidate program through bigcodebench's `unsafe_execute`, the function
  `untrusted_check` runs in its child process: `safe_environment` (kill / exec / subprocess
  interception), a fresh temporary working directory, its `reliability_guard` (address space,
  data and stack limits in MiB, TZ=UTC, OMP_NUM_THREADS=1, no exit/quit), the program and the
  tests concatenated into ONE module named `__test__` that also holds `sys`, `os` and `environ`,
  only the class `TestCases` loaded, the test run under its `time_limit`. The status is derived
  from the shared state exactly as `untrusted_check` derives it (no report: "timeout"; a test
  failure or error recorded in `details`: "fail").
- `bigcodebench_gt`: the canonical program (trusted) through bigcodebench's `trusted_exec`, as
  `trusted_check` (the ground truth of `bigcodebench.evaluate --check-gt-only`) runs it: the
  reported time is the test suite's, or none when a test failed.

The checked process is a child of the sandbox's pid 1 (see `run`; the executor enforces the
wall-clock limit `untrusted_check` enforces with `join`) and reports itself, so the shared `Value`
becomes a plain holder and the manager dict a plain dict. Standard library only at import time: bigcodebench is
imported inside the job, from the interpreter the fork server runs (eval.bigcodebench_python).
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
    import bigcodebench.eval as E

    b = job["bigcodebench"]
    stat, details = _Shared(E._UNKNOWN), {}
    try:
        E.unsafe_execute(job["entry_point"], job["program"], job["test"], b["timeout"], b["max_as_limit"],
                         b["max_data_limit"], b["max_stack_limit"], stat, details)
    except BaseException:  # untrusted_check's child would die here; what it had recorded still counts
        pass
    status = E._mapping.get(stat.value) or E.TIMEOUT
    if status == E.PASS and details:
        status = E.FAIL
    shown = {str(k): str(v)[-MAX_TRACE:] for k, v in list(details.items())[:20]}
    data = {"bigcodebench": status, "details": shown}
    if status == E.PASS:
        return "passed", None, "", data
    first = next(iter(shown.items()), ("", ""))
    last = [ln for ln in first[1].strip().splitlines() if ln.strip()][-1:] or [""]
    return "failed", f"bigcodebench_{status}", f"{first[0]}: {last[0]}"[:500] if first[0] else "", data


def run(job):
    """In the sandbox's pid 1: fork the checked process, as `untrusted_check` starts its child, so
    the program is an ordinary process (one that kills itself dies, as upstream's child does; pid 1
    would ignore the signal). The child returns and reports; pid 1 waits and leaves no verdict of
    its own (a child that died unreported is "timeout")."""
    import os

    pid = os.fork()
    if pid == 0:
        return ground_truth(job) if job["format"] == "bigcodebench_gt" else check(job)
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    os._exit(0)
