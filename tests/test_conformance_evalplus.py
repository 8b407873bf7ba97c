"""Conformance: our HumanEval+ / MBPP+ verdicts equal evalplus 0.3.1's own, sample for sample.

The same samples (every chosen task's canonical solution plus a mutant corpus written here: off by
one, None, wrong type, int returned as float, float noise inside and outside atol, reversed
sequences (set-valued tasks), slow calls, input mutation, crashes, exits, a forbidden `open`, a
top-level hang, an alternative find_zero root) are scored twice:
- by evalplus itself, in a subprocess: its own loaders (`get_human_eval_plus` / `get_mbpp_plus`
  with the override variables), `get_groundtruth` and `check_correctness`, in a process pool as
  `evalplus.evaluate` runs them;
- by us: `codeblock.evaluate.evalplus_plan.score`, every program in our sandbox.
Every (base_status, plus_status) pair must agree. The default run takes a CI-sized subset of tasks (the
other oracles and deserializations are in the slow run);
`-m slow` runs every task of both benchmarks.

Needs the official files in the folder named by CODEBLOCK_OFFICIAL_DATA (HumanEvalPlus-v0.1.10.jsonl.gz,
MbppPlus-v0.2.0.jsonl.gz, as released by evalplus; CI sets it) and evalplus; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from official_data import official_problems

from codeblock.core.config import load_config
from codeblock.evaluate.executor import Executor, Limits

pytest.importorskip("evalplus")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CODEBLOCK_OFFICIAL_DATA", "official-data-not-set"))
FILES = {"humaneval_plus": DATA / "HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp_plus": DATA / "MbppPlus-v0.2.0.jsonl.gz"}
pytestmark = pytest.mark.skipif(not all(p.exists() for p in FILES.values()), reason=f"official data not in {DATA}")

# CI subset: float outputs with atol, the find_zero oracle, set-equality / not-None / per-task
# oracles, deserialized tuples, sets and complex numbers
CI_TASKS = {
    "humaneval_plus": ["HumanEval/2", "HumanEval/32"],
    "mbpp_plus": ["Mbpp/2", "Mbpp/124", "Mbpp/581", "Mbpp/737", "Mbpp/793"],
}

_NOISE = '''
def _cb_noise(r, eps):
    if type(r) is float:
        return r + eps
    if isinstance(r, (list, tuple)):
        return type(r)(_cb_noise(x, eps) for x in r)
    return r
'''
# body of a wrapper around the canonical function (`_cb_orig`); {f} is the entry point
MUTANTS = {
    "off_by_one": "    r = _cb_orig(*a, **k)\n    return r + 1 if type(r) is int else r\n",
    "none": "    _cb_orig(*a, **k)\n    return None\n",
    "wrong_type": "    r = _cb_orig(*a, **k)\n    return tuple(r) if isinstance(r, list) else str(r)\n",
    "int_as_float": "    r = _cb_orig(*a, **k)\n    return float(r) if type(r) is int else r\n",
    "noise_inside_atol": "    return _cb_noise(_cb_orig(*a, **k), 1e-9)\n",
    "noise_outside_atol": "    return _cb_noise(_cb_orig(*a, **k), 1e-3)\n",
    "reversed": "    r = _cb_orig(*a, **k)\n    return type(r)(reversed(r)) if isinstance(r, (list, tuple)) else r\n",
    "slow": "    import time\n    time.sleep(1.6)\n    return _cb_orig(*a, **k)\n",
    "mutates_input": ("    r = _cb_orig(*a, **k)\n    for x in a:\n        if isinstance(x, (list, dict, set)):\n"
                      "            x.clear()\n    return r\n"),
    "os_exit": "    import os\n    os._exit(0)\n",
    "sys_exit": "    raise SystemExit(0)\n",
    "uses_open": "    open('scratch.txt', 'w').write('x')\n    return _cb_orig(*a, **k)\n",
}
# a different root of the polynomial than the canonical bisection finds (HumanEval/32)
FIND_ZERO_OTHER_ROOT = '''
import math
def poly(xs, x):
    return sum(c * math.pow(x, i) for i, c in enumerate(xs))
def find_zero(xs):
    lo, hi = 1.0, -1.0
    while poly(xs, lo) * poly(xs, hi) > 0:
        lo *= 2.0
        hi *= 2.0
    while abs(lo - hi) > 1e-10:
        mid = (lo + hi) / 2.0
        if poly(xs, mid) * poly(xs, lo) > 0:
            lo = mid
        else:
            hi = mid
    return lo
'''
TOP_LEVEL_HANG = "import time\ntime.sleep(1000)\n"


def mutant(program: str, entry: str, body: str) -> str:
    return f"{program}\n{_NOISE}\n_cb_orig = {entry}\n\ndef {entry}(*a, **k):\n{body}"


def corpus(problems) -> list[tuple[object, int, str, str]]:
    """(problem, index, solution, label) for every problem: canonical + mutants."""
    out = []
    for p in problems:
        sols = [("canonical", p.reference)] + [(m, mutant(p.reference, p.entry_point, b)) for m, b in MUTANTS.items()]
        if p.entry_point == "find_zero":
            sols.append(("other_root", FIND_ZERO_OTHER_ROOT))
        if p.task_id == "Mbpp/793":  # no plus inputs: the hang costs 2 s, not 62
            sols.append(("top_level_hang", p.reference + TOP_LEVEL_HANG))
        out += [(p, j, sol, label) for j, (label, sol) in enumerate(sols)]
    return out


EVALPLUS_SIDE = r'''
import json, sys
from concurrent.futures import ProcessPoolExecutor
from evalplus.data import get_human_eval_plus, get_mbpp_plus
from evalplus.evaluate import check_correctness, get_groundtruth
from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
samples = json.load(open(sys.argv[1]))
alone = sys.argv[2] == "alone"  # each task's samples checked in this process, holding only that task's data
out = {}
with ProcessPoolExecutor(max_workers=2) as pool:
    futs = {}
    for dataset in sorted({s["dataset"] for s in samples}):
        mine = [s for s in samples if s["dataset"] == dataset]
        problems = get_human_eval_plus() if dataset == "humaneval" else get_mbpp_plus()
        for group in ([[t] for t in sorted({s["task_id"] for s in mine})] if alone else [sorted({s["task_id"] for s in mine})]):
            sub = {t: problems[t] for t in group}
            expected = get_groundtruth(sub, f"{dataset}-{len(mine)}-{group[0].replace('/', '-') if alone else 'all'}",
                                       MBPP_OUTPUT_NOT_NONE_TASKS if dataset == "mbpp" else [])
            for s in mine:
                if s["task_id"] not in sub:
                    continue
                args = (dataset, 0, sub[s["task_id"]], s["solution"], expected[s["task_id"]], False, True, s["key"])
                if alone:
                    r = check_correctness(*args)
                    out[s["key"]] = [r["base"][0], r["plus"][0]]
                else:
                    futs[s["key"]] = pool.submit(check_correctness, *args)
            del expected
    for key, fut in futs.items():
        r = fut.result()
        out[key] = [r["base"][0], r["plus"][0]]
print(json.dumps(out))
'''


def evalplus_verdicts(samples: list[dict], tmp_path: Path, alone: bool = False) -> dict[str, list[str]]:
    """{key: [base_status, plus_status]} from evalplus itself; samples carry dataset/task_id/solution/key.
    Default: as `evalplus.evaluate` runs them (one process holds every task's expected outputs,
    checks fork from a 2-worker pool). alone=True: each task's samples are checked directly by a
    process that holds only that task's expected outputs (evalplus's per-task API)."""
    f = tmp_path / ("samples-alone.json" if alone else "samples.json")
    f.write_text(json.dumps(samples))
    env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": str(FILES["humaneval_plus"]),
           "MBPP_OVERRIDE_PATH": str(FILES["mbpp_plus"]), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", EVALPLUS_SIDE, str(f), "alone" if alone else "pooled"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=6000)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def our_verdicts(problems, items) -> dict[str, list[str]]:
    from codeblock.evaluate import evalplus_plan as EP

    ex = Executor(Limits(timeout_s=10.0), workers=2)
    recs = EP.score(ex, problems, [(p, j, sol) for p, j, sol, _ in items], progress=False)
    return {f"{r['task_id']}#{r['sample']}": [r["base_status"], r["plus_status"]] for r in recs}


def check_conformance(tasks: dict[str, list[str] | None], tmp_path: Path) -> dict[str, int]:
    """Score the corpus of the given tasks (None: all of a benchmark) both ways; assert agreement;
    return how often each status occurred."""
    cfg = load_config(REPO / "params.yaml", ["eval.use_hub=false", "tracking.enabled=false"])
    problems = official_problems(cfg, tasks, FILES)
    items = corpus(problems)
    labels = {f"{p.task_id}#{j}": label for p, j, _, label in items}
    theirs = evalplus_verdicts([{"dataset": p.extras["dataset"], "task_id": p.task_id, "solution": sol,
                                 "key": f"{p.task_id}#{j}"} for p, j, sol, _ in items], tmp_path)
    ours = our_verdicts(problems, items)
    assert set(ours) == set(theirs) == set(labels)
    diff = {k: (labels[k], theirs[k], ours[k]) for k in theirs if theirs[k] != ours[k]}
    if diff:
        # evalplus checks a program in a child forked from the process holding the expected
        # outputs of every task evaluated together: an allocation-heavy program then meets the
        # 4 GiB address-space cap or, through the larger heap, its per-input time limits
        # (docs/evaluation.md, "Where we differ"). A verdict that changes when evalplus's own
        # checker holds only that task's data is that artefact; anything else still fails here.
        by_key = {f"{p.task_id}#{j}": (p, sol) for p, j, sol, _ in items}
        again = evalplus_verdicts([{"dataset": by_key[k][0].extras["dataset"], "task_id": by_key[k][0].task_id,
                                    "solution": by_key[k][1], "key": k} for k in diff], tmp_path, alone=True)
        artefacts = sorted(k for k in diff if again[k] == ours[k])
        print(f"evalplus process-sharing artefacts ({len(artefacts)}): {artefacts}")
        diff = {k: v for k, v in diff.items() if k not in artefacts}
    assert not diff, f"{len(diff)}/{len(theirs)} verdicts differ (label, evalplus, ours): {diff}"
    seen: dict[str, int] = {}
    for v in theirs.values():
        for s in v:
            seen[s] = seen.get(s, 0) + 1
    return seen


def test_conformance_ci_subset(tmp_path):
    seen = check_conformance(CI_TASKS, tmp_path)
    # the corpus exercises all three of evalplus's statuses, so agreement is not agreement on one value
    assert seen.get("pass", 0) > 0 and seen.get("fail", 0) > 0 and seen.get("timeout", 0) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["humaneval_plus", "mbpp_plus"])
def test_conformance_all_tasks(name, tmp_path):
    check_conformance({name: None}, tmp_path)
