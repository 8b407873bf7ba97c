"""Checkpoint policy (resume, mismatch error, --fresh, --resume-anyway, stray and incomplete
folders, rotation) and label-set validation / the memory-mapped label set."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from test_train_trainer import write_labels

from codeblock.core.io import BadRowError, write_parquet
from codeblock.train.checkpoints import (
    FINGERPRINT,
    CheckpointMismatch,
    fingerprint,
    fingerprint_diff,
    last_complete_checkpoint,
    prepare_checkpoint_dir,
    rotate,
)
from codeblock.train.labelset import load_label_set, open_label_set, prepare_label_set


def fake_checkpoint(ckpt_dir, name: str, complete: bool = True):
    d = ckpt_dir / name
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"weights")
    if complete:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    return d


def test_fingerprint_ignores_volatile_train_keys(cfg):
    base = fingerprint(cfg, "model-a", "sha")
    t = cfg.train
    volatile = dataclasses.replace(t, save_steps=7, logging_steps=3, log_model=False, register_name="other",
                                   save_total_limit=9, peak_tflops=100.0)
    assert fingerprint_diff(base, fingerprint(dataclasses.replace(cfg, train=volatile), "model-a", "sha")) == []
    changed = dataclasses.replace(cfg, train=dataclasses.replace(t, lr=0.5, lora_r=2))
    diff = fingerprint_diff(base, fingerprint(changed, "model-b", "sha"))
    assert diff == ["model: 'model-a' -> 'model-b'", f"train.lora_r: {t.lora_r!r} -> 2", f"train.lr: {t.lr!r} -> 0.5"]
    # an older fingerprint file nested the whole train group, volatile keys included
    old = {"train": {**cfg.to_dict()["train"], "save_steps": 1}, "model": "model-a", "labels_sha256": "sha"}
    assert fingerprint_diff(old, base) == []


def test_changed_config_stops_with_the_keys_and_both_ways_out(cfg, tmp_path):
    ck = tmp_path / "checkpoints"
    fp = fingerprint(cfg, "m", "sha")
    prepare_checkpoint_dir(ck, fp)
    good = fake_checkpoint(ck, "checkpoint-2")
    stray = fake_checkpoint(ck, "checkpoint-2-backup")
    # a volatile change resumes
    vol = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, save_steps=1, log_model=False))
    prepare_checkpoint_dir(ck, fingerprint(vol, "m", "sha"))
    assert last_complete_checkpoint(ck) == str(good)
    # a result-changing one stops, deleting nothing
    new = fingerprint(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.123)), "m", "sha2")
    with pytest.raises(CheckpointMismatch) as e:
        prepare_checkpoint_dir(ck, new)
    msg = str(e.value)
    assert "train.lr" in msg and "0.123" in msg and "labels_sha256: 'sha' -> 'sha2'" in msg
    assert "--resume-anyway" in msg and "--fresh" in msg and "save_steps" not in msg
    assert good.exists() and stray.exists() and json.loads((ck / FINGERPRINT).read_text()) == fp
    # --resume-anyway keeps the checkpoint and records the new configuration
    prepare_checkpoint_dir(ck, new, resume_anyway=True)
    assert last_complete_checkpoint(ck) == str(good) and json.loads((ck / FINGERPRINT).read_text()) == new
    # --fresh removes checkpoint-<step> folders only
    prepare_checkpoint_dir(ck, fp, fresh=True)
    assert not good.exists() and stray.exists() and last_complete_checkpoint(ck) is None


def test_archive_stale_moves_mismatched_checkpoints_aside_and_starts_afresh(cfg, tmp_path):
    """The way out dvc.yaml takes: nothing deleted, nothing resumed, the same config keeps resuming."""
    ck = tmp_path / "checkpoints"
    fp = fingerprint(cfg, "m", "sha")
    prepare_checkpoint_dir(ck, fp)
    old = fake_checkpoint(ck, "checkpoint-2")
    prepare_checkpoint_dir(ck, fp, archive_stale=True)  # same configuration: kept and resumed
    assert last_complete_checkpoint(ck) == str(old)
    new = fingerprint(cfg, "m", "other-labels")
    prepare_checkpoint_dir(ck, new, archive_stale=True)
    assert not old.exists() and last_complete_checkpoint(ck) is None
    moved = list((ck / "stale").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("checkpoint-2-")
    assert (moved[0] / "adapter_model.safetensors").read_bytes() == b"weights"
    assert json.loads((ck / FINGERPRINT).read_text()) == new


def test_checkpoints_without_fingerprint_are_not_resumed_silently(cfg, tmp_path):
    ck = tmp_path / "checkpoints"
    fake_checkpoint(ck, "checkpoint-4")
    with pytest.raises(CheckpointMismatch, match="configuration is unknown"):
        prepare_checkpoint_dir(ck, fingerprint(cfg, "m", "sha"))


def test_stray_and_incomplete_folders(cfg, tmp_path):
    ck = tmp_path / "checkpoints"
    fp = fingerprint(cfg, "m", "sha")
    prepare_checkpoint_dir(ck, fp)
    c1, c3 = fake_checkpoint(ck, "checkpoint-1"), fake_checkpoint(ck, "checkpoint-3")
    c2 = fake_checkpoint(ck, "checkpoint-2")
    stray = [fake_checkpoint(ck, n) for n in ("checkpoint-2-backup", "checkpoint-99x", "checkpoint-")]
    half = fake_checkpoint(ck, "checkpoint-5", complete=False)  # killed while saving
    prepare_checkpoint_dir(ck, fp)
    assert last_complete_checkpoint(ck) == str(c3)
    assert not half.exists()
    moved = list((ck / "incomplete").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("checkpoint-5-") and (moved[0] / "adapter_model.safetensors").exists()
    # rotation keeps the newest `keep` real checkpoints and never touches look-alikes
    assert rotate(ck, keep=1) == [c1, c2]
    assert c3.exists() and all(s.exists() for s in stray)


def test_training_resumes_after_volatile_change_and_stops_after_a_real_one(cfg, tmp_path, tiny_model_dir):
    from codeblock.train.trainer import run_train

    cfg.model.name_or_path = tiny_model_dir
    cfg.model.device = "cpu"
    cfg.tracking.enabled = False
    cfg.train.lora_r = 4
    cfg.train.max_steps = 2
    cfg.train.save_steps = 1
    cfg.train.batch_tokens = 256
    write_labels(tmp_path / "labels" / "codeblock" / "labels.parquet", n=12)
    run_train(cfg, "codeblock")
    ck = tmp_path / "runs" / "codeblock" / "checkpoints"
    (ck / "checkpoint-2-backup").mkdir()  # a user's copy: must neither crash nor vanish
    cfg.train.log_model = False
    cfg.train.save_steps = 5
    cfg.train.save_total_limit = 1
    res = run_train(cfg, "codeblock")
    assert res["resumed_from"].endswith("checkpoint-2") and res["metrics"]["steps"] == 2
    assert (ck / "checkpoint-2-backup").is_dir()
    cfg.train.lr = 5e-3
    with pytest.raises(CheckpointMismatch, match="train.lr"):
        run_train(cfg, "codeblock")
    assert (ck / "checkpoint-2").is_dir()
    cfg.train.peak_tflops = 1e-3  # volatile: MFU is logged, nothing else changes
    res = run_train(cfg, "codeblock", fresh=True)
    assert res["resumed_from"] is None and res["metrics"]["steps"] == 2
    m = res["metrics"]
    n_params = m["mfu"] * 1e9 / (6.0 * m["tokens_per_s"])  # mfu = 6 N tokens/s / peak
    assert 0 < m["mfu"] and n_params > m["trainable_params"]
    assert (ck / "checkpoint-2-backup").is_dir()


def test_token_id_outside_vocabulary_names_the_row(tmp_path):
    p = tmp_path / "labels.parquet"
    rows = [{"id": "a", "input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
            {"id": "b", "input_ids": [5, 60000, 7], "labels": [-100, -100, 7]}]
    write_parquet(p, rows)
    with pytest.raises(BadRowError, match=r"row 1: field 'input_ids': token id 60000 at position 1"):
        prepare_label_set(p, tmp_path / "l.arrow", max_length=16, vocab_size=49152)
    assert not (tmp_path / "l.arrow").exists()
    write_parquet(p, [{"id": "a", "input_ids": [5, -3, 7], "labels": [-100, -100, 7]}])
    with pytest.raises(BadRowError, match="row 0: field 'input_ids': token id -3"):
        load_label_set(p, max_length=16)
    write_parquet(p, [{"id": "a", "input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                      {"id": "a", "input_ids": [5, 6, 7], "labels": [-100, 6, 7]}])
    with pytest.raises(BadRowError, match="row 1: field 'id': duplicate"):
        load_label_set(p, max_length=16)


def test_memory_mapped_label_set_equals_the_in_memory_one(tmp_path):
    p = write_labels(tmp_path / "labels.parquet", n=5000, seed=3)
    arrow = tmp_path / "run" / "labels.arrow"
    stats = prepare_label_set(p, arrow, max_length=40, vocab_size=49152)
    mem, lazy = load_label_set(p, max_length=40, vocab_size=49152), open_label_set(arrow)
    assert stats == mem.stats == lazy.stats and stats["truncated"] > 0 and stats["dropped"] > 0
    assert len(lazy) == len(mem) and lazy.lengths == mem.lengths
    assert list(lazy.ids) == mem.ids
    for i in (0, 1, 2047, 2048, len(mem) - 1):
        np.testing.assert_array_equal(lazy.input_ids[i], mem.input_ids[i])
        np.testing.assert_array_equal(lazy.labels[i], mem.labels[i])
    mtime = arrow.stat().st_mtime_ns
    prepare_label_set(p, arrow, max_length=40, vocab_size=49152)  # up to date: reused
    assert arrow.stat().st_mtime_ns == mtime
    prepare_label_set(p, arrow, max_length=30, vocab_size=49152)  # another truncation: rebuilt
    assert open_label_set(arrow).lengths == load_label_set(p, max_length=30).lengths
