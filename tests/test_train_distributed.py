"""Resume after kill -9, and two-process (gloo, CPU) data parallelism through accelerate."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_trainer import write_labels

ROOT = Path(__file__).resolve().parents[1]


def overrides(cfg, tmp_path, runs: str, **train) -> list[str]:
    ov = [f"paths.labels_dir={tmp_path / 'labels'}", f"paths.runs_dir={tmp_path / runs}",
          f"model.name_or_path={cfg.model.name_or_path}", f"model.hf_cache_dir={cfg.model.hf_cache_dir}",
          "model.device=cpu", "tracking.enabled=false", "train.lora_r=4", "train.batch_tokens=128"]
    return ov + [f"train.{k}={v}" for k, v in train.items()]


def cli_cmd(ov: list[str]) -> list[str]:
    return [x for o in ov for x in ("-S", o)]


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "codeblock" / "model" / "adapter_model.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float):
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def run_in_process(ov: list[str]) -> dict:
    from codeblock.core.config import load_config
    from codeblock.train.trainer import run_train

    return run_train(load_config(ROOT / "params.yaml", ov), "codeblock")


@pytest.mark.slow
def test_kill9_then_rerun_resumes_and_matches_uninterrupted(cfg, tmp_path, tiny_model_dir):
    cfg.model.name_or_path = tiny_model_dir
    write_labels(tmp_path / "labels" / "codeblock" / "labels.parquet", n=30)
    # AdamW + LoRA dropout: the optimizer state and the RNG must be restored too
    ov_killed = overrides(cfg, tmp_path, "killed", max_steps=12, save_steps=1, lora_dropout=0.1)
    cmd = [sys.executable, "-m", "codeblock.cli", "train", "--params", str(ROOT / "params.yaml"), *cli_cmd(ov_killed)]
    ckpts = tmp_path / "killed" / "codeblock" / "checkpoints"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (ckpts / "checkpoint-3" / "trainer_state.json").exists():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "killed" / "codeblock" / "model").exists()

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in rerun.stderr

    straight = run_in_process(overrides(cfg, tmp_path, "straight", max_steps=12, save_steps=1, lora_dropout=0.1))
    assert straight["resumed_from"] is None
    assert_same_weights(adapter(tmp_path / "killed"), adapter(tmp_path / "straight"), atol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_accumulation(cfg, tmp_path, tiny_model_dir):
    """2 processes x 1 micro-batch per step == 1 process x 2 accumulated micro-batches: the step's
    supervised-token count is gathered across processes and DDP's averaging is undone."""
    cfg.model.name_or_path = tiny_model_dir
    write_labels(tmp_path / "labels" / "codeblock" / "labels.parquet", n=40)
    common = dict(max_steps=4, save_steps=2, lora_dropout=0.0, optim="sgd", lr=0.5, max_grad_norm=0.0,
                  warmup_ratio=0.0)
    ov2 = overrides(cfg, tmp_path, "ddp", grad_accum=1, **common)
    launch = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
              str(ROOT / "configs/accelerate/cpu_gloo_2proc.yaml"), "--main_process_port", str(free_port()),
              "-m", "codeblock.cli", "train", "--params", str(ROOT / "params.yaml"), *cli_cmd(ov2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(launch, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("samples kept") == 2  # two processes ran
    single = run_in_process(overrides(cfg, tmp_path, "single", grad_accum=2, **common))
    assert single["metrics"]["steps"] == 4
    import json

    m2 = json.loads((tmp_path / "ddp" / "codeblock" / "train_metrics.json").read_text())
    assert m2["supervised_tokens_seen"] == single["metrics"]["supervised_tokens_seen"]
    assert_same_weights(adapter(tmp_path / "ddp"), adapter(tmp_path / "single"), atol=1e-6)
