"""Sparse-loss fine-tuning: `codeblock train [--method M]`.

Reads `labels_dir/<method>/labels.parquet` (id, input_ids, labels; -100 = not supervised) and
fine-tunes `model.name_or_path` with transformers' Trainer (+ peft LoRA, or full fine-tuning).
Writes `runs_dir/<method>/`:

    checkpoints/        Trainer checkpoints; re-running the same command resumes from the last
                        complete one (also after kill -9). A different config / label set / model
                        starts afresh (the stale checkpoints are removed).
    model/              LoRA adapter (or merged / full model) in safetensors + tokenizer +
                        codeblock_train.json (config, label-set sha256, data counts)
    train_metrics.json  flat DVC metrics
    loss.csv            step,loss (DVC plot)

The loss is the sum of token cross-entropies over the supervised tokens of the whole optimizer
step (all micro-batches, all processes) divided by their number: the Trainer counts the step's
supervised tokens (`num_items_in_batch`, gathered across processes) from the collator's
`shift_labels`, `compute_loss` divides by it and undoes the process-averaging of DDP/FSDP, and a
step with no supervised token gives 0, never NaN. Logits are computed only at supervised
positions (`codeblock.train.sparse_loss.SupervisedHead`). Samples with no supervised token are dropped
before batching and counted. Micro-batches are token-budget, length-grouped
(`codeblock.train.collate`); the Trainer's seeded sampler shuffles them, so order and resume are
deterministic.

Several GPUs: `accelerate launch --config_file configs/accelerate/ddp.yaml -m codeblock.cli train`
(or fsdp.yaml); see configs/accelerate/README.md.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from codeblock.core import tracking
from codeblock.core.io import atomic_write_text, sha256_file, write_json
from codeblock.stages import StageContext, StageResult, stage_hash
from codeblock.train.collate import LabelSet, MicroBatchCollator, MicroBatches, load_label_set, token_budget_batches
from codeblock.train.sparse_loss import SupervisedHead, sparse_ce_sum

log = logging.getLogger("codeblock.train.trainer")

FINGERPRINT = "codeblock_fingerprint.json"
TRAIN_INFO = "codeblock_train.json"


# ---------------------------------------------------------------------------------------------
# The trainer


class SparseLossTrainer(Trainer):
    """Trainer whose loss is the supervised-token mean over the whole optimizer step, computed
    from logits at supervised positions only."""

    # compute_loss divides by the step's supervised-token count: already scaled for accumulation.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Makes the Trainer count each step's supervised tokens (num_items_in_batch, from the
        # batches' `shift_labels`, summed over accumulation and gathered across processes).
        self.model_accepts_loss_kwargs = True
        if self.args.n_gpu > 1:
            raise ValueError("torch.nn.DataParallel is not supported: launch one process per GPU with accelerate")
        self.head = SupervisedHead(self.model)
        self._sup_since_log: torch.Tensor | None = None
        # Set at train begin by _SessionStart (after a checkpoint's state is restored).
        self._sup_seen = self._last_log_step = self._last_tokens_seen = self._session_tokens0 = 0
        self._last_log_time = time.perf_counter()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss_sum, n = sparse_ce_sum(model, self.head, inputs["input_ids"], inputs.get("attention_mask"),
                                    inputs["shift_labels"])
        if model.training:
            if self._sup_since_log is None:
                self._sup_since_log = torch.zeros((), dtype=torch.long, device=n.device)
            self._sup_since_log += n.detach()
        if num_items_in_batch is None:
            if model.training:
                raise RuntimeError("the Trainer did not count the step's supervised tokens (num_items_in_batch)")
            loss = loss_sum / n.clamp(min=1)  # evaluation: this batch alone
        else:
            total = torch.as_tensor(num_items_in_batch, device=loss_sum.device).clamp(min=1)
            loss = loss_sum / total
            if self.args.average_tokens_across_devices:
                # The count is global, and DDP / FSDP average gradients over processes: undo that.
                loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training-step log: add supervised tokens and throughput
            now = time.perf_counter()
            sup = self._sup_since_log if self._sup_since_log is not None else torch.zeros((), dtype=torch.long,
                                                                                          device=self.args.device)
            if self.accelerator.num_processes > 1:
                sup = self.accelerator.reduce(sup.clone(), reduction="sum")
            sup = int(sup.item())
            self._sup_since_log = None
            steps = max(self.state.global_step - self._last_log_step, 1)
            tokens = int(self.state.num_input_tokens_seen) - int(self._last_tokens_seen)
            dt = max(now - self._last_log_time, 1e-9)
            self._sup_seen += sup
            logs["supervised_tokens"] = sup / steps
            logs["supervised_tokens_seen"] = self._sup_seen
            logs["tokens_per_s"] = tokens / dt
            self._last_log_time, self._last_log_step = now, self.state.global_step
            self._last_tokens_seen = int(self.state.num_input_tokens_seen)
        super().log(logs, start_time)


class _SessionStart(TrainerCallback):
    """Marks where this (possibly resumed) session starts: step, tokens seen, supervised tokens seen."""

    def __init__(self, trainer: SparseLossTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer
        prev = [h["supervised_tokens_seen"] for h in state.log_history if "supervised_tokens_seen" in h]
        t._sup_seen = int(prev[-1]) if prev else 0
        t._last_log_step = state.global_step
        t._last_tokens_seen = t._session_tokens0 = int(state.num_input_tokens_seen)
        t._last_log_time = time.perf_counter()
        t._sup_since_log = None


class _StepLogger(TrainerCallback):
    """Per-step metrics to MLflow through codeblock.core.tracking (main process only)."""

    def __init__(self, tracker: tracking.Tracker):
        self.tracker = tracker

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            nums = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.tracker.log_metrics(nums, step=state.global_step)


# ---------------------------------------------------------------------------------------------
# Building blocks (used by run_train, the tests and the benchmark)


def use_bf16(cfg, device: torch.device) -> bool:
    p = cfg.train.precision
    if p == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return p == "bf16"


def training_arguments(cfg, output_dir: str | Path, device: str | None = None, **over: Any) -> TrainingArguments:
    t = cfg.train
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ValueError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    use_cpu = (device or cfg.model.device) == "cpu" or not torch.cuda.is_available()
    probe = torch.device("cpu") if use_cpu else torch.device("cuda")
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=t.lr,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=1,  # one token-budget micro-batch per item (codeblock.train.collate)
        gradient_accumulation_steps=t.grad_accum,
        max_grad_norm=t.max_grad_norm,
        weight_decay=t.weight_decay,
        optim=t.optim,
        bf16=use_bf16(cfg, probe),
        seed=t.seed,
        data_seed=t.seed,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        report_to="none",  # MLflow goes through codeblock.core.tracking
        remove_unused_columns=False,
        average_tokens_across_devices=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        dataloader_pin_memory=not use_cpu,
        use_cpu=use_cpu,
        ddp_find_unused_parameters=False,
    )
    if t.gradient_checkpointing:  # newer transformers call it activation checkpointing
        name = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                else "gradient_checkpointing")
        kwargs.update({name: True, f"{name}_kwargs": {"use_reentrant": False}})
    kwargs.update(over)
    return TrainingArguments(**kwargs)


def prepare_model(cfg, device: str | None = None):
    """Load the base model via codeblock.core.models and attach LoRA adapters (or train it all)."""
    from codeblock.core.models import load_model

    t = cfg.train
    mcfg = cfg.model
    over: dict[str, Any] = {}
    if device:
        over["device"] = device
    # Full fine-tuning and fp32 runs keep fp32 master weights (bf16 runs use autocast); a LoRA
    # run may keep the frozen base in the configured dtype (bf16 on a GPU halves its memory).
    if t.finetune == "full" or t.precision == "fp32":
        over["dtype"] = "float32"
    if over:
        mcfg = dataclasses.replace(mcfg, **over)
    from transformers import set_seed

    set_seed(t.seed)  # LoRA initialisation (and anything else random here) is reproducible
    model = load_model(mcfg, for_training=True)
    model.config.use_cache = False
    if t.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                          target_modules=list(t.lora_target_modules), bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model


def build_trainer(cfg, model, dataset: MicroBatches, output_dir: str | Path, *, pad_token_id: int,
                  tokenizer=None, callbacks: list | None = None, args: TrainingArguments | None = None,
                  **arg_overrides: Any) -> SparseLossTrainer:
    args = args or training_arguments(cfg, output_dir, **arg_overrides)
    trainer = SparseLossTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
        data_collator=MicroBatchCollator(pad_token_id=pad_token_id), callbacks=callbacks or [],
    )
    trainer.add_callback(_SessionStart(trainer))
    return trainer


def last_complete_checkpoint(ckpt_dir: str | Path) -> str | None:
    """The newest checkpoint-N whose trainer_state.json (written last) parses."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.glob("checkpoint-*"):
        try:
            step = int(d.name.split("-", 1)[1])
            json.loads((d / "trainer_state.json").read_text())
        except (ValueError, OSError):
            continue
        found.append((step, d))
    return str(max(found)[1]) if found else None


