"""Checkpoint policy of `codeblock train`: what may be resumed, and what is never touched.

`runs_dir/<method>/checkpoints/` holds the Trainer's `checkpoint-<step>` folders and
`codeblock_fingerprint.json`, the configuration that produced them: the RESULT-CHANGING `train.*`
keys (volatile ones such as `save_steps`, `logging_steps`, `log_model`, `register_name`,
`save_total_limit` are left out, see `codeblock.core.params`), the model identity and the label
set's sha256.

- Same fingerprint: resume from the newest complete checkpoint (its `trainer_state.json` parses;
  it is written last). A newer, incomplete one (kill -9 while saving) is moved aside into
  `incomplete/`, never deleted.
- Different fingerprint and at least one checkpoint: `CheckpointMismatch`, naming every key that
  differs and the two ways out: `--resume-anyway` (continue from the checkpoint under the new
  configuration) or `--fresh` (remove the `checkpoint-<step>` folders and start at step 0).
- Only folders named exactly `checkpoint-<digits>` are checkpoints: anything else in the folder
  (`checkpoint-2-backup`, notes, ...) is ignored by resume, by `--fresh` and by rotation.
- Rotation (`train.save_total_limit`) is done here, not by transformers (whose rotation matches
  `checkpoint-2-backup` as step 2 and would delete it).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from codeblock.core.io import write_json
from codeblock.core.params import VOLATILE

log = logging.getLogger("codeblock.train.checkpoints")

FINGERPRINT = "codeblock_fingerprint.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
INCOMPLETE_DIR = "incomplete"
STALE_DIR = "stale"  # checkpoints of another configuration, moved aside by --archive-stale


class CheckpointMismatch(RuntimeError):
    """Existing checkpoints were made under a configuration that changes the result."""


def fingerprint(cfg, model_identity: str, labels_sha256: str) -> dict[str, Any]:
    """The identity of a training run's result: result-changing train keys, model, label set."""
    fp: dict[str, Any] = dict(cfg.result_values("train"))
    fp.update({"model": model_identity, "labels_sha256": labels_sha256})
    return fp


def _normalise(fp: dict[str, Any]) -> dict[str, Any]:
    """Flat `train.key` form without volatile keys (older files nest the whole train group)."""
    out: dict[str, Any] = {}
    for k, v in fp.items():
        if k == "train" and isinstance(v, dict):
            out.update({f"train.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return {k: v for k, v in out.items() if k not in VOLATILE}


def fingerprint_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every key that differs (a missing side reads `<unset>`)."""
    if old is None:
        return ["(no codeblock_fingerprint.json: the checkpoints' configuration is unknown)"]
    a, b = _normalise(old), _normalise(new)
    unset = "<unset>"
    return [f"{k}: {a.get(k, unset)!r} -> {b.get(k, unset)!r}" for k in sorted(a.keys() | b.keys())
            if a.get(k, unset) != b.get(k, unset)]


def checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-<digits>` folder, oldest first; nothing else counts."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in ckpt_dir.iterdir()
             if d.is_dir() and (m := CHECKPOINT_RE.match(d.name))]
    return sorted(found)


def is_complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def last_complete_checkpoint(ckpt_dir: str | Path) -> str | None:
    """The newest checkpoint-<step> whose trainer_state.json (written last) parses."""
    good = [d for _, d in checkpoints(ckpt_dir) if is_complete(d)]
    return str(good[-1]) if good else None


def _move_aside(folder: Path, into: str = "") -> Path:
    dest = folder.parent / (into or INCOMPLETE_DIR) / f"{folder.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    dest.parent.mkdir(exist_ok=True)
    folder.rename(dest)
    return dest


def prepare_checkpoint_dir(ckpt_dir: str | Path, fp: dict[str, Any], *, fresh: bool = False,
                           resume_anyway: bool = False, archive_stale: bool = False) -> None:
    """Apply the policy (module docstring) before training starts; main process only."""
    ckpt_dir = Path(ckpt_dir)
    fp_file = ckpt_dir / FINGERPRINT
    found = checkpoints(ckpt_dir)
    if fresh and found:
        log.warning("%s: --fresh: removing %d checkpoint(s): %s", ckpt_dir, len(found),
                    ", ".join(d.name for _, d in found))
        for _, d in found:
            shutil.rmtree(d)
        found = []
    if found:
        old = json.loads(fp_file.read_text()) if fp_file.exists() else None
        diff = fingerprint_diff(old, fp)
        if diff and archive_stale and not resume_anyway:
            # the third way out (what `dvc repro` uses: DVC reruns train exactly when its inputs
            # changed): keep the old checkpoints, moved aside, and start again at step 0
            for _, d in found:
                log.warning("%s: made under another configuration (%s): moved to %s", d, "; ".join(diff),
                            _move_aside(d, STALE_DIR))
            found, diff = [], []
        if diff and not resume_anyway:
            raise CheckpointMismatch(
                f"{ckpt_dir} holds checkpoints made under a configuration that changes the result:\n  "
                + "\n  ".join(diff)
                + "\nEither continue from them under the new configuration: `codeblock train --resume-anyway`, "
                "or start again at step 0 (removes the checkpoint-<step> folders): `codeblock train --fresh`, "
                f"or keep them in {STALE_DIR}/ and start again: `codeblock train --archive-stale`."
            )
        if diff:
            log.warning("%s: --resume-anyway: resuming under a changed configuration: %s", ckpt_dir, "; ".join(diff))
        good = last_complete_checkpoint(ckpt_dir)
        good_step = int(CHECKPOINT_RE.match(Path(good).name).group(1)) if good else -1
        for step, d in found:
            if step > good_step or not is_complete(d):
                log.warning("%s: incomplete checkpoint (no readable trainer_state.json) moved to %s", d, _move_aside(d))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json(fp_file, fp)


def rotate(ckpt_dir: str | Path, keep: int) -> list[Path]:
    """Remove the oldest complete checkpoints beyond `keep` (the newest always stays)."""
    if keep <= 0:
        return []
    done = [d for _, d in checkpoints(ckpt_dir) if is_complete(d)]
    old = done[: max(len(done) - keep, 0)]
    for d in old:
        log.info("%s: removed (train.save_total_limit=%d)", d, keep)
        shutil.rmtree(d)
    return old


class RotateCheckpoints(TrainerCallback):
    """`train.save_total_limit` applied after each save, to `checkpoint-<digits>` folders only."""

    def __init__(self, keep: int):
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            rotate(args.output_dir, self.keep)
