"""Offline builders: instruction-response pairs from data that ships in registry packages.

- `dataframebench_train`: the 709 training tasks of dataframebench (explicitly allowed for training;
  its val/test splits are evaluation data). Instruction = the task prompt with the pandas variant
  filled in; response = one sentence of prose plus the fenced pandas reference solution.
- `algorithms`: documented functions of the `algorithms` package (MIT), read from its source with
  `ast` (nothing is imported or executed). Instruction = the docstring rewritten as a request,
  with its doctest examples; response = short prose plus the fenced function (docstring removed,
  module imports it uses prepended) and, when there are doctests, a sentence on how to check it.
- `stdlib`: the same for functions of the running Python's standard library that carry doctests.

The prose is templated and deterministic (chosen by a hash of the id), so a rebuild is identical.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codeblock.core.io import MissingInput

# Standard-library modules with documented, self-contained functions (no GUI, no test suites).
STDLIB_SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "site-packages",
                    "distutils", "__pycache__", "venv", "pydoc_data", "encodings"}

_INTROS = [
    "Here is an implementation of `{name}`.",
    "The function below, `{name}`, does what was asked.",
    "This is one way to write `{name}` in Python.",
    "Below is a Python implementation of `{name}`.",
]
_OUTROS_DOCTEST = [
    "The examples from the description can be checked with `python -m doctest`.",
    "Running the examples above with doctest confirms the behaviour.",
]
_OUTROS_PLAIN = [
    "It returns the result directly, without modifying its inputs unless stated.",
    "The implementation keeps to the standard library.",
]


def _pick(options: list[str], key: str) -> str:
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return options[h % len(options)]


def _fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


# ---------------------------------------------------------------------------------------------
# dataframebench


def iter_dataframebench(raw_dir: Path, split: str = "train") -> Iterator[tuple[int, dict[str, Any]]]:
    path = raw_dir / "dataframebench" / f"{split}.jsonl"
    if not path.exists():
        raise MissingInput(path, "offline asset", "make setup")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            row = json.loads(line)
            gt = row.get("ground_truth")
            if isinstance(gt, str):
                gt = ast.literal_eval(gt)
            code = (gt or {}).get("pandas") if isinstance(gt, dict) else None
            prompt = row.get("prompt")
            if isinstance(prompt, str):
                prompt = prompt.replace("{library_instruction}", "Use the pandas library.").replace(
                    "{library_import}", "import pandas as pd"
                )
            name = row.get("entry_point") or "task_func"
            response = None
            if isinstance(code, str):
                intro = _pick(
                    [
                        f"The solution below implements `{name}` with pandas.",
                        f"Here is a self-contained implementation of `{name}` using pandas.",
                        f"This pandas-based `{name}` follows the specification.",
                    ],
                    row.get("task_id", str(lineno)),
                )
                response = f"{intro}\n\n{_fenced(code)}\n"
            yield lineno, {"id": row.get("task_id"), "instruction": prompt, "response": response,
                           "domain": row.get("category")}


# ---------------------------------------------------------------------------------------------
# documented functions (algorithms package source, standard library)


def _used_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.value.id for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }


def _imports_for(tree: ast.Module, fn: ast.AST, source: str) -> list[str]:
    used = _used_names(fn)
    lines = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            if isinstance(stmt, ast.ImportFrom) and (stmt.level or stmt.module == "__future__"):
                continue  # relative imports do not make sense in a standalone answer
            names = {(a.asname or a.name).split(".")[0] for a in stmt.names}
            if names & used:
                lines.append(ast.get_source_segment(source, stmt) or "")
    return [x for x in lines if x]


def _helpers_for(tree: ast.Module, fn: ast.FunctionDef, source: str) -> list[str]:
    """Module-level functions and classes the function refers to (one level), in source order,
    so the answer is self-contained."""
    used = _used_names(fn) - {fn.name}
    out = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) and stmt.name in used:
            seg = ast.get_source_segment(source, stmt)
            if seg:
                out.append(seg)
    return out


def _strip_docstring(fn: ast.FunctionDef, source: str) -> str:
    """The function's source with its docstring statement removed (indentation kept)."""
    seg = ast.get_source_segment(source, fn, padded=False)
    if seg is None:
        return ""
    start_line = fn.lineno
    if fn.decorator_list:
        start_line = min(d.lineno for d in fn.decorator_list)
        seg = "\n".join(source.splitlines()[start_line - 1: fn.end_lineno])
    lines = seg.splitlines()
    doc = fn.body[0]
    a, b = doc.lineno - start_line, doc.end_lineno - start_line
    if len(fn.body) == 1:  # docstring only: nothing left to implement
        return ""
    del lines[a: b + 1]
    return textwrap.dedent("\n".join(lines))


