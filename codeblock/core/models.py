"""One resolver for every model the pipeline loads.

`model.name_or_path` may be:
- a local Hugging Face folder (has config.json): used as is;
- a `.gguf` file: converted ONCE to an ordinary HF folder under `model.hf_cache_dir` (keyed by the
  file's sha256) and cached; later calls reuse the folder;
- `tiny-random` (or `tiny-random:<seed>`): a tiny random Llama with the default model's real
  tokenizer and chat template, built in seconds and cached: the smoke profile and tests use it;
- anything else: a hub id, passed to `from_pretrained` (needs the hub, or a filled HF cache).

GGUF note: a model loaded from GGUF refuses `save_pretrained` because transformers marks
it quantized, although its weights are already dequantized floats. Clearing `hf_quantizer` and
`config.quantization_config` gives a folder that reloads with identical outputs (tested).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from codeblock.core.io import MissingInput, sha256_file

DEFAULT_GGUF = "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_MARKER = "codeblock_source.json"


def _is_hf_folder(p: Path) -> bool:
    return p.is_dir() and (p / "config.json").exists()


def _atomic_dir(dest: Path, build) -> Path:
    """Build a folder in a temp dir beside `dest`, then rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        build(tmp)
        if dest.exists():  # another process won the race: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def convert_gguf(gguf_path: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Convert a GGUF file into a cached HF folder; return the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(gguf_path)
    if not src.exists():
        raise MissingInput(src, "GGUF model file", "make setup")
    digest = sha256_file(src)
    dest = Path(cache_dir) / f"{src.stem}-{digest[:12]}"
    if _is_hf_folder(dest):
        return dest

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name, clean_up_tokenization_spaces=False)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / SOURCE_MARKER).write_text(json.dumps({"gguf": str(src), "sha256": digest}, indent=1))

    return _atomic_dir(dest, build)


def build_tiny_random(cache_dir: str | os.PathLike, seed: int = 0, tokenizer_from: str = DEFAULT_GGUF,
                      hidden: int = 64, layers: int = 2) -> Path:
    """A tiny random Llama that shares the default model's tokenizer and chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dest = Path(cache_dir) / f"tiny-random-llama-h{hidden}-l{layers}-s{seed}"
    if _is_hf_folder(dest):
        return dest
    tok_dir = resolve_model_path(tokenizer_from, cache_dir=cache_dir)

    def build(tmp: Path) -> None:
        import torch

        tok = AutoTokenizer.from_pretrained(tok_dir)
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
        LlamaForCausalLM(cfg).save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / SOURCE_MARKER).write_text(json.dumps({"tiny_random": True, "seed": seed}, indent=1))

    return _atomic_dir(dest, build)


def resolve_model_path(name_or_path: str, model_cfg=None, cache_dir: str | os.PathLike | None = None) -> str:
    """Map a configured model reference to something `from_pretrained` can open."""
    cache_dir = cache_dir or (model_cfg.hf_cache_dir if model_cfg is not None else "models/hf")
    if name_or_path.startswith("tiny-random"):
        seed = int(name_or_path.split(":", 1)[1]) if ":" in name_or_path else 0
        return str(build_tiny_random(cache_dir, seed=seed))
    p = Path(name_or_path)
    if p.suffix == ".gguf":
        return str(convert_gguf(p, cache_dir))
    if p.exists():
        if _is_hf_folder(p) or (p / "adapter_config.json").exists():
            return str(p)
        raise FileNotFoundError(f"{p}: neither an HF model folder (config.json) nor a .gguf file")
    if p.is_absolute() or name_or_path.startswith((".", "models/")):
        raise FileNotFoundError(f"{p}: model path does not exist (run the set-up: `make setup`)")
    return name_or_path  # a hub id


def model_identity(model_cfg, name_or_path: str | None = None) -> str:
    """A stable identity for caches: the GGUF/weights hash for local models, the id for hub ones."""
    ref = name_or_path or model_cfg.name_or_path
    path = Path(resolve_model_path(ref, model_cfg))
    if path.exists():
        marker = path / SOURCE_MARKER
        if marker.exists():
            return json.loads(marker.read_text()).get("sha256") or f"{path.name}"
        weights = sorted(path.glob("*.safetensors"))
        if weights:
            st = weights[0].stat()
            return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"
        return str(path.resolve())
    return ref


def resolve_device(model_cfg):
    import torch

    dev = model_cfg.device
    if dev == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(dev)


def resolve_dtype(model_cfg, device=None):
    import torch

    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if model_cfg.dtype != "auto":
        return names[model_cfg.dtype]
    device = device or resolve_device(model_cfg)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def torch_threads(model_cfg) -> int:
    """CPU threads for torch (`model.torch_threads`): n > 0 as given; 0 = half the CPUs this process
    may use (at least 1), which stays fast when other jobs share the machine; -1 = torch's default."""
    n = model_cfg.torch_threads
    if n != 0:
        return n
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // 2)


def apply_torch_threads(model_cfg) -> int:
    """Set torch's intra-op threads from `model.torch_threads` (unless -1); returns the count."""
    import torch

    n = torch_threads(model_cfg)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def load_tokenizer(model_cfg, name_or_path: str | None = None):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path or model_cfg.name_or_path, model_cfg)
    if (Path(path) / "adapter_config.json").exists() and not (Path(path) / "tokenizer_config.json").exists():
        path = resolve_model_path(model_cfg.name_or_path, model_cfg)
    tok = AutoTokenizer.from_pretrained(
        path, trust_remote_code=model_cfg.trust_remote_code, clean_up_tokenization_spaces=False
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(model_cfg, name_or_path: str | None = None, for_training: bool = False):
    """Load a causal LM with dtype and device from config. A PEFT adapter folder is applied on top
    of the configured base model."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path or model_cfg.name_or_path, model_cfg)
    device = resolve_device(model_cfg)
    dtype = resolve_dtype(model_cfg, device)
    adapter = Path(path) / "adapter_config.json"
    if adapter.exists():
        from peft import PeftModel

        base_ref = json.loads(adapter.read_text()).get("base_model_name_or_path") or model_cfg.name_or_path
        if not Path(base_ref).exists() and base_ref != model_cfg.name_or_path:
            base_ref = model_cfg.name_or_path
        base = load_model(model_cfg, base_ref, for_training=for_training)
        model = PeftModel.from_pretrained(base, path, is_trainable=for_training)
        return model
    apply_torch_threads(model_cfg)
    extra = {"attn_implementation": model_cfg.attn_implementation} if model_cfg.attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=model_cfg.trust_remote_code, **extra
    )
    model.to(device)
    if not for_training:
        model.eval()
    return model


def cli(cfg, args) -> int:
    path = resolve_model_path(cfg.model.name_or_path, cfg.model)
    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {cfg.model.name_or_path}\nresolved: {path}\nparams: {n/1e6:.1f}M  dtype: {model.dtype}  "
          f"device: {model.device}\nvocab: {len(tok)}  chat template: {bool(tok.chat_template)}")
    return 0
