from pathlib import Path

import pytest
import yaml

from codeblock.core.config import Config, ConfigError, describe, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_matches_dataclass_defaults():
    """params.yaml holds every knob; loading it must equal the typed defaults, key for key."""
    cfg = load_config(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    default = Config().to_dict()
    assert set(raw) == set(default), "params.yaml groups and Config groups differ"
    for group, values in default.items():
        assert set(raw[group]) == set(values), f"group {group}: keys differ"
    assert cfg.to_dict() == default


def test_every_field_has_help():
    rows = describe()
    assert len(rows) > 60
    missing = [k for k, _, h in rows if not h.strip()]
    assert not missing, missing


def test_override_syntax_like_dvc_exp_run():
    cfg = load_config(ROOT / "params.yaml", ["train.lr=2e-4", "select.budget=0.05", "eval.benchmarks=[humaneval]",
                                              "data.sources[0].limit=7", "train.finetune=full"])
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.select.budget == pytest.approx(0.05)
    assert cfg.eval.benchmarks == ["humaneval"]
    assert cfg.data.sources[0].limit == 7
    assert cfg.train.finetune == "full"


def test_unknown_key_names_path_and_closest():
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "params.yaml", ["train.learning_rat=1"])
    assert "train.learning_rat" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "params.yaml", ["selec.budget=0.1"])
    assert "'selec'" in str(e.value) and "did you mean 'select'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "params.yaml", ["select.budgte=0.1"])
    assert "did you mean 'select.budget'" in str(e.value)


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("score:\n  gce_qq: 0.5\n")
    with pytest.raises(ConfigError, match=r"score\.gce_qq.*score\.gce_q"):
        load_config(p)


@pytest.mark.parametrize(
    "override,path",
    [
        ("train.lr=fast", "train.lr"),
        ("train.lora_r=1.5", "train.lora_r"),
        ("tracking.enabled=3", "tracking.enabled"),
        ("segment.on_error=ignore", "segment.on_error"),
        ("eval.benchmarks=humaneval", "eval.benchmarks"),
        ("data.sources[0].kind=ftp", "data.sources[0].kind"),
    ],
)
def test_wrong_type_names_key_path(override, path):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "params.yaml", [override])
    assert str(e.value).startswith(path)


def test_profile_overlay(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "profiles" / "tiny.yaml").write_text("eval:\n  limit: 3\nmodel:\n  name_or_path: tiny-random\n")
    cfg = load_config(tmp_path / "params.yaml", ["eval.limit=5"], profile="tiny")
    assert cfg.eval.limit == 5  # overrides beat the profile
    assert cfg.model.name_or_path == "tiny-random"
    assert cfg.train.lr == pytest.approx(1e-4)


def test_bad_override_syntax():
    with pytest.raises(ConfigError):
        parse_override("train.lr")


def test_keys_hash_changes_with_its_group_only():
    a = load_config(ROOT / "params.yaml")
    b = load_config(ROOT / "params.yaml", ["train.lr=3e-4"])
    assert a.keys_hash("select") == b.keys_hash("select")
    assert a.keys_hash("train") != b.keys_hash("train")


@pytest.mark.parametrize("override", ["segment.workers=7", "eval.workers=5", "train.logging_steps=9",
                                      "train.log_model=false", "model.torch_threads=1"])
def test_volatile_keys_change_no_stage_hash(override):
    from codeblock.stages import STAGES, stage_hash

    a = load_config(ROOT / "params.yaml")
    b = load_config(ROOT / "params.yaml", [override])
    assert a.to_dict() != b.to_dict()
    assert all(stage_hash(a, n) == stage_hash(b, n) for n in STAGES)


@pytest.mark.parametrize("override,stage", [("segment.max_item_tokens=32", "segment"),
                                            ("segment.max_item_tokens=32", "select"),
                                            ("eval.max_new_tokens=17", "evaluate"),
                                            ("filter.knn_k=3", "filter")])
def test_result_keys_change_their_stage_hash(override, stage):
    from codeblock.stages import stage_hash

    a = load_config(ROOT / "params.yaml")
    b = load_config(ROOT / "params.yaml", [override])
    assert stage_hash(a, stage) != stage_hash(b, stage)


def test_a_moved_key_names_its_replacement():
    with pytest.raises(ConfigError, match=r"'eval.torch_threads' was replaced by model.torch_threads"):
        load_config(ROOT / "params.yaml", ["eval.torch_threads=1"])


def test_cli_reports_config_error(capsys):
    from codeblock.cli import main

    rc = main(["params", "--params", str(ROOT / "params.yaml"), "-S", "train.lrr=1"])
    assert rc == 2
    assert "train.lrr" in capsys.readouterr().err


def test_params_listing_into_a_closed_pipe_ends_quietly():
    import subprocess
    import sys

    # `codeblock params | true`: the reader is gone before the first line is written (the
    # start-up takes far longer than `true`), so every write meets a closed pipe
    r = subprocess.run(f"'{sys.executable}' -m codeblock.cli params --params '{ROOT / 'params.yaml'}' | true; "
                       "exit ${PIPESTATUS[0]}", shell=True, capture_output=True, text=True, cwd=ROOT,
                       executable="/bin/bash")
    assert r.returncode == 0 and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_every_shipped_profile_loads(profile):
    cfg = load_config(ROOT / "params.yaml", profile=profile)
    assert cfg.to_dict() != Config().to_dict()
