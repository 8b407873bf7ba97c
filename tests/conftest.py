"""Shared fixtures: a config whose artefacts live in tmp_path, the real default tokenizer, and a
tiny random model that uses it (built once per session, in seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def cfg(tmp_path):
    """params.yaml with every output path under tmp_path, MLflow in a tmp SQLite store."""
    from codeblock.core.config import load_config

    c = load_config(ROOT / "params.yaml")
    c.paths.raw_dir = str(ROOT / "data" / "raw")
    for name in ("pool", "filtered", "filter_report", "segments"):
        setattr(c.paths, name, str(tmp_path / Path(getattr(c.paths, name)).relative_to("data")))
    for name in ("scores_dir", "labels_dir", "runs_dir", "reports_dir"):
        setattr(c.paths, name, str(tmp_path / Path(getattr(c.paths, name)).name))
    c.paths.data_dir = str(tmp_path)
    c.model.name_or_path = str(ROOT / c.model.name_or_path)
    c.model.hf_cache_dir = str(ROOT / c.model.hf_cache_dir)
    c.tracking.tracking_uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    c.tracking.artifact_dir = str(tmp_path / "mlartifacts")
    c.tracking.log_system_metrics = False
    return c


@pytest.fixture(scope="session")
def default_model_dir() -> str:
    """The default model converted from its GGUF file (cached in models/hf after the first run)."""
    from codeblock.core.models import resolve_model_path

    return resolve_model_path(str(ROOT / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
                              cache_dir=ROOT / "models" / "hf")


@pytest.fixture(scope="session")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir, clean_up_tokenization_spaces=False)


@pytest.fixture(scope="session")
def tiny_model_dir(default_model_dir) -> str:
    """A tiny random Llama with the real SmolLM2 tokenizer and chat template."""
    from codeblock.core.models import resolve_model_path

    return resolve_model_path("tiny-random", cache_dir=ROOT / "models" / "hf")
