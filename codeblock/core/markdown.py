"""Markdown fences: the one parser of fenced code blocks (segment, filter and the evaluation sanitizer).

`split_markdown(text)` returns the prose and fenced code regions of a text, CommonMark rules: a
fence is 3+ backticks or tildes indented by up to 3 spaces (more inside a list item); it closes only
with the same character, at least as long, and no info string; an unterminated fence runs to the
end; a fence tagged markdown/md is split again, so fences nested inside it are found.
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
    lang: str = ""  # fence info string's first word (code only)
    indent: int = 0  # spaces before the opening fence: removed from each code line before parsing


def _lines(text: str, base: int):
    for m in LINE_RE.finditer(text):
        line = m.group(0)
        yield base + m.start(), base + m.end(), line.rstrip("\n").rstrip("\r")


_FENCE_LINE_RE = re.compile(r"^ *(?:`{3,}|~{3,})[^\n]*$", re.MULTILINE)


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
        close = None
        for j in range(i + 1, len(cands)):
            stripped = cands[j][2].lstrip(" ")
            if stripped.startswith(fence[0] * len(fence)) and not stripped.lstrip(fence[0]).strip():
                close = j
                break
        code_start = le
        code_end = cands[close][0] if close is not None else base + len(text)
        tag = info.split(maxsplit=1)[0].lower() if info else ""
        if tag in _MARKDOWN_TAGS:
            regions.extend(split_markdown(text[code_start - base:code_end - base], code_start))
        else:
            regions.append(Region("code", code_start, code_end, tag, indent))
        i = (close + 1) if close is not None else len(cands)
        prose_start = cands[close][1] if close is not None else base + len(text)
    if prose_start < base + len(text):
        regions.append(Region("prose", prose_start, base + len(text)))
    return regions
