import os

from codeblock.core.config import load_config
from codeblock.core.tracking import metric_name, stage_run, tracking_uri


def test_metric_names_have_no_at_sign():
    assert metric_name("pass@1/humaneval") == "pass_at_1/humaneval"


def test_config_store_not_shadowed_by_our_own_export(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a second config in the same process
    must still reach its own store, while a user's variable still wins."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a, b = load_config(), load_config()
    for c, name in ((a, "a"), (b, "b")):
        c.tracking.tracking_uri = f"sqlite:///{tmp_path / name}.db"
        c.tracking.artifact_dir = str(tmp_path / f"art_{name}")
        c.tracking.log_system_metrics = False
    with stage_run(a, "first") as tr:
        tr.log_metrics({"x": 1.0})
    assert os.environ.get("MLFLOW_TRACKING_URI") == a.tracking.tracking_uri  # what mlflow did
    assert tracking_uri(b) == b.tracking.tracking_uri
    with stage_run(b, "second") as tr:
        tr.log_metrics({"y": 2.0})
    assert (tmp_path / "b.db").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'user.db'}")
    assert tracking_uri(b).endswith("user.db")


def test_disabled_tracking_is_a_noop(tmp_path):
    c = load_config(overrides=["tracking.enabled=false"])
    with stage_run(c, "x") as tr:
        assert not tr.enabled
        tr.log_metrics({"a": 1})
