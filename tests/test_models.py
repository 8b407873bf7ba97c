import json
from pathlib import Path

import pytest
import torch

from codeblock.core.models import (
    load_model,
    load_tokenizer,
    model_identity,
    resolve_dtype,
    resolve_model_path,
)
from codeblock.core.params import ModelConfig
from codeblock.core.tokenize import encode_pair, encode_pairs, encode_prompt

ROOT = Path(__file__).resolve().parents[1]
GGUF = ROOT / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_gguf_conversion_reloads_with_identical_outputs(tmp_path):
    """The real default model: GGUF -> HF folder, then the folder gives the same logits as the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codeblock.core.models import convert_gguf

    folder = convert_gguf(GGUF, tmp_path)
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert json.loads((folder / "codeblock_source.json").read_text())["sha256"].startswith(folder.name[-12:])
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    # cached: a second call returns the same folder without reconverting
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert convert_gguf(GGUF, tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime == mtime

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("def fib(n):\n    return", return_tensors="pt").input_ids
    direct = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name).eval()
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, converted(ids).logits)
    gguf_tok = AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    text = "x = 'ünïcødé' \t\r\n  # done"
    assert gguf_tok(text).input_ids == tok(text).input_ids
    assert tok.chat_template


def test_resolver_kinds(tmp_path, default_model_dir):
    cfg = ModelConfig(name_or_path=str(GGUF), hf_cache_dir=str(ROOT / "models/hf"))
    assert resolve_model_path(cfg.name_or_path, cfg) == default_model_dir  # cached conversion
    assert resolve_model_path(default_model_dir, cfg) == default_model_dir  # an HF folder as is
    assert resolve_model_path("Qwen/Qwen2.5-Coder-1.5B-Instruct", cfg) == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    with pytest.raises(FileNotFoundError, match="GGUF model file not found; make it with `make setup`"):
        resolve_model_path("models/nope.gguf", cfg)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path("models/nope", cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither an HF model folder"):
        resolve_model_path(str(tmp_path / "empty"), cfg)


def test_tiny_random_model_uses_real_tokenizer(tiny_model_dir, tokenizer):
    cfg = ModelConfig(name_or_path="tiny-random", hf_cache_dir=str(ROOT / "models/hf"), device="cpu")
    model = load_model(cfg)
    tok = load_tokenizer(cfg)
    assert tok.get_vocab() == tokenizer.get_vocab()
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert model.dtype == torch.float32 and not model.training
    ids = torch.tensor([encode_prompt(tok, "hello")])
    with torch.no_grad():
        assert model(ids).logits.shape == (1, ids.shape[1], len(tok))
    assert model_identity(cfg) == model_identity(cfg)


def test_dtype_and_device_from_config():
    cfg = ModelConfig(dtype="auto", device="cpu")
    assert resolve_dtype(cfg) == torch.float32
    assert resolve_dtype(ModelConfig(dtype="bfloat16", device="cpu")) == torch.bfloat16


def test_adapter_folder_loads_on_base(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    cfg = ModelConfig(name_or_path=tiny_model_dir, device="cpu")
    loaded = load_model(cfg, str(tmp_path / "adapter"))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, peft_model.eval()(ids).logits, atol=1e-5)
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        assert not torch.allclose(loaded(ids).logits, plain(ids).logits, atol=1e-5)


@pytest.mark.parametrize("response", [
    "Plain prose only.",
    "Intro é ü 中文\n```python\ndef f(x):\r\n\treturn x  # ünï\n```\n",
    "```python\nprint('a')\n```",
])
def test_encode_pair_offsets_are_exact(tokenizer, response):
    enc = encode_pair(tokenizer, "Do it", response, max_length=2048)
    resp_ids = enc.input_ids[enc.response_start:enc.response_end]
    assert len(resp_ids) == len(enc.offsets)
    # the offsets are ordered and cover the response; a character split over several byte-level
    # tokens (ü is two tokens here) gives each of them that character's whole span
    assert enc.offsets[0][0] == 0 and enc.offsets[-1][1] == len(response)
    covered = set()
    for (s0, e0), (s1, _) in zip(enc.offsets, enc.offsets[1:] + [(len(response), 0)]):
        assert s0 <= s1 and e0 > s0
        covered.update(range(s0, e0))
    assert covered == set(range(len(response)))
    assert tokenizer.decode(resp_ids) == response
    # the prompt is the chat template's generation prompt, and the end-of-turn token follows
    assert enc.input_ids[:enc.response_start] == encode_prompt(tokenizer, "Do it")
    assert enc.response_end < len(enc.input_ids)
    assert enc.input_ids[enc.response_end] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_encode_truncation_and_batch_equivalence(tokenizer):
    long = "word " * 3000
    enc = encode_pair(tokenizer, "Say words", long, max_length=128)
    assert len(enc.input_ids) == 128 and enc.response_end == 128
    pairs = [("a", "b c"), ("Write x", long), ("é", "```python\nx=1\n```")]
    assert encode_pairs(tokenizer, pairs, 256) == [encode_pair(tokenizer, i, r, 256) for i, r in pairs]


def test_backend_fast_path_equals_the_tokenizer_call(tokenizer):
    """`_encode_texts` asks the Rust backend directly; the wrapper's own call is the oracle, on
    code, non-ASCII, whitespace runs, special-token text and the empty string."""
    from codeblock.core.tokenize import _encode_texts

    texts = ["def f(x):\n    return x  # ü\n", "é\u3042 \t\n\n  ", "", "<|im_end|> literal", "word " * 50]
    assert tokenizer.backend_tokenizer.truncation is None  # so the fast path is the one tested
    ids, offs = _encode_texts(tokenizer, texts, offsets=True)
    ref = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert ids == ref["input_ids"]
    assert [[tuple(o) for o in row] for row in offs] == [[tuple(o) for o in row] for row in ref["offset_mapping"]]
