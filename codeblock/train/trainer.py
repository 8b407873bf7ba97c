"""Sparse-loss fine-tuning: `codeblock train [--method M] [--fresh | --resume-anyway]`.

Reads `labels_dir/<method>/labels.parquet` (id, input_ids, labels; -100 = not supervised),
validated and converted once to a memory-mapped Arrow file (`codeblock.train.labelset`), and
fine-tunes `model.name_or_path` with transformers' Trainer (+ peft LoRA, or full fine-tuning).
Writes `runs_dir/<method>/`:

    labels.arrow        the validated, truncated label set that training reads lazily
    checkpoints/        Trainer checkpoints; re-running the same command resumes from the last
                        complete one (also after kill -9). Checkpoints made under another
                        result-changing config / label set / model stop the run with the keys
                        that differ (`codeblock.train.checkpoints`); nothing is deleted silently.
    model/              LoRA adapter (or merged / full model) in safetensors + tokenizer +
                        codeblock_train.json (config, label-set sha256, data counts)
    train_metrics.json  flat DVC metrics
    loss.csv            step,loss (DVC plot)

The loss (`codeblock.train.sparse_trainer`) is the supervised-token mean over the whole optimizer
step, all micro-batches and processes. Samples with no supervised token are dropped before
batching and counted. Micro-batches are token-budget, length-grouped
(`codeblock.train.collate`); the Trainer's seeded sampler shuffles them, so order and resume are
deterministic.

Several GPUs: `accelerate launch --config_file configs/accelerate/ddp.yaml -m codeblock.cli train`
(or fsdp.yaml: FSDP2, sharded state dicts); see configs/accelerate/README.md.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import shutil
from pathlib import Path

from codeblock.core import tracking
from codeblock.core.io import atomic_write_text, require_input, sha256_file, write_json
from codeblock.stages import StageContext, StageResult, stage_hash
from codeblock.train.checkpoints import fingerprint, last_complete_checkpoint, prepare_checkpoint_dir
from codeblock.train.collate import MicroBatches, token_budget_batches
from codeblock.train.labelset import open_label_set, prepare_label_set
from codeblock.train.sparse_trainer import (
    StepLogger,
    build_trainer,
    peak_flops,
    prepare_model,
    save_final_model,
    training_arguments,
)

log = logging.getLogger("codeblock.train.trainer")

TRAIN_INFO = "codeblock_train.json"


# ---------------------------------------------------------------------------------------------
# Saving


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


def _train_or_reload(trainer, resume: str | None, max_steps: int):
    """trainer.train(), except from a checkpoint that already reached `max_steps`: transformers
    would run one more step there, so its weights and state are loaded instead."""
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    if resume and max_steps > 0:
        state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        if state.global_step >= max_steps:
            log.info("%s already reached train.max_steps=%d: nothing to train", resume, max_steps)
            trainer._load_from_checkpoint(resume)
            trainer.state = state
            trainer._session_tokens0 = int(state.num_input_tokens_seen)
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            return TrainOutput(state.global_step, losses[-1] if losses else float("nan"), {"train_runtime": 0.0})
    return trainer.train(resume_from_checkpoint=resume)


def vocab_size(model_path: str) -> int:
    """The model's vocabulary size (its config), to check token ids before training starts."""
    from transformers import AutoConfig

    conf = AutoConfig.from_pretrained(model_path)
    return int(getattr(conf.get_text_config(), "vocab_size", 0) or 0)


def run_metrics(trainer, result, stats: dict, n_batches: int, n_trainable: int, world_size: int) -> dict:
    """The run's summary metrics, from the trainer's state and the label set's statistics."""
    history = trainer.state.log_history
    losses = [h for h in history if "loss" in h]
    sup_seen = [h["supervised_tokens_seen"] for h in history if "supervised_tokens_seen" in h]
    runtime = result.metrics.get("train_runtime", 0.0)
    metrics = {
        "final_loss": losses[-1]["loss"] if losses else float("nan"),
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch or 0.0,
        "supervised_tokens": stats["supervised_tokens"],
        "supervised_tokens_seen": sup_seen[-1] if sup_seen else 0,
        "input_tokens": stats["input_tokens"],
        "supervised_share_of_input": stats["supervised_tokens"] / max(stats["input_tokens"], 1),
        "tokens_per_s": (trainer.state.num_input_tokens_seen - trainer._session_tokens0) / max(runtime, 1e-9),
        "runtime_s": runtime,
        "samples_kept": stats["kept"],
        "samples_dropped": stats["dropped"],
        "dropped_no_supervision": stats["dropped_no_supervision"],
        "dropped_truncated": stats["dropped_truncated"],
        "micro_batches": n_batches,
        "trainable_params": n_trainable,
    }
    if trainer.peak_flops:
        metrics["mfu"] = metrics["tokens_per_s"] * trainer.flops_per_token / (trainer.peak_flops * world_size)
    return metrics