def _instruction(name: str, args: list[str], doc: str) -> str:
    sig = ", ".join(args)
    body = textwrap.dedent(doc).strip()
    return f"Write a Python function `{name}({sig})` that does the following.\n\n{body}"


def functions_from_source(source: str, module: str, require_doctest: bool) -> Iterator[dict[str, Any]]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node, clean=True)
        if not doc or len(doc) < 20:
            continue
        has_doctest = ">>>" in doc
        if require_doctest and not has_doctest:
            continue
        code = _strip_docstring(node, source)
        if not code.strip():
            continue
        imports = _imports_for(tree, node, source)
        helpers = _helpers_for(tree, node, source)
        full = ("\n".join(imports) + "\n\n\n" if imports else "") + "".join(h + "\n\n\n" for h in helpers) + code
        ident = f"{module}.{node.name}"
        args = [a.arg for a in node.args.posonlyargs + node.args.args]
        if node.args.vararg:
            args.append("*" + node.args.vararg.arg)
        args += [a.arg for a in node.args.kwonlyargs]
        if node.args.kwarg:
            args.append("**" + node.args.kwarg.arg)
        outro = _pick(_OUTROS_DOCTEST if has_doctest else _OUTROS_PLAIN, ident + "o")
        response = f"{_pick(_INTROS, ident).format(name=node.name)}\n\n{_fenced(full)}\n\n{outro}\n"
        yield {"id": ident, "instruction": _instruction(node.name, args, doc), "response": response,
               "domain": module.split(".")[0]}


def _iter_tree(root: Path, package: str, require_doctest: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    i = 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if set(rel.parts) & STDLIB_SKIP_DIRS or rel.name.startswith("test_"):
            continue
        module = ".".join([package, *rel.with_suffix("").parts]).removesuffix(".__init__").strip(".")
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for rec in functions_from_source(source, module, require_doctest):
            yield i, rec
            i += 1


def iter_algorithms(raw_dir: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    root = raw_dir / "algorithms"
    if not root.exists():
        raise MissingInput(root, "offline asset", "make setup")
    return _iter_tree(root, "algorithms", require_doctest=False)


def iter_stdlib(raw_dir: Path | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Functions with doctests in the running interpreter's standard library (the pool records the
    Python version, since another version's stdlib gives another set)."""
    return _iter_tree(Path(sysconfig.get_paths()["stdlib"]), "", require_doctest=True)


BUILDERS = {
    "dataframebench_train": lambda raw_dir, split: iter_dataframebench(raw_dir, "train"),
    "algorithms": lambda raw_dir, split: iter_algorithms(raw_dir),
    "stdlib": lambda raw_dir, split: iter_stdlib(raw_dir),
}

BUILDER_VERSION = {"stdlib": f"python-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"}


def iter_offline(name: str, raw_dir: str | Path, split: str = "train") -> Iterator[tuple[int, dict[str, Any]]]:
    if name not in BUILDERS:
        raise ValueError(f"unknown offline builder '{name}' (known: {sorted(BUILDERS)})")
    return BUILDERS[name](Path(raw_dir), split)


def offline_file(name: str, raw_dir: str | Path) -> str:
    """What a bad-row error should name as the file of an offline source."""
    return {
        "dataframebench_train": str(Path(raw_dir) / "dataframebench" / "train.jsonl"),
        "algorithms": str(Path(raw_dir) / "algorithms"),
        "stdlib": sysconfig.get_paths()["stdlib"],
    }.get(name, name)
