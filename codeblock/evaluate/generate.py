"""Generation for the benchmarks: prompts, stop rules, decoding settings, the backends.

Backends: transformers (CPU or GPU, device and dtype from `cfg.model`, left padding for batched
decoding) and vLLM when it is installed (`eval.backend: vllm`). Instruct prompts go through the
model's chat template (`codeblock.core.tokenize.encode_prompt`); completion prompts are raw text.
Which prompts are generated, in which batches and by which rank, and the cache of generations
(`cache_path` is its key: model identity, benchmark dataset sha256, decoding settings, prompt
format, backend) are in `codeblock.evaluate.generations`.

Several processes (`torchrun` / `accelerate launch`): each rank builds its own backend on its own
GPU (transformers: `cuda:LOCAL_RANK`; vLLM: one engine per rank, which sees only that GPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from codeblock.evaluate.registry import LoadedBenchmark, Problem
from codeblock.evaluate.sanitize import COMPLETION_STOPS, closed_fence_end, cut_at_stops, fence_closed

log = logging.getLogger(__name__)
GEN_VERSION = "gen-3"  # gen-2: evalplus's prompt, prefill, stops; gen-3: bigcodebench's for BigCodeBench

# evalplus 0.3.1's codegen for chat models (run_codegen's defaults): the user turn is the instruction
# and the task prompt in a fence; the assistant turn is prefilled with the response sentence and an
# open ```python fence; generation stops at evalplus's EOS strings or the closing fence.
EVALPLUS_STYLE = ("humaneval_plus", "mbpp_plus")
EVALPLUS_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a "
                        "markdown code block:")
EVALPLUS_RESPONSE = ("Below is a Python script with a self-contained function that solves the problem and passes "
                     "corresponding tests:")


def decoding_settings(cfg) -> dict[str, Any]:
    e = cfg.eval
    greedy = e.temperature <= 0.0
    return {"n_samples": 1 if greedy else e.n_samples, "temperature": 0.0 if greedy else e.temperature,
            "top_p": 1.0 if greedy else e.top_p, "max_new_tokens": e.max_new_tokens, "backend": e.backend,
            "batch_size": e.batch_size, "version": GEN_VERSION}


def prompt_format(cfg, loaded: LoadedBenchmark) -> str:
    return cfg.eval.prompt_format or loaded.spec.prompt_format


def cache_path(cfg, loaded: LoadedBenchmark, model_id: str) -> Path:
    d = decoding_settings(cfg)
    d = {k: v for k, v in d.items() if k != "batch_size"}  # batching does not change greedy outputs
    key = json.dumps({"model": model_id, "bench": loaded.spec.name, "data": loaded.sha256, "decoding": d,
                      "format": prompt_format(cfg, loaded)}, sort_keys=True)
    h = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cfg.paths.reports_dir) / "generations" / loaded.spec.name / f"{h}.jsonl"


# bigcodebench 0.2.5's codegen for chat models is the same scheme with its own helper and EOS list
# (its instruct split: instruction prefix, newline, stripped `instruct_prompt`; prefilled answer)
BCB_STYLE = ("bigcodebench_full", "bigcodebench_hard")


def evalplus_stops() -> list[str]:
    from evalplus.provider.utility import EOS

    return [*EOS, "\n```\n"]


def bigcodebench_stops() -> list[str]:
    from bigcodebench.provider.utility import EOS

    return [*EOS, "\n```\n"]  # its HF provider adds the closing fence when the prefill opens one


PREFILL_STOPS = {"evalplus": evalplus_stops, "bigcodebench": bigcodebench_stops}


def prompt_ids(tokenizer, problem: Problem, fmt: str) -> tuple[list[int], str]:
    """(token ids given to the model, stop rule): HumanEval+/MBPP+ instruct -> evalplus's own
    `make_raw_chat_prompt` (chat template, prefilled answer); BigCodeBench instruct (official
    schema) -> bigcodebench's own `make_raw_chat_prompt`; other instruct -> the chat template via
    `codeblock.core.tokenize.encode_prompt`; completion -> the raw code prompt."""
    from codeblock.core.tokenize import encode_prompt

    has_template = bool(getattr(tokenizer, "chat_template", None))
    if fmt == "instruct" and problem.benchmark in BCB_STYLE and has_template and "instruct_prompt" in problem.extras:
        from bigcodebench.provider.utility import make_raw_chat_prompt as bcb_chat_prompt

        from codeblock.evaluate.registry import BCB_INSTRUCTION, BCB_RESPONSE

        text = bcb_chat_prompt(problem.extras["instruct_prompt"], "full", "instruct", BCB_INSTRUCTION, BCB_RESPONSE,
                               tokenizer)
        return tokenizer.encode(text), "bigcodebench"  # its HF provider encodes with the defaults too

    if fmt == "instruct" and problem.benchmark in EVALPLUS_STYLE and has_template:
        from evalplus.provider.utility import make_raw_chat_prompt

        task = problem.extras.get("prompt") or problem.completion_prompt
        text = make_raw_chat_prompt(task.strip() + "\n", EVALPLUS_INSTRUCTION, EVALPLUS_RESPONSE, tokenizer)
        return tokenizer.encode(text), "evalplus"  # evalplus encodes with the tokenizer's defaults
    if fmt == "completion":
        text = problem.completion_prompt or problem.prompt
        return tokenizer(text, add_special_tokens=False)["input_ids"], "completion"
    return encode_prompt(tokenizer, problem.prompt), "instruct"


def is_done(text: str, rule: str) -> bool:
    if rule in PREFILL_STOPS:
        return any(s in text for s in PREFILL_STOPS[rule]())
    if rule == "completion":
        return cut_at_stops(text, COMPLETION_STOPS) != text
    return fence_closed(text)


def finalize(text: str, rule: str) -> str:
    if rule in PREFILL_STOPS:  # as both HF providers: cut at the first stop (at most 10000 chars), tabs -> 4 spaces
        cut = min([10000] + [text.index(s) for s in PREFILL_STOPS[rule]() if s in text])
        return text[:cut].replace("\t", "    ")
    if rule == "completion":
        return cut_at_stops(text, COMPLETION_STOPS)
    end = closed_fence_end(text)  # cut right after the first closed block
    return text if end is None else text[:end].rstrip("\r")


class TransformersBackend:
    whole_share = False  # generate plan batch by plan batch (the batches fix greedy outputs)

    def __init__(self, cfg, model_path: str | None, tokenizer=None):
        from codeblock.core.models import load_model, load_tokenizer

        self.cfg = cfg  # CPU threads: model.torch_threads, applied by load_model
        self.tokenizer = tokenizer or load_tokenizer(cfg.model, model_path)
        self.tokenizer.padding_side = "left"
        self.model = load_model(cfg.model, model_path)

    def generate(self, prompts: list[list[int]], rule: str, n: int, temperature: float, top_p: float,
                 max_new_tokens: int) -> list[list[str]]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok = self.tokenizer
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        enc = {"input_ids": ids, "attention_mask": mask}
        start = width

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                texts = tok.batch_decode(input_ids[:, start:], skip_special_tokens=True)
                return torch.tensor([is_done(t, rule) for t in texts], device=input_ids.device)

        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad,
                                  "stopping_criteria": StoppingCriteriaList([Stop()])}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, num_return_sequences=n)
        else:
            kwargs.update(do_sample=False, num_return_sequences=1)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
        texts = tok.batch_decode(out[:, start:], skip_special_tokens=True)
        per = n if temperature > 0 else 1
        return [[finalize(t, rule) for t in texts[i * per:(i + 1) * per]] for i in range(len(prompts))]


# set by torchrun / accelerate launch; a vLLM engine that saw them would join the launcher's group
LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@contextlib.contextmanager
def engine_env(local_rank: int, world: int):
    """The environment a vLLM engine of one data-parallel rank starts in: only this rank's GPU
    visible, none of the launcher's rank variables, the engine in a spawned process of its own (it
    must not inherit this process's gloo group). The launcher variables come back afterwards."""
    if world <= 1:
        yield
        return
    saved = {k: os.environ.pop(k) for k in LAUNCHER_ENV if k in os.environ}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [g for g in visible.split(",") if g.strip()] if visible else None
    if gpus is not None and local_rank >= len(gpus):
        raise ValueError(f"vLLM rank with LOCAL_RANK={local_rank}: CUDA_VISIBLE_DEVICES={visible!r} has "
                         f"{len(gpus)} GPU(s); launch at most one process per GPU")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[local_rank] if gpus is not None else str(local_rank)
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    try:
        yield
    finally:
        os.environ.update(saved)


