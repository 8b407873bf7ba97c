"""HumanEval+/MBPP+ generation as evalplus's codegen does it: the chat prompt with its prefilled
answer, its stop strings, and its sanitizer (also for the other benchmarks' instruct answers)."""

from __future__ import annotations

import pytest

from codeblock.evaluate import generate as G
from codeblock.evaluate.registry import Problem
from codeblock.evaluate.sanitize import to_program

pytest.importorskip("evalplus")

TASK = 'def inc(x):\n    """Add one."""\n'


def problem(bench: str) -> Problem:
    return Problem(bench, "HumanEval/0", "shown to the model", "inc", "", "evalplus", TASK + "    return x + 1\n",
                   completion_prompt=TASK, extras={"prompt": TASK})


def test_evalplus_prompt_prefill_and_stops(tokenizer):
    ids, rule = G.prompt_ids(tokenizer, problem("humaneval_plus"), "instruct")
    text = tokenizer.decode(ids)
    assert rule == "evalplus"
    # the user turn holds the instruction and the task in a fence; the answer is prefilled up to an
    # open python fence, so the model continues with code
    assert G.EVALPLUS_INSTRUCTION in text and TASK.strip() in text
    assert text.rstrip(" ").endswith(G.EVALPLUS_RESPONSE + "\n```python\n")
    assert text.index(G.EVALPLUS_INSTRUCTION) < text.index(G.EVALPLUS_RESPONSE)
    # other benchmarks keep the plain chat prompt
    _, rule = G.prompt_ids(tokenizer, problem("humaneval"), "instruct")
    assert rule == "instruct"

    out = "    return x + 1\n\tpass\n```\nThis works because..."
    assert G.is_done(out, "evalplus") and not G.is_done("    return x + 1\n", "evalplus")
    assert G.finalize(out, "evalplus") == "    return x + 1\n    pass"  # cut at the fence, tabs expanded
    assert G.finalize("x = 1\nprint(x)\n", "evalplus") == "x = 1"  # evalplus's EOS includes "\nprint("


def test_sanitizer_is_evalplus_semantics():
    from evalplus.sanitize import sanitize

    first_wins = "```python\ndef inc(x):\n    return x + 1\n\ndef inc(x):\n    return x - 1\n```"
    example = "```python\nimport math\n\ndef inc(x):\n    return x + 1\n\nprint(inc(2))\nassert inc(1) == 2\n```"
    unfenced = "Sure, here it is: def inc(x) return\n\ndef helper(y):\n    return y\n\ndef inc(x):\n" \
               "    return helper(x) + 1\n\nHope this helps!"
    for raw in (first_wins, example, unfenced):
        prog = to_program(raw, "inc", "instruct", TASK, evalplus_style=True)
        assert prog == sanitize(raw, entrypoint="inc")  # evalplus's sanitizer is the oracle
        ns: dict = {}
        exec(compile(prog, "<p>", "exec"), ns)
        assert ns["inc"](1) == 2  # the FIRST definition, without the example code's side effects
    assert "print(" not in to_program(example, "inc", "instruct") and "helper" in to_program(unfenced, "inc", "instruct")
    # non-evalplus benchmarks also get the code prompt's imports
    header = "from typing import List\n\n\ndef inc(x: List[int]):\n"
    assert to_program(first_wins, "inc", "instruct", header).startswith("from typing import List\n")


def test_bigcodebench_prompt_prefill_and_stops(tokenizer):
    """BigCodeBench instruct: bigcodebench 0.2.5's own chat prompt (its instruction prefix, the
    stripped instruct_prompt, the answer prefilled up to an open python fence) and its stops."""
    pytest.importorskip("bigcodebench")
    from bigcodebench.provider.utility import make_raw_chat_prompt

    from codeblock.evaluate.registry import BCB_INSTRUCTION, BCB_RESPONSE

    instruct = "  Count the words of a text.\nThe function should output with:\n    int: the count.\n"
    p = Problem("bigcodebench_full", "BigCodeBench/0", "shown", "task_func", "", "bigcodebench", "",
                extras={"instruct_prompt": instruct})
    ids, rule = G.prompt_ids(tokenizer, p, "instruct")
    assert rule == "bigcodebench"
    want = make_raw_chat_prompt(instruct, "full", "instruct", BCB_INSTRUCTION, BCB_RESPONSE, tokenizer)
    assert ids == tokenizer.encode(want)
    text = tokenizer.decode(ids)
    assert BCB_INSTRUCTION + "\n" + instruct.strip() in text and text.endswith(BCB_RESPONSE + "\n```python\n")
    out = "def task_func(t):\n\treturn len(t.split())\n```\nExplanation..."
    assert G.is_done(out, "bigcodebench") and not G.is_done("def task_func(t):\n", "bigcodebench")
    assert G.finalize(out, "bigcodebench") == "def task_func(t):\n    return len(t.split())"
    assert G.finalize("x = 1\nif __name__ == '__main__':\n    main()", "bigcodebench") == "x = 1"
