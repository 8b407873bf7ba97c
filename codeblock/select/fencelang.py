"""Which code blocks hold code: tagged fences go by their tag, untagged ones by their content.

`classify_untagged(code, spec)` reads an untagged fenced block (or an unfenced response) and says
what it is:
    code        it parses with the default grammar without error and is more than data
    empty       nothing but whitespace
    traceback   a Python traceback ("Traceback (most recent call last):", `File "...", line N`)
    console     an interactive session (`>>> `, `In [1]:`) or program output shown with prompts
    shell       commands (`$ ...`, `pip install ...`, `cd dir`) that do not parse as code
    data        parses, but only as literals and names: a printed value, JSON, a CSV row
    text        anything else that does not parse (prose, output)
Only `code` blocks are itemised; the others are neither items nor prose (they are skipped, and
counted in the segment stage's stats). The filter's heuristic rater uses the same rule.
"""

from __future__ import annotations

import re

from codeblock.select.languages import LanguageSpec, parser_for

KINDS = ("code", "empty", "traceback", "console", "shell", "data", "text")

_TRACEBACK_RE = re.compile(r"^Traceback \(most recent call last\):|^\s*File \"[^\"]*\", line \d+", re.M)
_CONSOLE_RE = re.compile(r"^\s*(?:>>>|In \[\d*\]:|Out\[\d*\]:)(?: |$)", re.M)
_SHELL_RE = re.compile(
    r"^\s*(?:\$ |sudo |pip3? |python3? |py |conda |apt(?:-get)? |brew |npm |npx |yarn |git |cd |ls\b|mkdir |rm |cp |mv "
    r"|export |set |curl |wget |docker |make\b|cmake |gcc |g\+\+ |javac |java |node |chmod |source |echo |cat |uv "
    r"|poetry |pytest\b|touch )"
)


def _only_data(root, spec: LanguageSpec) -> bool:
    allowed = set(spec.data_nodes)
    stack = [c for c in root.named_children]
    while stack:
        n = stack.pop()
        if n.type not in allowed:
            return False
        stack.extend(n.named_children)
    return True


def classify_untagged(code: str, spec: LanguageSpec | None) -> str:
    """What an untagged block holds (module docstring); `spec` is the default language's grammar
    (None: no grammar, so nothing is code)."""
    if not code.strip():
        return "empty"
    if _TRACEBACK_RE.search(code):
        return "traceback"
    if _CONSOLE_RE.search(code):
        return "console"
    if spec is not None:
        root = parser_for(spec.name).parse(code.encode("utf-8")).root_node
        if not root.has_error:
            stmts = [c for c in root.named_children if c.type not in spec.comments]
            if not stmts:
                return "text"  # comments only
            return "data" if _only_data(root, spec) else "code"
    first = next(line for line in code.splitlines() if line.strip())
    return "shell" if _SHELL_RE.match(first) else "text"
