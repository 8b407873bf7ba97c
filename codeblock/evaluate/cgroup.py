"""An aggregate memory limit per sandboxed program: one memory cgroup per executor worker slot.

RLIMIT_AS bounds each process of a program on its own; a program that forks N children could still
use N times the limit. Where this process may create memory cgroups, the executor makes one per
worker slot below its own cgroup, sets its limit to the job's `memory_mb` before each program, and
the sandbox moves the program's first process into it (`sbx_setup.join_cgroup`), so everything the
program forks counts against one limit; past it the kernel's OOM killer ends a process of the
program (the program then fails). Swap is not a way around it (memsw / swap.max).

Found in this order:
- cgroup v2: the process's own cgroup (`0::/path`) has `memory` in `cgroup.subtree_control` and
  is writable (root, or a systemd-delegated user slice).
- cgroup v1: the `memory` hierarchy's mount plus the process's path in it, writable.
- neither (a container without cgroup write access, an unprivileged user without delegation):
  `MemoryCgroups.create` returns None, results record `memory_cgroup: null`, and the documented
  fallback applies: each process has RLIMIT_AS = memory_mb and a program has at most `eval.nproc`
  processes, so a program's memory is bounded by memory_mb x nproc.
Folders are named `codeblock-<pid>-<slot>` and removed (they are empty by then) when the run ends.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    except OSError:
        pass
    return out


def _mounts() -> list[tuple[str, str, str, str]]:
    """(root within the hierarchy, mount point, fs type, super options) of each mount."""
    rows = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            f, r = left.split(), right.split()
            rows.append((f[3], f[4], r[0], r[2] if len(r) > 2 else ""))
    except OSError:
        pass
    return rows


def find_base() -> tuple[str, Path] | None:
    """("v2" | "v1", the writable cgroup folder to create slot cgroups in), or None."""
    own = _own_cgroups()
    for root, point, fstype, _opts in _mounts():
        if fstype == "cgroup2" and "" in own:
            rel = os.path.relpath(own[""], root)
            if rel.startswith(".."):  # our cgroup is not below this mount's root
                continue
            base = Path(point) / rel
            ctl = base / "cgroup.subtree_control"
            try:
                if "memory" in ctl.read_text().split() and os.access(base, os.W_OK):
                    return "v2", base
            except OSError:
                continue
    for root, point, fstype, opts in _mounts():
        if fstype == "cgroup" and "memory" in opts.split(","):
            rel = os.path.relpath(own.get("memory", "/"), root)
            base = Path(point) if rel.startswith("..") else Path(point) / rel
            if not base.is_dir():
                base = Path(point)
            if (base / "memory.limit_in_bytes").exists() and os.access(base, os.W_OK):
                return "v1", base
    return None


class MemoryCgroups:
    """One memory cgroup per worker slot, for the length of one `Executor.run`."""

    def __init__(self, version: str, base: Path, slots: int):
        self.version, self.base = version, base
        self.dirs = []
        self._limit: dict[int, int] = {}
        try:
            for slot in range(slots):
                d = base / f"codeblock-{os.getpid()}-{slot}"
                d.mkdir(exist_ok=True)
                self.dirs.append(d)
        except OSError:
            self.close()
            raise

    @classmethod
    def create(cls, slots: int) -> MemoryCgroups | None:
        found = find_base()
        if found is None:
            return None
        try:
            return cls(*found, slots)
        except OSError as e:
            log.warning("memory cgroups unavailable (%s): each process keeps RLIMIT_AS only", e)
            return None

    def procs_file(self, slot: int) -> str:
        return str(self.dirs[slot] / "cgroup.procs")

    def set_limit(self, slot: int, memory_mb: int) -> None:
        """Set the slot's limit before its next program (no-op when unchanged)."""
        limit = int(memory_mb) << 20
        if self._limit.get(slot) == limit:
            return
        d = self.dirs[slot]
        if self.version == "v2":
            (d / "memory.max").write_text(str(limit))
            if (d / "memory.swap.max").exists():
                (d / "memory.swap.max").write_text("0")
        else:
            # memsw (memory + swap) must stay >= the memory limit: raise it first when growing
            mem, memsw = d / "memory.limit_in_bytes", d / "memory.memsw.limit_in_bytes"
            order = [mem, memsw]
            if memsw.exists() and limit > int(mem.read_text()):
                order.reverse()
            for f in order:
                if f.exists():
                    f.write_text(str(limit))
        self._limit[slot] = limit

    def close(self) -> None:
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError as e:  # a straggler still inside: left for the kernel to report
                log.warning("could not remove cgroup %s: %s", d, e)
        self.dirs = []