def _prepare_checkpoint_dir(ckpt_dir: Path, fingerprint: dict, fresh: bool) -> None:
    """Keep checkpoints only when they belong to the same config, model and label set; drop
    incomplete ones (a kill -9 while saving)."""
    fp_file = ckpt_dir / FINGERPRINT
    if ckpt_dir.exists():
        old = json.loads(fp_file.read_text()) if fp_file.exists() else None
        if fresh or old != fingerprint:
            if any(ckpt_dir.glob("checkpoint-*")):
                log.warning("%s: checkpoints from another config/label set (or --fresh): starting afresh", ckpt_dir)
            shutil.rmtree(ckpt_dir)
        else:
            good = last_complete_checkpoint(ckpt_dir)
            for d in ckpt_dir.glob("checkpoint-*"):
                if good is None or int(d.name.split("-", 1)[1]) > int(Path(good).name.split("-", 1)[1]):
                    log.warning("%s: incomplete checkpoint removed", d)
                    shutil.rmtree(d, ignore_errors=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json(fp_file, fingerprint)


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Swap a finished folder into place (the previous one is removed only afterwards)."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def registered_model_name(cfg, method: str) -> str:
    return f"{cfg.train.register_name}-{method}"


def _loss_csv(log_history: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "loss"])
    for h in log_history:
        if "loss" in h:
            w.writerow([h["step"], f"{h['loss']:.6f}"])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The stage


