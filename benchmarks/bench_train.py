"""Training-step time and peak memory: sparse (2%) labels vs full-token labels, same model and batch.

    .venv/bin/python benchmarks/bench_train.py                     # default model (SmolLM2-135M), CPU
    .venv/bin/python benchmarks/bench_train.py --model qwen2.5-0.5b-shape --device cuda --batch 8 --seq 1024

Variants, same model and batch, interleaved step by step in one process (fair under a noisy CPU):
    full            all response tokens supervised; the usual full B x T x V logits + cross-entropy
    sparse          `--share` of the response tokens supervised; logits only there (SupervisedHead)
    sparse_fulllogs the same sparse labels through the full-logits path (isolates the head's saving)
One step = forward, backward, AdamW step (LoRA or full fine-tuning, as configured). Time is the
median over `--steps` rounds after `--warmup` rounds. Memory per step: torch.cuda.max_memory_allocated
(reset before each step) on a GPU; on CPU the peak RSS of the step (Linux VmHWM, reset before each
step through /proc/self/clear_refs; torch's CPU allocator is invisible to tracemalloc), in total
and above the RSS just before the step. Prints sparse/full ratios.
`qwen2.5-0.5b-shape` builds a randomly initialised model with Qwen2.5-0.5B's shapes (time and
memory do not depend on the weights), for machines without the checkpoint.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("full", "sparse", "sparse_fulllogs")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5": reset the peak RSS (VmHWM), Linux >= 4.0
        fh.write("5")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(args, cfg):
    import torch

    from codeblock.train.sparse_trainer import prepare_model

    if args.model == "qwen2.5-0.5b-shape":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        c = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                        tie_word_embeddings=True, rope_theta=1e6)
        dtype = torch.bfloat16 if args.device == "cuda" and cfg.train.finetune == "lora" else torch.float32
        model = Qwen2ForCausalLM(c).to(dtype=dtype, device=args.device)
        model.config.use_cache = False
        if cfg.train.finetune == "lora":
            from peft import LoraConfig, get_peft_model

            t = cfg.train
            model = get_peft_model(model, LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                                                     target_modules=list(t.lora_target_modules),
                                                     task_type="CAUSAL_LM"))
        return model
    if args.model:
        cfg.model.name_or_path = args.model
    return prepare_model(cfg, device=args.device)


def run(args) -> dict[str, dict]:
    import torch

    from codeblock.core.config import load_config
    from codeblock.train.sparse_loss import IGNORE_INDEX, SupervisedHead, full_ce_sum, shift_labels, sparse_ce_sum

    cfg = load_config(ROOT / "params.yaml", args.set)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = _load(args, cfg)
    model.train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    head = SupervisedHead(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    vocab = model.config.vocab_size

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, vocab, (args.batch, args.seq), generator=g)
    full = ids.clone()
    full[:, : args.prompt] = IGNORE_INDEX
    sparse = full.clone()
    sparse[torch.rand(sparse.shape, generator=g) >= args.share] = IGNORE_INDEX
    ids, attn = ids.to(args.device), torch.ones_like(ids).to(args.device)
    labels = {"full": full.to(args.device), "sparse": sparse.to(args.device), "sparse_fulllogs": sparse.to(args.device)}
    shifted = {k: shift_labels(v) for k, v in labels.items()}
    cuda = args.device.startswith("cuda")
    use_bf16 = cuda and torch.cuda.is_bf16_supported()

    def step(variant: str) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16, enabled=use_bf16):
            if variant == "sparse":
                s, n = sparse_ce_sum(model, head, ids, attn, shifted[variant])
            else:
                s, n = full_ce_sum(model, ids, attn, labels[variant])
        (s / n.clamp(min=1)).backward()
        opt.step()

    res = {v: {"variant": v, "times": [], "peak_mb": 0.0, "peak_above_mb": 0.0,
               "supervised": int(shifted[v].ne(IGNORE_INDEX).sum()), "tokens": int(ids.numel())} for v in VARIANTS}
    for rnd in range(args.warmup + args.steps):
        for v in VARIANTS:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated() / 2**20
            else:
                base = _rss_mb()
                _reset_peak_rss()
            t0 = time.perf_counter()
            step(v)
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb()
            if rnd >= args.warmup:
                r = res[v]
                r["times"].append(dt)
                r["peak_mb"] = max(r["peak_mb"], peak)
                r["peak_above_mb"] = max(r["peak_above_mb"], peak - base)
    for r in res.values():
        r["step_s"] = statistics.median(r.pop("times"))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="model ref (default: params.yaml model), or qwen2.5-0.5b-shape")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--prompt", type=int, default=64, help="leading prompt tokens (never supervised)")
    ap.add_argument("--share", type=float, default=0.02, help="supervised share of response tokens (sparse)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("-S", "--set", action="append", default=[], help="params override, e.g. train.finetune=full")
    args = ap.parse_args(argv)

    rows = run(args)
    model = args.model or "params.yaml model"
    print(f"bench_train: {model} on {args.device}, batch {args.batch} x {args.seq}, "
          f"sparse share {args.share:.1%} of response tokens, {args.steps} timed steps")
    print(f"{'variant':16s} {'supervised':>10s} {'step s':>8s} {'peak MB':>9s} {'peak-before MB':>15s}")
    for v, r in rows.items():
        print(f"{v:16s} {r['supervised']:10d} {r['step_s']:8.3f} {r['peak_mb']:9.0f} {r['peak_above_mb']:15.0f}")
    f, s = rows["full"], rows["sparse"]
    print(f"ratio sparse/full: step time {s['step_s'] / f['step_s']:.3f}x, peak memory {s['peak_mb'] / f['peak_mb']:.3f}x, "
          f"peak above the pre-step memory {s['peak_above_mb'] / max(f['peak_above_mb'], 1e-9):.3f}x")
    sf = rows["sparse_fulllogs"]
    print(f"ratio sparse/sparse_fulllogs (the head alone): step time {s['step_s'] / sf['step_s']:.3f}x, "
          f"peak memory {s['peak_mb'] / sf['peak_mb']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
