"""The pieces pyflow.py builds a Python code block's control flow from: scopes, event kinds, node sets.

A `Scope` (module, function, lambda, class body, comprehension) holds its own graph: `blocks`, a list
of basic blocks, each an ordered list of events, and `succ`, the successors of each block (block 0
is the entry). Events:
    (DEF, name, def_id, mode)   a binding of `name`; mode MUST kills the other definitions of the
                                name, MAY (a walrus inside `and`/`or`/`x if c else y`) kills nothing
    (USE, name, use_id)         a read of `name`
    (CHILD, scope)              a nested scope is created here (def, lambda, class, comprehension)
"""

from __future__ import annotations

from dataclasses import dataclass

DEF, USE, CHILD = 0, 1, 2
MUST, MAY = 0, 1


class TooDeep(Exception):
    """The block nests compound statements / scopes deeper than the builder's `max_depth`."""


@dataclass(frozen=True, slots=True)
class Binding:
    name: str
    pos: int  # byte where the binding occurrence starts (kept for callers of the old API; = site)
    site: int  # byte of the binding occurrence (decides its item)


@dataclass(frozen=True, slots=True)
class Use:
    name: str
    site: int


class Scope:
    __slots__ = ("kind", "parent", "site", "deferred", "blocks", "succ", "bound", "globals_", "nonlocals", "children",
                 "owned", "exports", "solved", "pstate", "pblock", "pindex")

    def __init__(self, kind: str, parent: Scope | None, site: int = 0):
        self.kind = kind  # module | function | lambda | class | comprehension
        self.parent = parent
        self.site = site  # byte where its node (def, lambda, class, comprehension) starts
        self.deferred = kind in ("function", "lambda")  # the body runs later (when called)
        self.blocks: list[list[tuple]] = [[]]
        self.succ: list[list[int]] = [[]]
        self.bound: set[str] = set()  # names a binding in this scope assigns (before global/nonlocal)
        self.globals_: set[str] = set()
        self.nonlocals: set[str] = set()
        self.children: list[Scope] = []
        self.owned: set[str] = set()  # filled by reaching.py
        self.exports: list = []
        self.solved = None
        self.pstate = 0  # reaching-definition state of the parent where this scope is created
        self.pblock = 0
        self.pindex = 0


TARGET_SEQ = frozenset({
    "pattern_list", "tuple_pattern", "list_pattern", "tuple", "list", "parenthesized_expression",
    "list_splat_pattern", "list_splat", "as_pattern_target", "expression_list",
})
COMPREHENSIONS = frozenset({"list_comprehension", "set_comprehension", "dictionary_comprehension",
                            "generator_expression"})
# nodes with no names under them (skipped by the expression walk)
LEAVES = frozenset({"comment", "integer", "float", "true", "false", "none", "ellipsis", "string_start",
                    "string_content", "string_end", "escape_sequence", "type_conversion", "keyword_separator",
                    "positional_separator", "wildcard_import", "line_continuation"})
# expression nodes the walk does not just descend into
EXPR_SPECIAL = LEAVES | COMPREHENSIONS | {"attribute", "keyword_argument", "named_expression", "lambda",
                                          "conditional_expression", "boolean_operator", "string"}
MAY_ON, MAY_OFF, DEF_NEXT = 1, 2, 3  # markers on the expression walk's stack (see FlowBuilder.expr)
DEFAULT_PARAMS = frozenset({"default_parameter", "typed_default_parameter", "typed_parameter"})


