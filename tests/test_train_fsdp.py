"""FSDP2 through accelerate and the Trainer, on two CPU processes (gloo): sharded checkpoints,
resume from them, the gathered final model, and equality with one process.

accelerate ignores its FSDP plugin on CPU; `fsdp_cpu_main.py` (next to this file) lets the
torchrun-started CPU processes take accelerate's FSDP2 path, which torch's `fully_shard` runs on
gloo. The accelerate config is the one in configs/accelerate/fsdp.yaml with two processes and
`use_cpu: true`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_train_distributed import assert_same_weights, cli_cmd, free_port, overrides, run_in_process
from test_train_trainer import write_labels

ROOT = Path(__file__).resolve().parents[1]
COMMON = dict(finetune="full", max_steps=4, save_steps=2, optim="sgd", lr=0.5, max_grad_norm=0.0,
              warmup_ratio=0.0)


def cpu_fsdp_config(tmp_path: Path) -> Path:
    conf = yaml.safe_load((ROOT / "configs/accelerate/fsdp.yaml").read_text())
    conf.update(num_processes=2, use_cpu=True, gpu_ids=None, main_process_ip="127.0.0.1",
                main_process_port=free_port())
    conf = {k: v for k, v in conf.items() if v is not None}
    path = tmp_path / "cpu_fsdp2.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def launch_fsdp(tmp_path: Path, ov: list[str]) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(cpu_fsdp_config(tmp_path)),
           str(ROOT / "tests" / "fsdp_cpu_main.py"), "train", "--params", str(ROOT / "params.yaml"), *cli_cmd(ov)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-12000:]
    return r


def full_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "codeblock" / "model" / "model.safetensors")


@pytest.mark.slow
def test_fsdp2_two_cpu_processes_shard_checkpoints_resume_and_equal_one_process(cfg, tmp_path, tiny_model_dir):
    cfg.model.name_or_path = tiny_model_dir
    write_labels(tmp_path / "labels" / "codeblock" / "labels.parquet", n=40)
    ov = overrides(cfg, tmp_path, "fsdp", grad_accum=1, **COMMON)
    first = launch_fsdp(tmp_path, ov)
    assert first.stderr.count("samples kept") == 2  # two processes ran

    ckpts = tmp_path / "fsdp" / "codeblock" / "checkpoints"
    # sharded: one torch.distributed.checkpoint file per process, no full state dict
    shards = sorted(p.name for p in (ckpts / "checkpoint-2").rglob("*.distcp"))
    assert len(shards) >= 2 and any("__1_" in s for s in shards), sorted(
        str(p.relative_to(ckpts)) for p in (ckpts / "checkpoint-2").rglob("*"))
    assert not list((ckpts / "checkpoint-2").glob("model*.safetensors"))

    # the gathered final model equals one process accumulating the two micro-batches
    single = run_in_process(overrides(cfg, tmp_path, "single", grad_accum=2, **COMMON))
    assert single["metrics"]["steps"] == 4
    fsdp_w, single_w = full_weights(tmp_path / "fsdp"), full_weights(tmp_path / "single")
    assert_same_weights(fsdp_w, single_w, atol=1e-6)
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert any(not torch.equal(fsdp_w[k], base[k]) for k in base if k in fsdp_w)  # it trained

    # resume from the sharded checkpoint-2 (as after a crash between steps 2 and 4): same weights
    shutil.rmtree(ckpts / "checkpoint-4")
    shutil.rmtree(tmp_path / "fsdp" / "codeblock" / "model")
    again = launch_fsdp(tmp_path, ov)
    assert "resuming from" in again.stderr and "checkpoint-2" in again.stderr
    assert_same_weights(full_weights(tmp_path / "fsdp"), single_w, atol=1e-6)


@pytest.mark.parametrize("tied", [True, False])
def test_tied_aliases_names_the_second_name_of_a_shared_parameter(tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    from codeblock.train.sparse_trainer import tied_aliases

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied))
    assert tied_aliases(model) == (["lm_head.weight"] if tied else [])
