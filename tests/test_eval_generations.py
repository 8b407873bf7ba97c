"""Generation split over ranks: the batch plan, the dealing, the per-batch cache parts and their
merge, and a resume of another number of ranks' partial cache (real tiny model, one process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codeblock.core.config import load_config
from codeblock.evaluate import generations as GN
from codeblock.evaluate.registry import Problem

REPO = Path(__file__).resolve().parents[1]


def problem(i: int) -> Problem:
    return Problem(benchmark="humaneval", task_id=f"T/{i}", prompt=f"p{i}", entry_point="f", test="",
                   test_format="humaneval", reference="")


def test_plan_is_sorted_by_length_stable_and_independent_of_ranks():
    lengths = [5, 2, 9, 2, 7, 5, 1]
    items = [(problem(i), [0] * n, "instruct") for i, n in enumerate(lengths)]
    batches = GN.plan_batches(items, 3)
    ids = [[p.task_id for p, _, _ in b] for b in batches]
    # shortest first; equal lengths keep the benchmark's order (T/1 before T/3, T/0 before T/5)
    assert ids == [["T/6", "T/1", "T/3"], ["T/0", "T/5", "T/4"], ["T/2"]]
    assert GN.plan_batches(items, 0) == GN.plan_batches(items, 1)  # batch size 0 means one prompt a batch


@pytest.mark.parametrize("n", [0, 1, 5, 8])
def test_deal_partitions_the_batches_for_any_world(n):
    for world in (1, 2, 3, 4):
        shares = [GN.deal(n, r, world) for r in range(world)]
        flat = sorted(i for s in shares for i in s)
        assert flat == list(range(n))  # every batch once, by exactly one rank
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced to one batch
    assert GN.deal(5, 1, 2) == [1, 3]
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        GN.deal(5, 2, 2)


def test_calls_group_a_share_for_whole_share_backends_only():
    b = lambda *ids: [(problem(i), [0], "instruct") for i in ids]  # noqa: E731
    mine = [(0, b(1, 2)), (0, b(3)), (1, b(4)), (1, [(problem(5), [0], "completion")])]
    assert [[j for j, _ in c] for c in GN._calls(mine, False)] == [[0], [0], [1], [1]]
    # vLLM: one call per run of one benchmark and one stop rule
    assert [[j for j, _ in c] for c in GN._calls(mine, True)] == [[0, 0], [1], [1]]


def test_parts_are_read_with_the_main_file_and_merged_into_it(tmp_path):
    path = tmp_path / "generations" / "humaneval" / "abc.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"task_id": "T/0", "samples": ["old"]}) + "\n" + '{"task_id": "T/1", "sam')  # cut line
    GN.write_part(path, [{"task_id": "T/1", "samples": ["a"], "rank": 1, "world": 2},
                         {"task_id": "T/2", "samples": ["b"], "rank": 1, "world": 2}])
    GN.write_part(path, [{"task_id": "T/0", "samples": ["new"], "rank": 0, "world": 2}])
    parts = sorted(GN.parts_dir(path).iterdir())
    assert len(parts) == 2 and all(p.name.startswith("batch-") for p in parts)  # no temp file left
    assert GN.read_cache(path) == {"T/0": ["new"], "T/1": ["a"], "T/2": ["b"]}  # a part overrides the main file
    assert GN.consolidate(path) == 3
    assert not GN.parts_dir(path).exists()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert {r["task_id"]: (r["samples"], r.get("rank")) for r in lines} == {
        "T/0": (["new"], 0), "T/1": (["a"], 1), "T/2": (["b"], 1)}
    assert GN.consolidate(path) == 0  # nothing left to merge: the main file is untouched
    assert GN.read_cache(path) == {"T/0": ["new"], "T/1": ["a"], "T/2": ["b"]}


@pytest.fixture()
def cfg(tmp_path, tiny_model_dir):
    c = load_config(REPO / "params.yaml", [
        "eval.use_hub=false", f"model.name_or_path={tiny_model_dir}", f"model.hf_cache_dir={REPO / 'models' / 'hf'}",
        "model.device=cpu", "model.torch_threads=1", "eval.max_new_tokens=6", "eval.batch_size=2",
        f"paths.reports_dir={tmp_path / 'reports'}", "tracking.enabled=false",
    ])
    c.paths.raw_dir = str(REPO / "data" / "raw")
    return c


def test_a_partial_cache_of_two_ranks_is_resumed_by_one(cfg):
    from codeblock.core.models import load_tokenizer, model_identity
    from codeblock.evaluate import registry as R
    from codeblock.evaluate.generate import make_backend

    loaded = R.load_benchmark(cfg, "humaneval")
    problems = loaded.problems[:5]
    model_id = model_identity(cfg.model)
    built = []

    def backend():
        built.append(1)
        return make_backend(cfg, None)

    tok = lambda: load_tokenizer(cfg.model)  # noqa: E731
    full, counts = GN.generate_all(cfg, [(loaded, problems)], model_id, backend, tok, progress=False)
    job = full["humaneval"]
    assert counts["tasks_generated"] == 5 and counts["tasks_cached"] == 0 and len(built) == 1
    assert set(job.samples) == {p.task_id for p in problems} and not GN.parts_dir(job.path).exists()
    reference = dict(job.samples)

    # an interrupted two-rank run: rank 1 finished one batch, nothing else was written
    job.path.unlink()
    kept = [p.task_id for p in problems[:2]]
    GN.write_part(job.path, [{"task_id": t, "samples": reference[t], "rank": 1, "world": 2} for t in kept])
    again, counts = GN.generate_all(cfg, [(loaded, problems)], model_id, backend, tok, progress=False)
    assert counts["tasks_cached"] == 2 and counts["tasks_generated"] == 3
    assert again["humaneval"].samples == reference  # greedy: the same text, whoever generated it
    rows = {r["task_id"]: r for r in map(json.loads, job.path.read_text().splitlines())}
    assert {t: (r["rank"], r["world"]) for t, r in rows.items()} == {
        **{t: (1, 2) for t in kept}, **{p.task_id: (0, 1) for p in problems[2:]}}

    # everything cached: neither the tokenizer nor the model is loaded
    def boom():
        raise AssertionError("loaded although every generation is cached")

    _, counts = GN.generate_all(cfg, [(loaded, problems)], model_id, boom, boom, progress=False)
    assert counts["tasks_cached"] == 5 and counts["tasks_generated"] == 0
