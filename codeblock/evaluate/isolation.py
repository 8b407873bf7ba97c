"""Which isolation the sandbox can use here: 'namespaces' (root + unshare), 'userns' (a user
namespace, what a non-root user gets) or 'none'; probed once per process and cached."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

_NS_FLAGS = ["--net", "--pid", "--mount", "--fork", "--mount-proc", "--kill-child"]
_MODE_CACHE: dict[str, str] = {}


def _probe(cmd: list[str]) -> bool:
    try:
        r = subprocess.run(cmd + ["true"], capture_output=True, timeout=20)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def isolation_mode(requested: str = "auto") -> str:
    """'namespaces' (root + unshare), 'userns' (unprivileged user namespaces) or 'none'.
    `requested="userns"` forces the user-namespace mode (also as root: what a non-root user gets)."""
    if requested == "none":
        return "none"
    if requested not in _MODE_CACHE:
        unshare = shutil.which("unshare")
        mode = "none"
        if unshare and sys.platform.startswith("linux"):
            if requested == "userns":
                if not _probe([unshare, "--user", "--map-root-user", *_NS_FLAGS]):
                    raise RuntimeError("eval.isolation=userns but `unshare --user --map-root-user` is not permitted here")
                mode = "userns"
            elif os.geteuid() == 0 and _probe([unshare, *_NS_FLAGS]):
                mode = "namespaces"
            elif _probe([unshare, "--user", "--map-root-user", *_NS_FLAGS]):
                mode = "userns"
        _MODE_CACHE[requested] = mode
    mode = _MODE_CACHE[requested]
    if requested == "namespaces" and mode == "none":
        raise RuntimeError("eval.isolation=namespaces but `unshare --net --pid --mount` is not permitted here")
    return mode


NO_ISOLATION_HELP = (
    "eval.isolation=auto found no way to isolate programs here: `unshare --net --pid --mount` needs root, "
    "or unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1`; on Ubuntu >= 23.10 also "
    "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`; in a container, run it with "
    "--security-opt seccomp=unconfined or --privileged). To run the programs unsandboxed anyway (trusted "
    "code only), set eval.isolation=none explicitly: results and MLflow then say 'unsandboxed'."
)
