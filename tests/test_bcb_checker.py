"""bigcodebench's checker as our sandbox runs it, outside the conformance runs: the limits and prompt
are bigcodebench's defaults, the fork servers run another interpreter, and the checked program
sits where `untrusted_check` puts it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from official_data import oracle_python

from codeblock.evaluate import registry as R
from codeblock.evaluate.executor import Executor, Limits

pytest.importorskip("bigcodebench.eval")


def _defaults(module_file: Path, func: str) -> dict[str, object]:
    """Keyword defaults of a function in bigcodebench's source (its evaluate / generate modules
    import model providers this venv lacks, so they are read, not imported)."""
    import ast

    tree = ast.parse(module_file.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == func)
    args = fn.args.args[len(fn.args.args) - len(fn.args.defaults):]
    return {a.arg: ast.literal_eval(ast.unparse(d)) if not isinstance(d, ast.BinOp) else eval(ast.unparse(d))
            for a, d in zip(args, fn.args.defaults)}


def test_limits_and_prompt_are_bigcodebench_defaults():
    import importlib.util

    from bigcodebench.eval.utils import TIMEOUT_LIMIT

    from codeblock.evaluate import bcb_plan as B

    pkg = Path(importlib.util.find_spec("bigcodebench").submodule_search_locations[0])
    ev = _defaults(pkg / "evaluate.py", "evaluate")
    assert (ev["max_as_limit"], ev["max_data_limit"], ev["max_stack_limit"]) == (B.MAX_AS_MB, B.MAX_DATA_MB,
                                                                               B.MAX_STACK_MB)
    assert ev["min_time_limit"] == B.MIN_TIME_LIMIT and ev["calibrated"] is True and TIMEOUT_LIMIT == B.TASK_LIMIT_S
    assert "expected_time[task_id] if expected_time[task_id] else 20" in (pkg / "evaluate.py").read_text()
    assert B.check_timeout() == 241.0 and B.check_timeout(300.0) == 301.0 and B.check_timeout(3.0, 2.0) == 4.0
    gen = _defaults(pkg / "generate.py", "run_codegen")
    assert gen["instruction_prefix"] == R.BCB_INSTRUCTION and gen["response_prefix"] == R.BCB_RESPONSE
    # the user turn is what bigcodebench's make_raw_chat_prompt builds for the instruct split
    from bigcodebench.provider.utility import make_raw_chat_prompt

    row = {"task_id": "BigCodeBench/9", "complete_prompt": "import os\ndef task_func(x):\n    \"\"\"d\"\"\"\n",
           "instruct_prompt": "  Return x.\nYou should write self-contained code starting with:\n```\ndef task_func(x):\n```  \n",
           "code_prompt": "import os\ndef task_func(x):\n", "canonical_solution": "    return x\n",
           "entry_point": "task_func", "libs": "['os']", "test": "import unittest\n"}
    p = R._normalise_bigcodebench(R.get("bigcodebench_full"), row, 0, "row.jsonl")
    assert p.prompt == make_raw_chat_prompt(row["instruct_prompt"], "full", "instruct", R.BCB_INSTRUCTION,
                                            R.BCB_RESPONSE, None)
    assert B.calibrate(p, "S") == "import os\ndef task_func(x):\n\n    pass\nS"


def test_sandbox_runs_another_interpreter():
    """eval.bigcodebench_python: the fork servers run that interpreter (the eval venv's 3.10),
    whose runtime the sandbox uid can read; the sandbox modules run on it."""
    import shutil

    py = os.environ.get("CODEBLOCK_BCB_PYTHON") or shutil.which("python3.10")
    if not py:
        pytest.skip("no python3.10 here (CODEBLOCK_BCB_PYTHON unset)")
    # the interpreter itself, not a launcher script (a pyenv shim needs its own environment)
    r = subprocess.run([py, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"{py} does not run here: {r.stderr.strip()[:200]}")
    py = r.stdout.strip()
    from codeblock.evaluate.executor import Task

    ex = Executor(Limits(timeout_s=20.0), workers=1, python=py)
    prog = "import sys\nassert sys.version_info[:2] == (3, 10), sys.version\ndef f():\n    return 1\n"
    good, bad = ex.run([Task("ok", prog, "def check(c):\n    assert c() == 1\n", "humaneval_check", "f"),
                        Task("no", prog, "def check(c):\n    assert c() == 2\n", "humaneval_check", "f")],
                       progress=False)
    assert (good.status, bad.status, bad.error) == ("passed", "failed", "assertion"), (good, bad)


LAYOUT_PROGRAM = ("import multiprocessing\n\ndef task_func():\n    me = multiprocessing.current_process()\n"
                  "    return me.name != 'MainProcess', multiprocessing.parent_process() is not None\n")
LAYOUT_TEST = ("import unittest\n\nclass TestCases(unittest.TestCase):\n    def test_layout(self):\n"
               "        self.assertEqual(task_func(), (True, True))\n")


def test_checked_program_runs_where_untrusted_check_puts_it(tmp_path):
    """The checked program is the child `untrusted_check` starts with `multiprocessing.Process`,
    as in bigcodebench's own check (asked of bigcodebench here too), not a process of ours that
    only runs `unsafe_execute`: the processes around the checker decide how a program's own
    `multiprocessing.Pool` races bigcodebench's kill guard (BigCodeBench/363, docs/evaluation.md).
    A raw fork of the sandbox's pid 1, the layout before harness codeblock-sandbox-4, fails it."""
    from types import SimpleNamespace

    from codeblock.evaluate import bcb_plan as B

    oracle = ("import bigcodebench.eval as E\nE.TIMEOUT_LIMIT = 20\n"
              f"print(E.untrusted_check({LAYOUT_PROGRAM!r}, {LAYOUT_TEST!r}, 'task_func', 30 * 1024, 30 * 1024, 10, 1, 20)[0])")
    out = tmp_path / "oracle.out"
    with open(out, "w") as fo:
        subprocess.run([oracle_python(), "-c", oracle], stdout=fo, stderr=subprocess.STDOUT, cwd=tmp_path, timeout=300,
                       env={**os.environ, "MPLBACKEND": "Agg", "HOME": str(tmp_path)})
    assert out.read_text().strip().splitlines()[-1] == "pass", out.read_text()[-2000:]
    problem = SimpleNamespace(task_id="layout", test=LAYOUT_TEST, entry_point="task_func", libs=[])
    ex = Executor(Limits(), workers=1, python=oracle_python(), preload=list(B.PRELOAD))
    rec, = B.score(ex, [problem], [(problem, 0, LAYOUT_PROGRAM)], progress=False, task_limit=20.0)
    assert rec["status"] == "pass", rec
