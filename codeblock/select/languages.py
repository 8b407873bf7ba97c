"""Grammar registry: which tree-sitter grammar parses a fenced code block, and how its nodes are read.

Segmentation (codeblock/segment.py) is written against the `LanguageSpec` fields below, never against
node names of one grammar, so adding a language is one line in `LANGUAGES`, e.g.

    "javascript": LanguageSpec("javascript", "tree_sitter_javascript", aliases=("js", "jsx"),
                               containers=("program", "statement_block"), comments=("comment",)),

(with the grammar's wheel installed). Data-flow analysis (codeblock/dataflow.py) exists for Python
only; for another language its items still get utilities, with Reach = Bridge = 0.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    module: str  # python module of the tree-sitter grammar wheel (exposes language())
    aliases: tuple[str, ...] = ()  # fence info strings that select this grammar
    # Nodes whose named children are statements (the file root and statement blocks).
    containers: tuple[str, ...] = ("module", "block")
    # Extras that belong to no item.
    comments: tuple[str, ...] = ("comment",)
    # Wrappers whose `definition` child carries the body (decorators stay with their definition).
    wrappers: tuple[str, ...] = ("decorated_definition",)
    # Leaf-like nodes read as ONE literal token span (their inner punctuation is still core).
    atomic: tuple[str, ...] = ("string", "concatenated_string")
    # Leaves that are punctuation or brackets, never core logic.
    punctuation: tuple[str, ...] = ("(", ")", "[", "]", "{", "}", ",", ":", ";", ".", "->", "\\", "@", "line_continuation")
    # A statement made of nothing but this child type is a docstring (no core tokens).
    docstring_statement: str = "expression_statement"
    docstring_child: str = "string"
    # Named nodes a printed value or a data literal is made of: an untagged block built only of
    # statements of these is data (`[1, 2]`, `{"a": 1}`, `6`, a CSV row), not code.
    data_nodes: tuple[str, ...] = (
        "expression_statement", "identifier", "integer", "float", "string", "string_start", "string_content",
        "string_end", "escape_sequence", "concatenated_string", "true", "false", "none", "list", "tuple", "set",
        "dictionary", "pair", "expression_list", "parenthesized_expression", "unary_operator", "comment",
    )


LANGUAGES: dict[str, LanguageSpec] = {
    "python": LanguageSpec("python", "tree_sitter_python", aliases=("py", "python3", "py3", "ipython", "pycon3")),
}


def get_spec(tag: str | None, default: str = "python") -> LanguageSpec | None:
    """The grammar for a fence's info string (first word, case-insensitive); None if unknown.

    An empty tag means `default` (segment.default_language)."""
    word = (tag or "").strip().split(maxsplit=1)
    key = (word[0] if word else default).lower().lstrip("{.").rstrip("}")
    if key in LANGUAGES:
        return LANGUAGES[key]
    for spec in LANGUAGES.values():
        if key in spec.aliases:
            return spec
    return None


@cache
def parser_for(name: str):
    """A tree-sitter Parser for a registered language (one per process, cached)."""
    from tree_sitter import Language, Parser

    spec = LANGUAGES[name]
    mod = importlib.import_module(spec.module)
    return Parser(Language(mod.language()))
