"""A throw-away copy of this repository for end-to-end tests (DVC, Prefect deployments).

The copy holds what a fresh clone holds after the set-up: the files git would commit (tracked and
untracked-but-not-ignored, so an uncommitted working tree is tested as it is) plus the raw assets
that the set-up fetches and DVC tracks (data/raw, models/smollm2, models/minilm), committed in a
new git repo. Subprocesses run the copy's code (PYTHONPATH) with this virtualenv's tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ("data/raw", "models/smollm2", "models/minilm")
BIN = Path(sys.executable).parent


def _git_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def make_repo_copy(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for rel in _git_files():
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for rel in ASSETS:
        if (ROOT / rel).exists():
            shutil.copytree(ROOT / rel, dest / rel, dirs_exist_ok=True)
    # Reuse the tiny random model if it is cached (it is rebuilt identically otherwise).
    for cached in (ROOT / "models" / "hf").glob("tiny-random-*"):
        shutil.copytree(cached, dest / "models" / "hf" / cached.name, dirs_exist_ok=True)
    env = clean_env(dest)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-q", "-m", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def clean_env(repo: Path, **extra: str) -> dict[str, str]:
    """Environment for subprocesses in the copy: this venv first on PATH, the copy's code on
    PYTHONPATH, no inherited MLflow/Prefect/parent-run settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "CODEBLOCK_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "ci"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "ci@localhost"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.update(extra)
    return env


def run(cmd: list[str], repo: Path, env: dict[str, str], timeout: float = 600, check: bool = True):
    res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}")
    return res
