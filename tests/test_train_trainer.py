"""The Trainer side: step-level normalisation across micro-batches, zero-supervision batches,
label-set loading and token-budget batching, and `run_train` end to end with MLflow."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from test_train_loss import VOCAB, tiny_llama

from codeblock.core.io import BadRowError, sha256_file, write_parquet
from codeblock.train.collate import MicroBatchCollator, MicroBatches, token_budget_batches
from codeblock.train.labelset import LabelSet, load_label_set
from codeblock.train.sparse_loss import IGNORE_INDEX, full_ce_sum
from codeblock.train.sparse_trainer import build_trainer


def make_set(n: int, seed: int = 0, zero: tuple[int, ...] = ()) -> LabelSet:
    """n samples of different lengths with very different supervision counts; `zero` rows get none."""
    rng = np.random.default_rng(seed)
    ids, labs = [], []
    for i in range(n):
        L = int(rng.integers(10, 30))
        x = rng.integers(1, VOCAB, L)
        y = np.full(L, IGNORE_INDEX)
        if i not in zero:
            k = 1 if i % 3 == 0 else int(rng.integers(2, L - 1))
            pos = rng.choice(np.arange(1, L), size=k, replace=False)
            y[pos] = x[pos]
        ids.append(x)
        labs.append(y)
    return LabelSet([f"s{i}" for i in range(n)], ids, labs)


def one_step_delta(cfg, tmp_path, data: LabelSet, batches: list[list[int]], grad_accum: int):
    """Parameter change of ONE optimizer step (SGD, lr 1, no clipping): minus the gradient."""
    model = tiny_llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = build_trainer(
        cfg, model, MicroBatches(data, batches), tmp_path / f"out{grad_accum}", pad_token_id=0,
        optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", warmup_steps=0, max_steps=1,
        gradient_accumulation_steps=grad_accum, max_grad_norm=0.0, weight_decay=0.0, save_strategy="no",
        use_cpu=True, bf16=False, disable_tqdm=True,
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}, losses


def reference_grad(data: LabelSet, micro_mean: list[list[int]] | None = None):
    """Gradient of the mean over all supervised tokens (or, to show the difference, the mean of
    per-micro-batch means)."""
    model = tiny_llama()
    coll = MicroBatchCollator(pad_token_id=0)
    groups = micro_mean or [list(range(len(data)))]
    total = 0
    parts = []
    for g in groups:
        b = coll([[{"input_ids": data.input_ids[i], "labels": data.labels[i]} for i in g]])
        s, n = full_ce_sum(model, b["input_ids"], b["attention_mask"], b["labels"])
        parts.append((s, n))
        total += int(n)
    loss = sum(s / n for s, n in parts) / len(parts) if micro_mean else sum(s for s, _ in parts) / total
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_grad_accumulation_1x8_equals_4x2(cfg, tmp_path):
    data = make_set(8)
    counts = [int((y[1:] != IGNORE_INDEX).sum()) for y in data.labels]
    assert min(counts) == 1 and max(counts) > 5  # micro-batch means would weigh tokens unequally
    d8, _ = one_step_delta(cfg, tmp_path, data, [list(range(8))], grad_accum=1)
    d42, _ = one_step_delta(cfg, tmp_path, data, [[0, 1], [2, 3], [4, 5], [6, 7]], grad_accum=4)
    ref = reference_grad(data)
    for name in d8:
        torch.testing.assert_close(d42[name], d8[name], rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(d8[name], ref[name], rtol=0, atol=1e-5, msg=name)
    # the test can fail: averaging per-micro-batch means gives a different gradient
    naive = reference_grad(data, micro_mean=[[0, 1], [2, 3], [4, 5], [6, 7]])
    assert max((naive[n] - ref[n]).abs().max().item() for n in ref) > 1e-3


def test_zero_supervised_micro_batch_adds_nothing(cfg, tmp_path):
    data = make_set(4, seed=1, zero=(2, 3))
    alone, _ = one_step_delta(cfg, tmp_path, data, [[0, 1]], grad_accum=1)
    with_zero, losses = one_step_delta(cfg, tmp_path, data, [[0, 1], [2, 3]], grad_accum=2)
    assert all(np.isfinite(losses))
    for name in alone:
        torch.testing.assert_close(with_zero[name], alone[name], rtol=0, atol=1e-6, msg=name)
    # a whole step with no supervised token: loss 0, no NaN, parameters untouched
    nothing, losses = one_step_delta(cfg, tmp_path, data, [[2, 3]], grad_accum=1)
    assert losses == [0.0]
    assert all(d.abs().max().item() == 0.0 for d in nothing.values())


def test_token_budget_batches_group_lengths_and_respect_budget():
    rng = np.random.default_rng(0)
    lengths = [int(v) for v in rng.integers(5, 200, 300)] + [900]
    batches = token_budget_batches(lengths, batch_tokens=512)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 512 or len(b) == 1
    assert [900 == lengths[b[0]] for b in batches].count(True) == 1  # an over-long sample alone
    capped = token_budget_batches(lengths, batch_tokens=10**6, max_rows=16)
    assert max(len(b) for b in capped) == 16
    assert token_budget_batches(lengths, 512) == batches  # deterministic


def test_load_label_set_drops_unsupervised_and_validates(tmp_path):
    rows = [
        {"id": "a", "input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]},
        {"id": "b", "input_ids": [5, 6, 7, 8], "labels": [-100, -100, -100, -100]},
        {"id": "c", "input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, -100, -100, -100, -100, 10]},  # cut away
        {"id": "d", "input_ids": [5, 6, 7], "labels": [5, -100, 7]},  # label at position 0 is never predicted
    ]
    p = tmp_path / "labels.parquet"
    write_parquet(p, rows)
    ls = load_label_set(p, max_length=5)
    assert ls.ids == ["a", "d"]
    assert ls.stats["dropped_no_supervision"] == 1 and ls.stats["dropped_truncated"] == 1
    assert ls.stats["supervised_tokens"] == 3 and ls.labels[1][0] == IGNORE_INDEX
    bad = [{"id": "x", "input_ids": [5, 6, 7], "labels": [-100, 7, -100]}]  # shifted labels: a bug upstream
    write_parquet(p, bad)
    with pytest.raises(BadRowError, match="differs from input id"):
        load_label_set(p, max_length=16)
    write_parquet(p, [{"id": "x", "input_ids": [5, 6, 7], "labels": [-100, 6]}])
    with pytest.raises(BadRowError, match="row 0"):
        load_label_set(p, max_length=16)


def write_labels(path, n: int = 24, vocab: int = 49152, seed: int = 0, share: float = 0.1):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        L = int(rng.integers(20, 60))
        x = rng.integers(10, vocab, L).astype(np.int32)
        y = np.full(L, IGNORE_INDEX, np.int32)
        if i % 6:  # every 6th sample gets no supervision (dropped)
            pos = rng.choice(np.arange(L // 2, L), size=max(1, int(share * L)), replace=False)
            y[pos] = x[pos]
        rows.append({"id": f"s{i}", "input_ids": x.tolist(), "labels": y.tolist()})
    write_parquet(path, rows)
    return path


def test_run_train_outputs_and_mlflow(cfg, tmp_path, tiny_model_dir):
    import mlflow

    from codeblock.train.trainer import run_train

    cfg.model.name_or_path = tiny_model_dir
    cfg.model.device = "cpu"
    cfg.train.lora_r = 4
    cfg.train.max_steps = 3
    cfg.train.save_steps = 2
    cfg.train.batch_tokens = 256
    labels = write_labels(tmp_path / "labels" / "codeblock" / "labels.parquet")
    res = run_train(cfg, "codeblock")

    run_dir = tmp_path / "runs" / "codeblock"
    info = json.loads((run_dir / "model" / "codeblock_train.json").read_text())
    assert info["labels_sha256"] == sha256_file(labels) and info["kind"] == "lora_adapter"
    assert info["config"]["train"]["lora_r"] == 4
    assert (run_dir / "model" / "adapter_model.safetensors").exists()
    assert (run_dir / "model" / "tokenizer_config.json").exists()
    m = json.loads((run_dir / "train_metrics.json").read_text())
    assert m["steps"] == 3 and m["samples_dropped"] == 4 and m["samples_kept"] == 20
    assert np.isfinite(m["final_loss"]) and m["tokens_per_s"] > 0 and m["supervised_tokens_seen"] > 0
    assert (run_dir / "loss.csv").read_text().splitlines()[0] == "step,loss"
    assert len((run_dir / "loss.csv").read_text().splitlines()) == 4
    assert pq.read_table(labels).num_rows == 24

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    client = mlflow.MlflowClient()
    name = res["registered"]["name"]
    assert name == "codeblock-model-codeblock"
    mv = client.get_model_version_by_alias(name, "candidate")
    run = client.get_run(mv.run_id)
    assert run.data.params["method"] == "codeblock"
    assert len(client.get_metric_history(mv.run_id, "loss")) == 3
    assert len(client.get_metric_history(mv.run_id, "supervised_tokens")) == 3
    assert "tokens_per_s" in run.data.metrics and run.data.metrics["data/dropped"] == 4
    # the registered model loads and generates
    model = mlflow.pyfunc.load_model(f"models:/{name}@candidate")
    out = model.predict(["def add(a, b):"], params={"max_new_tokens": 3})
    assert isinstance(out, list) and len(out) == 1


@pytest.mark.parametrize("mode", ["merge", "full"])
def test_merged_and_full_finetune_save_plain_models(cfg, tmp_path, tiny_model_dir, mode):
    """LoRA merged into the base (equal outputs to base + adapter), and full fine-tuning with
    gradient checkpointing: both give an ordinary safetensors folder that from_pretrained loads."""
    from transformers import AutoModelForCausalLM

    from codeblock.core.models import load_model
    from codeblock.train.trainer import run_train

    cfg.model.name_or_path = tiny_model_dir
    cfg.model.device = "cpu"
    cfg.tracking.enabled = False
    cfg.train.lora_r = 4
    cfg.train.max_steps = 2
    cfg.train.batch_tokens = 256
    cfg.train.lr = 1e-2
    if mode == "merge":
        cfg.train.merge = True
    else:
        cfg.train.finetune = "full"
        cfg.train.gradient_checkpointing = True
    write_labels(tmp_path / "labels" / "codeblock" / "labels.parquet", n=12)
    run_train(cfg, "codeblock")
    model_dir = tmp_path / "runs" / "codeblock" / "model"
    info = json.loads((model_dir / "codeblock_train.json").read_text())
    assert info["kind"] == ("merged" if mode == "merge" else "full")
    assert not (model_dir / "adapter_config.json").exists() and (model_dir / "model.safetensors").exists()
    assert not (model_dir / "training_args.bin").exists()
    tuned = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    x = torch.randint(10, 1000, (1, 16))
    with torch.no_grad():
        out = tuned(x).logits
        assert (out - base(x).logits).abs().max() > 1e-4  # training changed the model
        if mode == "merge":  # merged == base + the adapter of the last checkpoint (same weights)
            ckpt = str(tmp_path / "runs" / "codeblock" / "checkpoints" / "checkpoint-2")
            adapted = load_model(cfg.model, ckpt).eval()
            torch.testing.assert_close(out, adapted(x).logits, rtol=1e-4, atol=1e-4)
