"""The interpreter the sandbox's fork servers run, seen from outside: its paths, whether other
users can reach it, and how many processes the user already has (for RLIMIT_NPROC)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _site_dirs() -> list[str]:
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]


_RUNTIME_CACHE: dict[str, list[str]] = {}


def runtime_of(python: str) -> list[str]:
    """prefix, base prefix and site-packages of the interpreter the fork servers run (another
    venv's, e.g. BigCodeBench's evaluation environment, is asked once)."""
    if python == sys.executable:
        return [sys.prefix, sys.base_prefix, *_site_dirs()]
    if python not in _RUNTIME_CACHE:
        code = ("import json, os, site, sys; print(json.dumps([sys.prefix, sys.base_prefix] + "
                "[p for p in site.getsitepackages() if os.path.isdir(p)]))")
        r = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"sandbox interpreter {python} does not run: {r.stderr.strip()[-500:]}")
        _RUNTIME_CACHE[python] = json.loads(r.stdout)
    return _RUNTIME_CACHE[python]


def world_readable_runtime() -> bool:
    """Can every user reach this interpreter (no folder above it closed to others)?"""
    for p in (sys.base_prefix, sys.prefix):
        parts = os.path.realpath(p).strip("/").split("/")
        for i in range(1, len(parts) + 1):
            if not os.stat("/" + "/".join(parts[:i])).st_mode & 0o001:
                return False
    return True


def user_process_count() -> int:
    """Processes of the real user now (RLIMIT_NPROC counts them all in user-namespace mode)."""
    uid, n = os.getuid(), 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n
