"""GPU check: train-step time and peak memory (sparse 2% vs full labels), scoring and generation
throughput, on randomly initialised models with Qwen2.5-Coder-0.5B / 1.5B shapes.

    bash benchmarks/gpu_check.sh                      # one GPU, both shapes, < 10 minutes
    bash benchmarks/gpu_check.sh --device cpu --tiny  # the same code path in seconds (CI, tests)

Needs only torch, transformers, peft (and accelerate/pyarrow, unused here); downloads nothing:
time and memory do not depend on the weights, so random init with the real shapes measures what a
real checkpoint would. From this repository it imports only `codeblock.train.sparse_loss` (torch
only), so the timed sparse step is the trainer's own (logits only at supervised positions).

Measured per shape:
- train: one optimizer step (forward, backward, AdamW) of LoRA (r=64, every projection, as in
  params.yaml) on a batch of `--batch` x `--seq` tokens whose second half is the response, with
  (a) every response token supervised, through the usual full-logits cross-entropy, and (b) 2%
  of them supervised, through SupervisedHead. Median seconds per step after warm-up, tokens/s,
  and torch.cuda.max_memory_allocated (on CPU: not measured).
- score: the score stage's computation (teacher-forced forward, fp32 log-softmax of the response
  positions, gather of the targets) under no_grad: tokens/s and MFU.
- generate: greedy `generate` of `--new-tokens` tokens for `--gen-batch` prompts: new tokens/s.
MFU = achieved FLOP/s / the device's dense bf16 peak; FLOPs per token = 2 x (parameters without
the input embedding) + 2 x layers x context x hidden (causal attention, forward only). The peak is
looked up from the GPU name (H100/H200/A100/L40S/L4/A10G...) or given with --peak-tflops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from codeblock.train.sparse_loss import IGNORE_INDEX, SupervisedHead, full_ce_sum, shift_labels, sparse_ce_sum  # noqa: E402

# Qwen2.5-Coder-0.5B / 1.5B (config.json of the Instruct checkpoints); "tiny" keeps the same
# architecture at toy size for CPU tests.
SHAPES = {
    "qwen2.5-coder-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                               num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-coder-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                               num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "tiny": dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
               "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
               "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_tflops(device: str, given: float) -> float | None:
    if given:
        return given
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # the most specific name first
        if key in name:
            return PEAK_TFLOPS[key]
    return None


def build(shape: str, device: str, dtype: torch.dtype, lora: bool):
    """A random-init model of a SHAPES entry, or the real checkpoint when `shape` is a folder."""
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    if shape in SHAPES:
        cfg = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, rope_theta=1e6, use_cache=False)
        with torch.device(device):  # initialise on the device: seconds, not a minute of CPU init for 1.5B
            model = Qwen2ForCausalLM(cfg).to(dtype=dtype)
    else:  # a local HF folder (e.g. the converted offline GGUF): real weights, same measurements
        model = AutoModelForCausalLM.from_pretrained(shape, dtype=dtype).to(device)
        model.config.use_cache = False
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS,
                                                 task_type="CAUSAL_LM"))
    return model


def flops_per_token(model, context: int) -> float:
    """Forward FLOPs per token: 2 x weights touched (lm_head included, input embedding not) + attention."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    c = base.config
    n = sum(p.numel() for p in base.parameters()) - base.get_input_embeddings().weight.numel()
    if c.tie_word_embeddings:
        n += base.get_input_embeddings().weight.numel()  # the tied lm_head still multiplies
    return 2.0 * n + 2.0 * c.num_hidden_layers * context * c.hidden_size


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


CPU_SECONDS: list[float] = []  # process CPU seconds of the last _timed call (median), for CPU runs


def _timed(fn, device: str, warmup: int, steps: int) -> tuple[float, float | None]:
    """Median seconds of fn() and the peak GPU memory (MiB) over the timed calls. Also records the
    median process CPU time (all threads): on a shared CPU, tokens per CPU-second x cores is what a
    dedicated machine would do, where the wall time depends on the neighbours."""
    for _ in range(warmup):
        fn()
    times, cpu, peak = [], [], None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    CPU_SECONDS[:] = [statistics.median(cpu)]
    return statistics.median(times), peak