def _finish_model_dir(cfg, tmp: Path, tok) -> str:
    """Merge LoRA if asked, add the tokenizer, drop the pickled args; returns the model's kind."""
    kind = "full"
    if cfg.train.finetune == "lora":
        kind = "lora_adapter"
        if cfg.train.merge:
            kind = "merged"
            _merge_adapter(cfg, tmp, tok)
    tok.save_pretrained(tmp)
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in codeblock_train.json
    return kind


def run_train(cfg, method: str | None = None, fresh: bool = False, resume_anyway: bool = False,
              archive_stale: bool = False) -> dict:
    from codeblock.core.models import apply_torch_threads, load_tokenizer, model_identity, resolve_model_path

    if fresh and resume_anyway:
        raise ValueError("--fresh and --resume-anyway exclude each other")
    method = method or cfg.select.method
    labels_path = Path(cfg.paths.labels_dir) / method / "labels.parquet"
    run_dir = Path(cfg.paths.runs_dir) / method
    ckpt_dir, model_dir, arrow = run_dir / "checkpoints", run_dir / "model", run_dir / "labels.arrow"
    require_input(labels_path, "label set", f"codeblock select --method {method}")
    apply_torch_threads(cfg.model)
    labels_sha = sha256_file(labels_path)
    base_resolved = resolve_model_path(cfg.model.name_or_path, cfg.model)
    fp = fingerprint(cfg, model_identity(cfg.model), labels_sha)

    args = training_arguments(cfg, ckpt_dir)
    main = args.process_index == 0
    # The main process validates the labels and applies the checkpoint policy; the others wait.
    with args.main_process_first(local=False, desc="label set and checkpoint folder"):
        if main:
            prepare_label_set(labels_path, arrow, cfg.train.max_length, vocab_size(base_resolved), labels_sha)
            prepare_checkpoint_dir(ckpt_dir, fp, fresh=fresh, resume_anyway=resume_anyway,
                                   archive_stale=archive_stale)
    data = open_label_set(arrow)
    if len(data) == 0:
        raise ValueError(f"{labels_path}: no sample has a supervised token ({data.stats})")
    batches = token_budget_batches(data.lengths, cfg.train.batch_tokens, cfg.train.max_batch_rows)
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
                                callbacks=[StepLogger(tr)], args=args)
        trainer.flops_per_token, trainer.peak_flops = 6.0 * n_total, peak_flops(cfg)
        result = _train_or_reload(trainer, resume, cfg.train.max_steps)

        # Final weights: every process takes part (FSDP gathers), the main one writes.
        tmp = run_dir / ".model.tmp"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        args.distributed_state.wait_for_everyone()
        save_final_model(trainer, tmp, main)
        args.distributed_state.wait_for_everyone()
        outputs = [str(model_dir), str(run_dir / "train_metrics.json"), str(run_dir / "loss.csv")]
        if not main:
            return {"outputs": outputs, "metrics": {}}

        kind = _finish_model_dir(cfg, tmp, tok)
        history = trainer.state.log_history
        metrics = run_metrics(trainer, result, data.stats, len(batches), n_trainable, args.world_size)
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
    parser.add_argument("--fresh", action="store_true",
                        help="remove the existing checkpoint-<step> folders and start at step 0")
    parser.add_argument("--archive-stale", action="store_true",
                        help="checkpoints made under another configuration are moved to checkpoints/stale/ "
                        "and training starts at step 0 (what dvc.yaml uses: DVC reruns train only when its inputs changed)")
    parser.add_argument("--resume-anyway", action="store_true",
                        help="resume from existing checkpoints even though the configuration changed")


def run(cfg, ctx: StageContext) -> StageResult:
    res = run_train(cfg, method=ctx.method, fresh=bool(ctx.options.get("fresh")),
                    resume_anyway=bool(ctx.options.get("resume_anyway")),
                    archive_stale=bool(ctx.options.get("archive_stale")))
    return StageResult.from_dict("train", res, method=ctx.method or cfg.select.method)


def summary(res: StageResult) -> str:
    return json.dumps(res.metrics, indent=1) if res.metrics else ""
