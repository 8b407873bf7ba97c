"""Process-tree walk over /proc, shared by the fork server and the pipeline-side executor."""

import os
import signal


def children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    """`pid` and every descendant still attached to it, parents before children."""
    seen, stack = [], [pid]
    while stack:
        p = stack.pop()
        seen.append(p)
        stack.extend(children(p))
    return seen


def kill_tree(pid, top_down=True):
    """SIGKILL a process tree. Top-down: a namespace init takes its whole namespace with it."""
    procs = tree(pid)
    for p in procs if top_down else reversed(procs):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