def batch(vocab: int, n: int, seq: int, device: str, share: float, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (n, seq), generator=g)
    full = ids.clone()
    full[:, : seq // 2] = IGNORE_INDEX  # the prompt half is never supervised
    sparse = full.clone()
    sparse[torch.rand(full.shape, generator=g) >= share] = IGNORE_INDEX
    return ids.to(device), full.to(device), sparse.to(device)


def check_train(shape: str, a, device: str, dtype: torch.dtype, peak: float | None) -> list[dict]:
    model = build(shape, device, dtype, lora=True)
    model.train()
    head = SupervisedHead(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids, full, sparse = batch(model.config.vocab_size, a.batch, a.seq, device, a.share)
    attn = torch.ones_like(ids)
    shifted = shift_labels(sparse)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=dtype == torch.bfloat16)

    def step(kind: str):
        def run():
            opt.zero_grad(set_to_none=True)
            with autocast:
                s, n = sparse_ce_sum(model, head, ids, attn, shifted) if kind == "sparse" else \
                    full_ce_sum(model, ids, attn, full)
            (s / n.clamp(min=1)).backward()
            opt.step()
        return run

    rows = []
    for kind, labels in (("full", full), ("sparse", sparse)):
        sec, peak = _timed(step(kind), device, a.warmup, a.steps)
        sup = int(shift_labels(labels).ne(IGNORE_INDEX).sum())
        rows.append({"shape": shape, "check": f"train {kind}", "supervised_tokens": sup, "step_s": sec,
                     "tokens_per_s": ids.numel() / sec, "peak_mib": peak, "cpu_s": CPU_SECONDS[0]})
    return rows


def check_score_and_generate(shape: str, a, device: str, dtype: torch.dtype, peak: float | None) -> list[dict]:
    model = build(shape, device, dtype, lora=False)
    model.eval()
    ids, _, _ = batch(model.config.vocab_size, a.batch, a.seq, device, a.share, seed=2)
    start = a.seq // 2

    @torch.no_grad()
    def score():
        logits = model(input_ids=ids).logits[:, start - 1 : -1].float()
        return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, start:, None]).squeeze(-1)

    sec, mem = _timed(score, device, a.warmup, a.steps)
    tps = ids.numel() / sec
    flops = flops_per_token(model, a.seq / 2)  # mean causal context of a token: half the sequence
    rows = [{"shape": shape, "check": "score", "tokens_per_s": tps, "step_s": sec, "peak_mib": mem,
             "mfu": tps * flops / (peak * 1e12) if peak else None, "cpu_s": CPU_SECONDS[0]}]

    prompts = ids[: a.gen_batch, : a.prompt_len]

    @torch.no_grad()
    def generate():
        model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=a.new_tokens,
                       min_new_tokens=a.new_tokens, do_sample=False, use_cache=True, pad_token_id=0)

    model.config.use_cache = True
    sec, mem = _timed(generate, device, 1, max(1, a.steps // 2))
    tps = prompts.shape[0] * a.new_tokens / sec
    rows.append({"shape": shape, "check": f"generate (batch {prompts.shape[0]})", "tokens_per_s": tps, "step_s": sec,
                 "peak_mib": mem, "cpu_s": CPU_SECONDS[0],
                 "mfu": tps * flops_per_token(model, a.prompt_len + a.new_tokens / 2) / (peak * 1e12) if peak else None})
    return rows


def table(rows: list[dict], device: str) -> str:
    lines = [f"| shape | check | tokens/s | s/step | peak MiB | MFU | ({device}) |", "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        note = f"{r['supervised_tokens']} supervised" if "supervised_tokens" in r else ""
        lines.append(f"| {r['shape']} | {r['check']} | {r['tokens_per_s']:.0f} | {r['step_s']:.3f} | {peak} | {mfu} | "
                     f"{note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="toy shapes (CPU tests)")
    ap.add_argument("--shapes", default="", help="comma-separated shape names or local HF model folders "
                    "(default: both Qwen shapes, or tiny)")
    ap.add_argument("--batch", type=int, default=0, help="sequences per step (default 8 on GPU, 2 on CPU)")
    ap.add_argument("--seq", type=int, default=0, help="tokens per sequence (default 2048 on GPU, 128 on CPU)")
    ap.add_argument("--share", type=float, default=0.02, help="supervised share of response tokens (sparse)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--gen-batch", type=int, default=0, help="generation batch (default 32 on GPU, 2 on CPU)")
    ap.add_argument("--prompt-len", type=int, default=0, help="generation prompt tokens (default 256 / 16)")
    ap.add_argument("--new-tokens", type=int, default=0, help="generated tokens (default 256 / 8)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: from the GPU name)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="", help="also write the rows as JSON here")
    a = ap.parse_args(argv)
    gpu = a.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no GPU (use --device cpu)")
    a.batch = a.batch or (8 if gpu else 2)
    a.seq = a.seq or (2048 if gpu else 128)
    a.gen_batch = a.gen_batch or (32 if gpu else 2)
    a.prompt_len = a.prompt_len or (256 if gpu else 16)
    a.new_tokens = a.new_tokens or (256 if gpu else 8)
    shapes = [s for s in a.shapes.split(",") if s] or (["tiny"] if a.tiny else ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
    for s in shapes:
        if s not in SHAPES and not (Path(s) / "config.json").is_file():
            ap.error(f"unknown shape {s!r}; shapes: {', '.join(SHAPES)}")
    dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float32
    peak = peak_tflops(a.device, a.peak_tflops)
    name = torch.cuda.get_device_name(torch.device(a.device)) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    if a.threads:
        torch.set_num_threads(a.threads)
    name = name if gpu else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, {dtype}, torch {torch.__version__}, peak {peak or '-'} TFLOP/s; batch {a.batch} x {a.seq}, "
          f"sparse share {a.share}", flush=True)
    rows: list[dict] = []
    t0 = time.time()
    for s in shapes:
        label = s if s in SHAPES else Path(s).name
        for check in (check_train, check_score_and_generate):
            new = [{**r, "shape": label} for r in check(s, a, a.device, dtype, peak)]
            rows += new
            for r in new:  # as soon as measured: a run cut short by the time limit still reports
                print(json.dumps(r), flush=True)
        if gpu:
            torch.cuda.empty_cache()
        print(f"{label}: done at {time.time() - t0:.0f} s", flush=True)
    print(table(rows, name))
    for s in dict.fromkeys(r["shape"] for r in rows):
        tr = {r["check"]: r for r in rows if r["shape"] == s and r["check"].startswith("train")}
        ratio = tr["train sparse"]["step_s"] / tr["train full"]["step_s"]
        mem = ""
        if tr["train full"]["peak_mib"]:
            mem = f", peak memory sparse/full {tr['train sparse']['peak_mib'] / tr['train full']['peak_mib']:.2f}"
        print(f"{s}: step time sparse/full {ratio:.2f}{mem}")
    if a.out:
        Path(a.out).write_text(json.dumps({"device": name, "dtype": str(dtype), "args": vars(a), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
