"""Chat-template tokenization shared by scoring, segmentation, selection, training and evaluation.

A pair is laid out as the tokenizer's chat template renders it:
    [prompt tokens: template + user instruction + assistant header][response tokens][suffix tokens]
The three parts are tokenized separately, so every response token has exact character offsets
inside the response string (no guessing across the template boundary), and the same pair always
gives the same ids, whichever stage asks. `response_end` marks one past the last response token
kept; the suffix (end-of-turn token(s)) follows only when the response was not truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

_SENTINEL = "\x00CODEBLOCK_RESPONSE\x00"


@dataclass
class EncodedPair:
    input_ids: list[int]
    response_start: int
    response_end: int
    offsets: list[tuple[int, int]]  # char offsets in `response` of tokens [response_start, response_end)

    @property
    def n_response_tokens(self) -> int:
        return self.response_end - self.response_start


def _template_parts(tokenizer, instruction: str) -> tuple[str, str]:
    """(prompt text up to the response, suffix text after it), rendered by the chat template."""
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}, {"role": "assistant", "content": _SENTINEL}],
            tokenize=False,
        )
        cut = full.find(_SENTINEL)
        if cut < 0:
            raise ValueError("the chat template dropped the assistant message; cannot locate the response")
        return full[:cut], full[cut + len(_SENTINEL):]
    # No template (a base model): a plain instruction/response layout.
    return f"{instruction}\n\n", (tokenizer.eos_token or "")


def encode_prompt(tokenizer, instruction: str) -> list[int]:
    """The prompt for generation: the chat template with the generation prompt appended."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = f"{instruction}\n\n"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _assemble(prompt_ids, resp_ids, resp_offsets, suffix_ids, max_length: int) -> EncodedPair:
    prompt_ids = list(prompt_ids)
    if len(prompt_ids) >= max_length - 1:  # keep room for at least one response token
        prompt_ids = prompt_ids[-(max_length // 2):]
    room = max_length - len(prompt_ids)
    resp_ids = list(resp_ids)
    offsets = [tuple(o) for o in resp_offsets]
    if len(resp_ids) + len(suffix_ids) <= room:
        ids = prompt_ids + resp_ids + list(suffix_ids)
    else:  # truncated: no end-of-turn, the response did not end here
        resp_ids, offsets = resp_ids[:room], offsets[:room]
        ids = prompt_ids + resp_ids
    start = len(prompt_ids)
    return EncodedPair(ids, start, start + len(resp_ids), offsets)


def encode_pair(tokenizer, instruction: str, response: str, max_length: int = 2048) -> EncodedPair:
    return encode_pairs(tokenizer, [(instruction, response)], max_length)[0]


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], max_length: int = 2048) -> list[EncodedPair]:
    """Batch version of `encode_pair` (fast tokenizers encode the batch in Rust, in parallel)."""
    if not pairs:
        return []
    parts = [_template_parts(tokenizer, ins) for ins, _ in pairs]
    prompts = tokenizer([p for p, _ in parts], add_special_tokens=False)["input_ids"]
    suffixes = tokenizer([s for _, s in parts], add_special_tokens=False)["input_ids"]
    resp = tokenizer(
        [r for _, r in pairs], add_special_tokens=False, return_offsets_mapping=True
    )
    return [
        _assemble(prompts[i], resp["input_ids"][i], resp["offset_mapping"][i], suffixes[i], max_length)
        for i in range(len(pairs))
    ]
