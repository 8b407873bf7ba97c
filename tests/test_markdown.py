"""The one fence parser (codeblock/core/markdown.py) against markdown-it-py (a CommonMark parser) as
the oracle, and the classification of untagged fences (codeblock/select/fencelang.py)."""

from __future__ import annotations

import random

import pytest
from markdown_it import MarkdownIt

from codeblock.core.markdown import fence_language, fenced_blocks, split_markdown
from codeblock.select.fencelang import classify_untagged
from codeblock.select.languages import get_spec

MD = MarkdownIt("commonmark")


def oracle(text: str) -> list[tuple[str, str]]:
    """(info string, code) of every fence markdown-it finds, in document order."""
    return [(t.info.strip(), t.content) for t in MD.parse(text) if t.type == "fence"]


def ours(text: str) -> list[tuple[str, str]]:
    # markdown-it normalises CRLF to LF before parsing; we keep the \r in the code
    return [(f.info, f.code.replace("\r\n", "\n")) for f in fenced_blocks(text)]


CASES = {
    "plain": "Text\n```python\nx = 1\n```\nmore\n",
    "crlf": "Text\r\n```python\r\nx = 1\r\ny = 2\r\n```\r\nafter\r\n",
    "unclosed": "Intro\n```python\ndef f():\n    return 1\n",
    "longer_closing": "```python\nx = 1\n`````\ntail\n",
    "shorter_close_is_code": "````python\n```\nx = 1\n````\n",
    "tilde": "~~~py\nprint('~')\n~~~\n",
    "tilde_closes_not_backtick": "~~~\nx = 1\n```\ny = 2\n~~~\n",
    "info_attributes": '```python {.numberLines startFrom="3"}\nx = 1\n```\n',
    "info_braces": "```{python}\nx = 1\n```\n",
    "list_indented": "1. Install:\n\n   ```python\n   import os\n   print(os.sep)\n   ```\n2. Run it.\n",
    "bullet_indented": "- step\n\n  ~~~\n  a = 1\n    b = 2\n  ~~~\n",
    "inline_backticks_not_a_fence": "Use ```x``` inline.\n```\ny = 1\n```\n",
    "tilde_info_may_hold_backticks": "~~~ py `odd`\nz = 3\n~~~\n",
    "closing_with_spaces": "```\nq = 1\n```   \nafter\n",
    "two_blocks": "A\n```py\na = 1\n```\nB\n```\nb = 2\n```\n",
    "empty_block": "```python\n```\n",
    "no_trailing_newline": "```python\nx = 1\n```",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fences_match_commonmark(name):
    text = CASES[name]
    assert ours(text) == oracle(text), name


def test_random_documents_match_commonmark():
    """Random mixes of prose, fences of both kinds and lengths, closers too short, CRLF and indented
    list fences: the same blocks as markdown-it, every time."""
    rng = random.Random(7)
    pieces = ["Some prose.", "", "x = 1", "    indented = 2", "```", "````", "~~~", "```python", "~~~ py {.a}",
              "``` python title=\"a.py\"", "`````", "1. item", "   ```py", "   y = 3", "   ```", "print('```')"]
    for _ in range(400):
        lines = [rng.choice(pieces) for _ in range(rng.randint(1, 12))]
        nl = "\r\n" if rng.random() < 0.3 else "\n"
        text = nl.join(lines) + (nl if rng.random() < 0.7 else "")
        if any(ln.startswith("    ") and ln.lstrip().startswith(("`", "~")) for ln in lines):
            continue  # a top-level 4-space fence: a documented departure (we read a fence)
        assert ours(text) == oracle(text), repr(text)


def test_offsets_point_into_the_text_and_fence_lines_are_neither():
    text = "Intro\r\n```python\r\nx = 1\r\n```\r\nOutro"
    regions = split_markdown(text)
    assert [r.kind for r in regions] == ["prose", "code", "prose"]
    code = regions[1]
    assert text[code.start:code.end] == "x = 1\r\n" and code.lang == "python" and code.closed
    assert text[regions[0].start:regions[0].end] == "Intro\r\n"
    assert text[regions[2].start:regions[2].end] == "Outro"
    unclosed = split_markdown("A\n~~~\nb = 1\n")
    assert unclosed[-1].kind == "code" and not unclosed[-1].closed


def test_markdown_tagged_fence_is_searched_inside():
    text = "````markdown\nDoc.\n```python\ny = 2\n```\n````\n"
    assert [(f.lang, f.code) for f in fenced_blocks(text)] == [("python", "y = 2\n")]


@pytest.mark.parametrize("info,lang", [
    ("python", "python"), ("Python3 extra", "python3"), ("{.python .numberLines}", "python"),
    ("{r, echo=FALSE}", "r"), ("python:main.py", "python"), ('py title="a.py"', "py"), ("", ""),
    ("c++", "c++"), ("{}", ""),
])
def test_fence_language(info, lang):
    assert fence_language(info) == lang


PY = get_spec("python")


@pytest.mark.parametrize("code,kind", [
    ("def f(x):\n    return x + 1\n", "code"),
    ("x = [1, 2]\nprint(x)\n", "code"),
    ("pip install numpy\n", "shell"),
    ("$ python main.py\n", "shell"),
    ("cd project && make test\n", "shell"),
    ("6\n", "data"),
    ("[1, 2, 3]\n", "data"),
    ('{"a": {"b": null}}\n', "data"),
    ("name,age\nalice,30\n", "data"),
    ("Hello, World!\n", "text"),
    ("Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nZeroDivisionError: division by zero\n",
     "traceback"),
    (">>> 1 + 1\n2\n", "console"),
    ("   \n", "empty"),
    ("# just a comment\n", "text"),
])
def test_untagged_fence_kinds(code, kind):
    assert classify_untagged(code, PY) == kind
    assert classify_untagged(code, None) == (kind if kind not in ("code", "data") else "text")