class VLLMBackend:  # pragma: no cover - needs vLLM and a GPU (tests/test_eval_vllm.py where both exist)
    whole_share = True  # one call per benchmark share: vLLM schedules its own batches

    def __init__(self, cfg, model_path: str | None, tokenizer=None, local_rank: int = 0, world: int = 1):
        from vllm import LLM

        from codeblock.core.models import load_tokenizer, resolve_model_path

        path = resolve_model_path(model_path or cfg.model.name_or_path, cfg.model)
        if (Path(path) / "adapter_config.json").exists():
            raise ValueError(f"{path}: vLLM backend needs a merged model (train.merge: true) or eval.backend=transformers")
        self.tokenizer = tokenizer or load_tokenizer(cfg.model, model_path)
        with engine_env(local_rank, world):
            self.llm = LLM(model=path, trust_remote_code=cfg.model.trust_remote_code, dtype=cfg.model.dtype)

    def generate(self, prompts, rule, n, temperature, top_p, max_new_tokens):
        from vllm import SamplingParams

        stops = COMPLETION_STOPS if rule == "completion" else PREFILL_STOPS[rule]() if rule in PREFILL_STOPS else None
        sp = SamplingParams(n=n if temperature > 0 else 1, temperature=temperature, top_p=top_p if temperature > 0
                            else 1.0, max_tokens=max_new_tokens, stop=stops)
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], sp)
        return [[finalize(c.text, rule) for c in o.outputs] for o in outs]


def make_backend(cfg, model_path: str | None, tokenizer=None, ranks=None):
    """The configured backend for this rank (`ranks`: `codeblock.core.ranks.Ranks`, one process if None)."""
    local_rank, world = (ranks.local_rank, ranks.world) if ranks is not None else (0, 1)
    if cfg.eval.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            log.warning("eval.backend=vllm but vLLM is not installed; using transformers")
        else:
            return VLLMBackend(cfg, model_path, tokenizer, local_rank, world)
    return TransformersBackend(cfg, model_path, tokenizer)
