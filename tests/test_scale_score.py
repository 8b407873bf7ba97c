"""Sharded scoring: two CPU processes (gloo, through `accelerate launch`) give the scores of one
process, and a run interrupted under one number of ranks resumes under another."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_score import peaked_model_dir, scfg, write_filtered  # noqa: F401 - fixtures

from codeblock.core.io import read_parquet_metadata
from codeblock.select.score import run_score
from codeblock.select.score_cache import load_scores

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(cfg) -> subprocess.CompletedProcess:
    ov = {"paths.filtered": cfg.paths.filtered, "paths.scores_dir": cfg.paths.scores_dir,
          "model.name_or_path": cfg.model.name_or_path, "model.hf_cache_dir": cfg.model.hf_cache_dir,
          "model.device": "cpu", "model.torch_threads": 1, "tracking.enabled": "false",
          "score.shard_size": cfg.score.shard_size, "score.batch_tokens": cfg.score.batch_tokens}
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(ROOT / "configs/accelerate/cpu_gloo_2proc.yaml"), "--main_process_port", str(free_port()),
           "-m", "codeblock.cli", "score", "--no-progress", "--params", str(ROOT / "params.yaml"),
           *[x for k, v in ov.items() for x in ("-S", f"{k}={v}")]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow  # ~50 s on 2 cores: two fresh processes import torch and transformers
def test_two_processes_resume_one_process_run_and_score_the_same(scfg):  # noqa: F811
    scfg.score.shard_size = 1  # 5 samples -> 5 shards
    one = run_score(scfg, progress=False)
    expected = load_scores(scfg)
    folder = Path(one["outputs"][0])
    for k in (0, 2, 3):  # an interrupted one-process run: three shards never written
        (folder / f"shard-0000{k}.parquet").unlink()
    (folder / "index.json").unlink()

    r = launch_two(scfg)
    assert r.returncode == 0, r.stderr[-3000:]
    index = json.loads((folder / "index.json").read_text())
    assert index["shards"] == [f"shard-0000{k}.parquet" for k in range(5)]
    # the three missing shards were dealt round-robin to the two ranks; the others were kept
    written_by = {k: read_parquet_metadata(folder / f"shard-0000{k}.parquet")["rank"] for k in range(5)}
    assert written_by == {0: 0, 1: 0, 2: 1, 3: 0, 4: 0}
    got = load_scores(scfg)
    assert got.keys() == expected.keys()
    for id_, e in expected.items():
        assert got[id_]["input_ids"].tolist() == e["input_ids"].tolist()
        np.testing.assert_allclose(got[id_]["gce"], e["gce"], rtol=0, atol=1e-6)
    # and a two-process run resumes under one process: only the missing shard is computed
    (folder / "shard-00002.parquet").unlink()
    again = run_score(scfg, progress=False)["metrics"]
    assert again["shards_cached"] == 4 and again["samples_scored"] == 1
