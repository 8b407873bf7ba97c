"""From a model's raw output to a program.

Instruct answers: evalplus's own sanitizer (see `to_program`); BigCodeBench answers: bigcodebench's
own (`bigcodebench_program`). Completion answers: cut at the
stop sequences, drop trailing lines until the code parses (a generation cut by max_new_tokens),
and keep only what a test needs: imports, function and class definitions, and top-level
assignments; top-level calls, prints, `if __name__ == "__main__":` blocks and example usage are
dropped, so demo code cannot run (or read stdin) at import time.
"""

from __future__ import annotations

import ast

from codeblock.core.markdown import fenced_blocks

# stop sequences of completion-style prompts (the Codex paper's, plus a fence)
COMPLETION_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```", "\nassert "]


def closed_fence_end(text: str) -> int | None:
    """Where the first closed fenced block of `text` ends (after its closing fence line), by the
    project's one fence parser (codeblock/core/markdown.py: CRLF, ~~~, longer fences, lists);
    None while no block is closed. The stop rule of instruct output."""
    for f in fenced_blocks(text):
        if f.closed:
            line_end = text.find("\n", f.end)
            return len(text) if line_end < 0 else line_end
    return None


def fence_closed(text: str) -> bool:
    """True once `text` holds an opened and closed fenced block."""
    return closed_fence_end(text) is not None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def repair_truncated(code: str) -> str:
    """Drop trailing lines until the code parses (generation cut by max_new_tokens)."""
    if _parses(code):
        return code
    lines = code.splitlines()
    for end in range(len(lines) - 1, 0, -1):
        cand = "\n".join(lines[:end])
        if _parses(cand):
            return cand
    return code


def prune(code: str, entry_point: str = "") -> str:
    """Keep imports, defs, classes and top-level assignments; drop calls, prints, main blocks."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    keep_types = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
                  ast.AnnAssign, ast.AugAssign)
    lines = code.splitlines()
    parts = []
    for node in tree.body:
        if isinstance(node, keep_types):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and _calls_input(node):
                continue
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
            parts.append("\n".join(lines[start:node.end_lineno]))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # module docstring
        elif isinstance(node, ast.Try) and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in node.body):
            parts.append("\n".join(lines[node.lineno - 1:node.end_lineno]))  # guarded imports
    return "\n\n".join(parts) + "\n"


def _calls_input(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "input"
               for n in ast.walk(node))


def _header_imports(prompt_code: str) -> str:
    """Import lines of the problem's code prompt (e.g. `from typing import List`)."""
    tree = None
    for candidate in (prompt_code, prompt_code.rstrip() + "\n    pass\n"):  # a code prompt often ends in a bare def
        try:
            tree = ast.parse(candidate)
            break
        except (SyntaxError, ValueError):
            continue
    if tree is None:
        return ""
    lines = prompt_code.splitlines()
    return "\n".join("\n".join(lines[n.lineno - 1:n.end_lineno]) for n in tree.body
                     if isinstance(n, (ast.Import, ast.ImportFrom)))


def cut_at_stops(text: str, stops: list[str]) -> str:
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]


def bigcodebench_program(raw: str, entry_point: str, prompt_format: str, completion_prompt: str = "") -> str:
    """bigcodebench 0.2.5's extraction (`bigcodebench.sanitize.sanitize`, what its codegen writes as
    `solution`): a chat answer is sanitized as it is; a direct completion is sanitized together
    with the prompt it continues. Scoring then prepends the task's code prompt (evaluate's
    calibration, `bcb_plan.calibrate`)."""
    from bigcodebench.sanitize import sanitize

    if prompt_format == "completion" and completion_prompt:
        return sanitize(completion_prompt + cut_at_stops(raw, COMPLETION_STOPS), entry_point)
    return sanitize(raw, entry_point)


def to_program(raw: str, entry_point: str, prompt_format: str, completion_prompt: str = "",
               evalplus_style: bool = False, bigcodebench_style: bool = False) -> str:
    """The program to execute for one raw generation (BigCodeBench: `bigcodebench_program`).

    Instruct answers go through evalplus's own sanitizer (`evalplus.sanitize.sanitize`): the first
    definition of a name wins, only what the entry point depends on is kept (top-level example
    code is dropped), and an answer without a fence yields its longest valid code block. For
    HumanEval+/MBPP+ (`evalplus_style`) that is the whole program, exactly as evalplus's codegen
    writes it; other benchmarks also get the import lines of the problem's code prompt."""
    if bigcodebench_style:
        return bigcodebench_program(raw, entry_point, prompt_format, completion_prompt)
    if prompt_format == "completion" and completion_prompt:
        body = cut_at_stops(raw, COMPLETION_STOPS)
        code = repair_truncated(completion_prompt + body)
        return prune(code, entry_point)
    from evalplus.sanitize import sanitize

    program = sanitize(raw, entrypoint=entry_point or None)
    if evalplus_style:
        return program
    header = _header_imports(completion_prompt) if completion_prompt else ""
    return (header + "\n\n" + program) if header else program
