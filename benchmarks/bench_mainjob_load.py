"""Main-job wall time vs `model.torch_threads`, alone and next to a competing CPU load.

    .venv/bin/python benchmarks/bench_mainjob_load.py [--threads -1 0] [--load 2] [--methods M ...] [--keep DIR]

Each run is the whole main job (`python -m flows.pipeline --params params.yaml`, what `make run`
starts) in a fresh clone of this repository's HEAD, so no stage output or cache is reused. The
clone borrows this checkout's virtual environment and its offline assets (`data/raw`,
`models/smollm2`, `models/minilm`, and the converted model in `models/hf`, so the one-time GGUF
conversion is not timed); MLflow and Prefect write inside the clone. For each value of
`--threads` (-1 = torch's default, every core: the behaviour before the setting existed; 0 = the
documented default, half the CPUs) it runs once alone and once while `--load` busy-looping
processes compete for the CPUs. OMP_NUM_THREADS/MKL_NUM_THREADS are removed from the environment
so torch's own default applies to -1. `--methods codeblock` runs the job for one method (the
default, both methods of params.yaml, runs the model stages twice and takes ~22 min alone on 2
cores). Prints a table of wall minutes and the loaded/alone ratio. Run it on an otherwise idle
machine: the four runs take one to three hours on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BORROWED = (".venv", "data/raw", "models/smollm2", "models/minilm", "models/hf")


def make_clone(work: Path, tag: str) -> Path:
    dest = work / f"clone-{tag}"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    for rel in BORROWED:
        src = ROOT / rel
        if not src.exists():
            raise SystemExit(f"{src}: missing; run `make setup` (and `make run` once, for models/hf) first")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).symlink_to(src, target_is_directory=True)
    return dest


def run_job(clone: Path, threads: int, methods: list[str], log: Path) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env["PREFECT_HOME"] = str(clone / ".prefect")
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "flows.pipeline", "--params", "params.yaml",
           "-S", f"model.torch_threads={threads}", *(["--methods", *methods] if methods else [])]
    t0 = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"main job failed (rc {rc}, threads {threads}); log: {log}")
    return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[-1, 0])
    ap.add_argument("--load", type=int, default=2, help="busy-looping processes of the competing load")
    ap.add_argument("--methods", nargs="*", default=None, help="default: pipeline.methods of params.yaml")
    ap.add_argument("--loaded-first", action="store_true", help="run the loaded run before the one alone")
    ap.add_argument("--keep", type=Path, default=None, help="keep clones and logs here (default: a temp dir)")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="mainjob-load-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"main job (methods: {args.methods or 'params.yaml'}), {os.cpu_count()} CPU(s), competing load: "
          f"{args.load} busy process(es); logs in {work}", flush=True)
    rows = []
    try:
        for t in args.threads:
            times = []
            for load in ((args.load, 0) if args.loaded_first else (0, args.load)):
                tag = f"t{t}-load{load}"
                clone = make_clone(work, tag)
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
                try:
                    times.append(run_job(clone, t, args.methods, work / f"{tag}.log"))
                finally:
                    for h in hogs:
                        h.kill()
                        h.wait()
                print(f"  torch_threads={t} load={load}: {times[-1] / 60:.1f} min", flush=True)
            rows.append((t, *(times[::-1] if args.loaded_first else times)))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'torch_threads':>13s} {'alone min':>10s} {'loaded min':>11s} {'ratio':>6s}")
    for t, alone, loaded in rows:
        print(f"{t:13d} {alone / 60:10.1f} {loaded / 60:11.1f} {loaded / alone:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
