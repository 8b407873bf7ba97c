"""Generation for the benchmarks: batched greedy / sampled decoding, stop rules, a generation cache.

Backends: transformers (CPU or GPU, device and dtype from `cfg.model`, left padding for batched
decoding) and vLLM when it is installed (`eval.backend: vllm`). Instruct prompts go through the
model's chat template (`codeblock.core.tokenize.encode_prompt`); completion prompts are raw text.

Cache: `<reports_dir>/generations/<benchmark>/<key>.jsonl`, one line per task
`{"task_id", "samples": [raw text, ...]}`, where key hashes (model identity, benchmark dataset
sha256, decoding settings, prompt format, backend). Lines are appended per batch, so an interrupted
run resumes where it stopped, and evaluation re-runs without generating again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codeblock.evaluate.registry import LoadedBenchmark, Problem
from codeblock.evaluate.sanitize import COMPLETION_STOPS, closed_fence_end, cut_at_stops, fence_closed

log = logging.getLogger(__name__)
GEN_VERSION = "gen-2"  # gen-2: evalplus's instruct prompt, prefill and stops for HumanEval+/MBPP+

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


def read_cache(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                out[str(row["task_id"])] = list(row["samples"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by an interruption: that task is generated again
    return out


def evalplus_stops() -> list[str]:
    from evalplus.provider.utility import EOS

    return [*EOS, "\n```\n"]


def prompt_ids(tokenizer, problem: Problem, fmt: str) -> tuple[list[int], str]:
    """(token ids given to the model, stop rule): HumanEval+/MBPP+ instruct -> evalplus's own
    `make_raw_chat_prompt` (chat template, prefilled answer); other instruct -> the chat template
    via `codeblock.core.tokenize.encode_prompt`; completion -> the raw code prompt."""
    from codeblock.core.tokenize import encode_prompt

    if fmt == "instruct" and problem.benchmark in EVALPLUS_STYLE and getattr(tokenizer, "chat_template", None):
        from evalplus.provider.utility import make_raw_chat_prompt

        task = problem.extras.get("prompt") or problem.completion_prompt
        text = make_raw_chat_prompt(task.strip() + "\n", EVALPLUS_INSTRUCTION, EVALPLUS_RESPONSE, tokenizer)
        return tokenizer.encode(text), "evalplus"  # evalplus encodes with the tokenizer's defaults
    if fmt == "completion":
        text = problem.completion_prompt or problem.prompt
        return tokenizer(text, add_special_tokens=False)["input_ids"], "completion"
    return encode_prompt(tokenizer, problem.prompt), "instruct"


def is_done(text: str, rule: str) -> bool:
    if rule == "evalplus":
        return any(s in text for s in evalplus_stops())
    if rule == "completion":
        return cut_at_stops(text, COMPLETION_STOPS) != text
    return fence_closed(text)


def finalize(text: str, rule: str) -> str:
    if rule == "evalplus":  # as evalplus's HF provider: cut at the first stop (at most 10000 chars), tabs -> 4 spaces
        cut = min([10000] + [text.index(s) for s in evalplus_stops() if s in text])
        return text[:cut].replace("\t", "    ")
    if rule == "completion":
        return cut_at_stops(text, COMPLETION_STOPS)
    end = closed_fence_end(text)  # cut right after the first closed block
    return text if end is None else text[:end].rstrip("\r")


class TransformersBackend:
    def __init__(self, cfg, model_path: str | None):
        from codeblock.core.models import load_model, load_tokenizer

        self.cfg = cfg
        if cfg.eval.torch_threads > 0:
            import torch

            torch.set_num_threads(cfg.eval.torch_threads)
        self.tokenizer = load_tokenizer(cfg.model, model_path)
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


class VLLMBackend:  # pragma: no cover - needs vLLM and a GPU
    def __init__(self, cfg, model_path: str | None):
        from vllm import LLM

        from codeblock.core.models import load_tokenizer, resolve_model_path

        path = resolve_model_path(model_path or cfg.model.name_or_path, cfg.model)
        if (Path(path) / "adapter_config.json").exists():
            raise ValueError("vLLM backend: merge the LoRA adapter first (train.merge: true) or use transformers")
        self.tokenizer = load_tokenizer(cfg.model, model_path)
        self.llm = LLM(model=path, trust_remote_code=cfg.model.trust_remote_code)

    def generate(self, prompts, rule, n, temperature, top_p, max_new_tokens):
        from vllm import SamplingParams

        stops = COMPLETION_STOPS if rule == "completion" else evalplus_stops() if rule == "evalplus" else None
        sp = SamplingParams(n=n if temperature > 0 else 1, temperature=temperature, top_p=top_p if temperature > 0
                            else 1.0, max_tokens=max_new_tokens, stop=stops)
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], sp)
        return [[finalize(c.text, rule) for c in o.outputs] for o in outs]


def make_backend(cfg, model_path: str | None):
    if cfg.eval.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            log.warning("eval.backend=vllm but vLLM is not installed; using transformers")
        else:
            return VLLMBackend(cfg, model_path)
    return TransformersBackend(cfg, model_path)


def generate_benchmark(cfg, loaded: LoadedBenchmark, problems: list[Problem], model_id: str,
                       backend_factory: Callable[[], Any], progress: bool = True) -> tuple[dict[str, list[str]], Path]:
    """Samples per task_id for `problems`, from the cache where present; the backend is built only
    when something is missing."""
    from tqdm import tqdm

    path = cache_path(cfg, loaded, model_id)
    cached = read_cache(path) if cfg.eval.generations_cache else {}
    todo = [p for p in problems if p.task_id not in cached]
    if todo:
        backend = backend_factory()
        d = decoding_settings(cfg)
        fmt = prompt_format(cfg, loaded)
        items = [(p, *prompt_ids(backend.tokenizer, p, fmt)) for p in todo]
        items.sort(key=lambda x: len(x[1]))  # similar lengths per batch: less padding
        path.parent.mkdir(parents=True, exist_ok=True)
        bs = max(1, cfg.eval.batch_size)
        with open(path, "a", encoding="utf-8") as fh, tqdm(total=len(items), desc=f"generate {loaded.spec.name}",
                                                          disable=not progress, unit="task") as bar:
            for i in range(0, len(items), bs):
                chunk = items[i:i + bs]
                rule = chunk[0][2]
                outs = backend.generate([c[1] for c in chunk], rule, d["n_samples"], d["temperature"], d["top_p"],
                                        d["max_new_tokens"])
                for (p, _, _), samples in zip(chunk, outs):
                    cached[p.task_id] = samples
                    fh.write(json.dumps({"task_id": p.task_id, "samples": samples}) + "\n")
                fh.flush()
                bar.update(len(chunk))
    return {p.task_id: cached[p.task_id] for p in problems}, path