def run_train(cfg, method: str | None = None, fresh: bool = False) -> dict:
    from codeblock.core.models import load_tokenizer, model_identity, resolve_model_path

    method = method or cfg.select.method
    labels_path = Path(cfg.paths.labels_dir) / method / "labels.parquet"
    run_dir = Path(cfg.paths.runs_dir) / method
    ckpt_dir, model_dir = run_dir / "checkpoints", run_dir / "model"

    data: LabelSet = load_label_set(labels_path, cfg.train.max_length)
    if len(data) == 0:
        raise ValueError(f"{labels_path}: no sample has a supervised token ({data.stats})")
    batches = token_budget_batches(data.lengths, cfg.train.batch_tokens, cfg.train.max_batch_rows)
    labels_sha = sha256_file(labels_path)
    base_resolved = resolve_model_path(cfg.model.name_or_path, cfg.model)
    fingerprint = {"train": cfg.to_dict()["train"], "model": model_identity(cfg.model),
                   "labels_sha256": labels_sha}

    args = training_arguments(cfg, ckpt_dir)
    main = args.process_index == 0
    with args.main_process_first(local=False, desc="checkpoint folder"):
        if main:
            _prepare_checkpoint_dir(ckpt_dir, fingerprint, fresh)
    resume = last_complete_checkpoint(ckpt_dir)

    tok = load_tokenizer(cfg.model)
    model = prepare_model(cfg, device=str(args.device))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())

    tcfg = cfg if main else dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False))
    params = {k: v for k, v in cfg.flat().items() if k.startswith(("train.", "model."))}
    params.update({"method": method, "labels_sha256": labels_sha, "resumed_from": resume or "",
                   "world_size": args.world_size})
    with tracking.stage_run(tcfg, f"train/{method}", params=params, tags={"codeblock.method": method}) as tr:
        tr.log_metrics({f"data/{k}": v for k, v in data.stats.items()} |
                       {"data/micro_batches": len(batches), "trainable_params": n_trainable,
                        "total_params": n_total})
        log.info("train %s: %d samples kept, %d dropped (%d with no supervision, %d truncated away), "
                 "%d micro-batches, %s%s", method, data.stats["kept"], data.stats["dropped"],
                 data.stats["dropped_no_supervision"], data.stats["dropped_truncated"], len(batches),
                 cfg.train.finetune, f", resuming from {resume}" if resume else "")
        # No tokenizer in the checkpoints (resume does not need it): it is saved with the final model.
        trainer = build_trainer(cfg, model, MicroBatches(data, batches), ckpt_dir, pad_token_id=tok.pad_token_id,
                                callbacks=[_StepLogger(tr)], args=args)
        result = trainer.train(resume_from_checkpoint=resume)

        # Final weights: every process calls save_model (FSDP gathers), the main one writes.
        tmp = run_dir / ".model.tmp"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        args.distributed_state.wait_for_everyone()
        trainer.save_model(str(tmp))
        args.distributed_state.wait_for_everyone()
        outputs = [str(model_dir), str(run_dir / "train_metrics.json"), str(run_dir / "loss.csv")]
        if not main:
            return {"outputs": outputs, "metrics": {}}

        kind = "full"
        if cfg.train.finetune == "lora":
            kind = "lora_adapter"
            if cfg.train.merge:
                kind = "merged"
                _merge_adapter(cfg, tmp, tok)
        tok.save_pretrained(tmp)
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in codeblock_train.json
        history = trainer.state.log_history
        losses = [h for h in history if "loss" in h]
        sup_seen = [h["supervised_tokens_seen"] for h in history if "supervised_tokens_seen" in h]
        metrics = {
            "final_loss": losses[-1]["loss"] if losses else float("nan"),
            "train_loss": result.training_loss,
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch or 0.0,
            "supervised_tokens": data.stats["supervised_tokens"],
            "supervised_tokens_seen": sup_seen[-1] if sup_seen else 0,
            "input_tokens": data.stats["input_tokens"],
            "supervised_share_of_input": data.stats["supervised_tokens"] / max(data.stats["input_tokens"], 1),
            "tokens_per_s": (trainer.state.num_input_tokens_seen - trainer._session_tokens0)
            / max(result.metrics.get("train_runtime", 0.0), 1e-9),
            "runtime_s": result.metrics.get("train_runtime", 0.0),
            "samples_kept": data.stats["kept"],
            "samples_dropped": data.stats["dropped"],
            "dropped_no_supervision": data.stats["dropped_no_supervision"],
            "dropped_truncated": data.stats["dropped_truncated"],
            "micro_batches": len(batches),
            "trainable_params": n_trainable,
        }
        info = {
            "method": method, "kind": kind, "base_model": cfg.model.name_or_path, "base_model_resolved": base_resolved,
            "labels": str(labels_path), "labels_sha256": labels_sha,
            "config": {"train": cfg.to_dict()["train"], "model": cfg.to_dict()["model"]},
            "config_hash": stage_hash(cfg, "train"), "data": data.stats,
            "global_step": trainer.state.global_step, "git_commit": tracking.git_commit(), "metrics": metrics,
        }
        write_json(tmp / TRAIN_INFO, info)
        _replace_dir(tmp, model_dir)
        write_json(run_dir / "train_metrics.json", metrics)
        atomic_write_text(run_dir / "loss.csv", _loss_csv(history))

        tr.log_metrics({f"final/{k}": v for k, v in metrics.items()})
        tr.log_artifact(run_dir / "loss.csv")
        tr.log_artifact(run_dir / "train_metrics.json")
        registered = {}
        if cfg.train.log_model:
            registered = tracking.log_model_dir(tr, model_dir, registered_model_name(cfg, method),
                                                aliases=("candidate",))
    return {"outputs": outputs, "metrics": metrics, "model_dir": str(model_dir), "registered": registered,
            "resumed_from": resume}


def _merge_adapter(cfg, adapter_dir: Path, tok) -> None:
    """Replace the adapter in `adapter_dir` by the merged full model (on CPU, fp32)."""
    from codeblock.core.models import load_model

    mcfg = dataclasses.replace(cfg.model, device="cpu", dtype="float32")
    merged = load_model(mcfg, str(adapter_dir)).merge_and_unload()
    out = adapter_dir.with_name(adapter_dir.name + ".merged")
    shutil.rmtree(out, ignore_errors=True)
    merged.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(adapter_dir)
    os.replace(out, adapter_dir)


def add_args(parser) -> None:
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start afresh")


def run(cfg, ctx: StageContext) -> StageResult:
    res = run_train(cfg, method=ctx.method, fresh=bool(ctx.options.get("fresh")))
    return StageResult.from_dict("train", res, method=ctx.method or cfg.select.method)


def summary(res: StageResult) -> str:
    return json.dumps(res.metrics, indent=1) if res.metrics else ""
