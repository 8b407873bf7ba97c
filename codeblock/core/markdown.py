"""Markdown fences: the one parser of fenced code blocks (segment, filter and the evaluation sanitizer).

CommonMark fence rules, on plain offsets into the text so that every code char maps back to the
response:
- a fence opens with 3+ backticks or tildes; the info string after it is the language tag plus
  anything else (`python {.numberLines}`, `{python}`, `py title="a.py"`, `python:main.py`); a
  backtick fence's info string may not contain a backtick (the line is inline code then);
- it closes only with the same character, at least as long, and nothing but spaces after it;
  a shorter or different fence inside is code;
- an unclosed fence runs to the end of the text;
- CRLF line endings are accepted (the \r stays in the code; it is whitespace to every parser);
- a fence indented inside a list item: the opener's indent is removed from each code line
  (`Region.indent`, as CommonMark does relative to the container), and the fence ends with the
  item (a non-blank line indented less than the item's content) if it is not closed before;
- a fence tagged markdown/md is split again, so the fences nested in it are found.
Known departures from CommonMark, on purpose: a top-level fence indented by 4+ spaces is still a
fence (CommonMark reads an indented code block; LLM output means the fence), and fences inside a
block quote (`> ````) are not recognised (the quote marker is on every code line).
markdown-it-py is the oracle in tests/test_markdown.py.

API: `split_markdown(text)` -> prose and code `Region`s; `fenced_blocks(text)` -> `Fence`s with the
code text itself (what filter and the evaluation sanitizer need); `fence_language(info)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LINE_RE = re.compile(r"[^\n]*\n|[^\n]+")
_FENCE_OPEN_RE = re.compile(r"^( *)(`{3,}|~{3,})(.*)$")
_MARKDOWN_TAGS = {"markdown", "md"}


@dataclass
class Region:
    kind: str  # "code" | "prose"
    start: int  # char span in the text (code: the code only, fence lines excluded)
    end: int
    lang: str = ""  # language tag of the fence (code only), see fence_language
    indent: int = 0  # spaces before the opening fence: removed from each code line before parsing
    info: str = ""  # the whole info string (code only)
    closed: bool = True  # False: an unclosed fence that runs to the end of the text


@dataclass
class Fence:
    lang: str  # fence_language(info): '' for an untagged fence
    info: str
    code: str  # the code, the opener's indent removed from every line
    start: int  # char span of the code in the text (fence lines excluded)
    end: int
    closed: bool


_LANG_RE = re.compile(r"[\w+#.-]+")


def fence_language(info: str) -> str:
    """The language tag of an info string, lower case: its first word, without the braces, dots
    and attributes around it (`{.python .numberLines}`, `{r, echo=FALSE}`, `python:main.py`,
    `py title="a.py"` -> python / r / python / py); '' when there is none."""
    word = info.strip().split(maxsplit=1)
    if not word:
        return ""
    m = _LANG_RE.search(word[0].lstrip("{.").split(":", 1)[0].split(",", 1)[0])
    return m.group(0).strip(".").lower() if m else ""


def dedent_lines(code: str, indent: int) -> tuple[str, list[int]]:
    """`code` with up to `indent` leading spaces removed from each line, and the index in `code`
    of every char kept."""
    if indent == 0:
        return code, list(range(len(code)))
    parts: list[str] = []
    keep: list[int] = []
    for m in LINE_RE.finditer(code):
        line = m.group(0)
        k = min(indent, len(line) - len(line.lstrip(" ")))
        parts.append(line[k:])
        keep.extend(range(m.start() + k, m.end()))
    return "".join(parts), keep


_FENCE_LINE_RE = re.compile(r"^ *(?:`{3,}|~{3,})[^\n]*$", re.MULTILINE)
_LIST_ITEM_RE = re.compile(r" *(?:[-+*]|\d{1,9}[.)])( {1,4})(?=\S)")
_OUTDENTED_RE = re.compile(r"^ *\S", re.MULTILINE)


def _list_end(text: str, prose_start: int, line_start: int, after: int, indent: int) -> int:
    """Where the list item holding a fence ends: the fence opens at `line_start` indented by
    `indent`, under a list item line (in the prose since `prose_start`) whose content starts at column c <= indent (with only
    indented, blank or lazy continuation lines between); the item
    (and the fence with it) ends at the first non-blank line after `after` indented by less than c.
    len(text) when the fence is not in a list item or the item runs to the end."""
    if indent == 0:
        return len(text)
    col = 0
    above = text[max(prose_start, line_start - 4000):line_start].splitlines()[-50:]
    for k in range(len(above) - 1, -1, -1):  # up to the item's first line
        m = _LIST_ITEM_RE.match(above[k])
        if m:
            col = m.end() if m.end() <= indent else 0
            break
        if above[k].strip() and not above[k].startswith(" ") and (k == 0 or not above[k - 1].strip()):
            break  # an unindented line after a blank one: outside any item (else a lazy continuation)
    if not col:
        return len(text)
    for o in _OUTDENTED_RE.finditer(text, after):
        if o.end() - 1 - o.start() < col and text[o.end() - 1] not in "\r\n":
            return o.start()
    return len(text)


def split_markdown(text: str, base: int = 0) -> list[Region]:
    """Prose and fenced code regions of `text` (offsets shifted by `base`); fence lines are in neither."""
    if "```" not in text and "~~~" not in text:
        return [Region("prose", base, base + len(text))] if text else []
    # only lines that look like a fence matter: (start, end incl. newline, line without \r)
    cands = []
    for m in _FENCE_LINE_RE.finditer(text):
        end = m.end() + 1 if m.end() < len(text) else m.end()
        cands.append((base + m.start(), base + end, m.group(0).rstrip("\r")))
    regions: list[Region] = []
    prose_start = base
    i = 0
    while i < len(cands):
        ls, le, body = cands[i]
        m = _FENCE_OPEN_RE.match(body)
        if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).strip()
        if ls > prose_start:
            regions.append(Region("prose", prose_start, ls))
        stop = base + _list_end(text, prose_start - base, ls - base, le - base, indent)
        close = None
        for j in range(i + 1, len(cands)):
            if cands[j][0] >= stop:
                break
            stripped = cands[j][2].lstrip(" ")
            if stripped.startswith(fence[0] * len(fence)) and not stripped.lstrip(fence[0]).strip():
                close = j
                break
        code_start = le
        code_end = cands[close][0] if close is not None else stop
        tag = fence_language(info)
        if tag in _MARKDOWN_TAGS:
            regions.extend(split_markdown(text[code_start - base:code_end - base], code_start))
        else:
            regions.append(Region("code", code_start, code_end, tag, indent, info, close is not None))
        if close is not None:
            i, prose_start = close + 1, cands[close][1]
        else:
            i, prose_start = next((j for j in range(i + 1, len(cands)) if cands[j][0] >= stop), len(cands)), stop
    if prose_start < base + len(text):
        regions.append(Region("prose", prose_start, base + len(text)))
    return regions


def fenced_blocks(text: str) -> list[Fence]:
    """Every fenced code block of `text` in order (markdown-tagged blocks are searched inside)."""
    out = []
    for r in split_markdown(text):
        if r.kind == "code":
            code, _ = dedent_lines(text[r.start:r.end], r.indent)
            out.append(Fence(r.lang, r.info, code, r.start, r.end, r.closed))
    return out
