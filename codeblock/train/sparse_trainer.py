"""The transformers Trainer behind `codeblock train`: sparse loss, throughput/MFU logging, arguments.

The loss is the sum of token cross-entropies over the supervised tokens of the whole optimizer
step (all micro-batches, all processes) divided by their number: the Trainer counts the step's
supervised tokens (`num_items_in_batch`, gathered across processes) from the collator's
`shift_labels`, `compute_loss` divides by it and undoes the process-averaging of DDP/FSDP, and a
step with no supervised token gives 0, never NaN. Logits are computed only at supervised
positions (`codeblock.train.sparse_loss.SupervisedHead`).

Each training log adds `supervised_tokens`, `supervised_tokens_seen`, `tokens_per_s` (input
tokens of all processes per second) and, when the peak FLOP/s of the device is known
(`train.peak_tflops`, or guessed from the GPU name), `mfu`: 6 x parameters x tokens/s over the
peak of all processes (the usual dense-transformer estimate; attention's own FLOPs left out).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from codeblock.core import tracking
from codeblock.train.checkpoints import RotateCheckpoints
from codeblock.train.collate import MicroBatchCollator, MicroBatches
from codeblock.train.sparse_loss import SupervisedHead, sparse_ce_sum

# Dense bf16 peak TFLOP/s per device, by a substring of torch.cuda.get_device_name().
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0,
               "RTX 4090": 165.0, "A6000": 155.0, "V100": 125.0}


def peak_flops(cfg) -> float:
    """Peak FLOP/s of one device: train.peak_tflops, else from the GPU's name; 0 when unknown."""
    if cfg.train.peak_tflops > 0:
        return cfg.train.peak_tflops * 1e12
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for k, v in PEAK_TFLOPS.items():
            if k in name:
                return v * 1e12
    return 0.0


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
        # Set by the caller to log MFU: FLOPs per input token (6 x parameters) and one device's peak.
        self.flops_per_token = 0.0
        self.peak_flops = 0.0

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
            if self.flops_per_token and self.peak_flops:
                logs["mfu"] = tokens / dt * self.flops_per_token / (self.peak_flops * self.accelerator.num_processes)
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


class StepLogger(TrainerCallback):
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
        save_total_limit=None,  # rotation: codeblock.train.checkpoints.RotateCheckpoints (exact names only)
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
    trainer.add_callback(RotateCheckpoints(cfg.train.save_total_limit))
    return trainer


def save_final_model(trainer: SparseLossTrainer, output_dir: str | Path, main: bool) -> None:
    """Full weights of the trained model into `output_dir`; every process must call it.

    DDP / one process: the Trainer's save_model. FSDP with sharded checkpoints
    (`fsdp_state_dict_type: SHARDED_STATE_DICT`, configs/accelerate/fsdp.yaml): save_model would
    write nothing, so the full state dict is gathered (accelerate's get_state_dict: FSDP2's
    get_model_state_dict, full and offloaded to CPU) and the main process writes it.
    """
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if trainer.is_fsdp_enabled and plugin is not None and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        state = trainer.accelerator.get_state_dict(trainer.model)
        if main:
            # the gather returns tied parameters (lm_head = embed_tokens) as separate tensors, which
            # save_pretrained no longer recognises as shared: keep one name per parameter, as
            # save_model does (measured on a tied tiny Llama under FSDP2: an extra lm_head.weight)
            for name in tied_aliases(trainer.model):
                state.pop(name, None)
            trainer._save(str(output_dir), state_dict=state)
        return
    trainer.save_model(str(output_dir))


def tied_aliases(model: torch.nn.Module) -> list[str]:
    """Names under which an already-listed parameter appears again (tied weights), in
    `named_parameters` order: the first name of each parameter is kept."""
    first: dict[int, str] = {}
    aliases = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases.append(name)
        else:
            first[id(p)] = name
    return aliases
