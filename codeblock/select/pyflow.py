"""Control-flow graphs of one Python code block, with the definitions and uses on them (for dataflow.py).

`FlowBuilder.build(root)` walks a tree-sitter Python tree once and returns the module `Scope`
(codeblock/select/pyscope.py); every nested scope (function, lambda, class body, comprehension)
gets its own graph, created at a CHILD event of its parent. Compound statements and
comprehension loops are in codeblock/select/pycompound.py; this module has the blocks, events,
expressions, simple statements and scopes. Definitions and uses are numbered in `defs` / `uses` as (name, byte offset).

Nesting is bounded: past `max_depth` nested compound statements / scopes `TooDeep` is raised
(dataflow.py then skips the block), so the builder never reaches Python's recursion limit.
Expressions are walked with an explicit stack (a 1,000-term `a + b + ...` is not deep).
"""

from __future__ import annotations

from codeblock.select.pycompound import CompoundStatements
from codeblock.select.pyscope import (
    CHILD,
    COMPREHENSIONS,
    DEF,
    DEF_NEXT,
    DEFAULT_PARAMS,
    EXPR_SPECIAL,
    LEAVES,
    MAY,
    MAY_OFF,
    MAY_ON,
    MUST,
    TARGET_SEQ,
    USE,
    Scope,
    TooDeep,
)


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


class FlowBuilder(CompoundStatements):
    """Builds the scopes of one tree; `defs` / `uses` hold every definition and use by id."""

    def __init__(self, max_depth: int = 100):
        self.max_depth = max_depth
        self.depth = 0
        self.defs: list[tuple[str, int]] = []  # (name, byte of the binding occurrence)
        self.uses: list[tuple[str, int]] = []  # (name, byte of the read)
        self.scope = Scope("module", None)
        self.cur = 0  # current block of self.scope; -1 = unreachable so far
        self.ctx: list = []  # ("loop", head, after) | ("try", dispatch) | ["finally", entry, pending]
        self.n_exc = 0  # try/finally entries on ctx (exceptions have somewhere to go)
        self.fin_copies = 0  # finally clauses being built inside one another (each is built twice)

    # ---- graph primitives ---------------------------------------------------------------------
    def build(self, root) -> Scope:
        self.src, self.base = root.text, root.start_byte  # to tell f-strings from plain strings cheaply
        self.body(root)
        return self.scope

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise TooDeep(self.depth)

    def new_block(self) -> int:
        s = self.scope
        s.blocks.append([])
        s.succ.append([])
        return len(s.blocks) - 1

    def edge(self, a: int, b: int) -> None:
        if a >= 0:
            self.scope.succ[a].append(b)

    def follow(self) -> int:
        """Start a new block that follows the current one."""
        b = self.new_block()
        self.edge(self.cur, b)
        self.cur = b
        return b

    def join(self, ends) -> None:
        live = [e for e in ends if e >= 0]
        if not live:
            self.cur = -1
            return
        b = self.new_block()
        for e in live:
            self.scope.succ[e].append(b)
        self.cur = b

    def ev(self, e: tuple) -> None:
        if self.cur < 0:  # unreachable code still has its events, in a block nothing enters
            self.cur = self.new_block()
        self.scope.blocks[self.cur].append(e)

    def route(self, kind: str) -> None:
        """Edge for an exit of `kind` (raise | return | break | continue) from the current block."""
        for c in reversed(self.ctx):
            tag = c[0]
            if tag == "finally":
                self.edge(self.cur, c[1])
                c[2].add(kind)
                return
            if tag == "try" and kind == "raise":
                self.edge(self.cur, c[1])
                return
            if tag == "loop" and kind in ("break", "continue"):
                self.edge(self.cur, c[2] if kind == "break" else c[1])
                return

    # ---- events ---------------------------------------------------------------------------------
    def use(self, node) -> None:
        name = node.text.decode("utf-8", "replace")
        self.uses.append((name, node.start_byte))
        self.ev((USE, name, len(self.uses) - 1))

    def define(self, node, mode: int = MUST, owner: Scope | None = None) -> None:
        name = node.text.decode("utf-8", "replace")
        (owner or self.scope).bound.add(name)
        self.defs.append((name, node.start_byte))
        self.ev((DEF, name, len(self.defs) - 1, mode))

    def target(self, node, mode: int = MUST) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            t = n.type
            if t == "identifier":
                self.define(n, mode)
            elif t in TARGET_SEQ:
                stack.extend(reversed(n.named_children))
            elif t == "attribute":
                self.expr(n.child_by_field_name("object"))
            elif t != "comment":  # subscripts and anything else: reads only
                self.expr(n)

    def expr(self, node, may: int = MUST) -> None:  # noqa: C901 - the hot loop, kept in one piece
        """Uses (and walrus definitions) of an expression in evaluation order, with an explicit stack.

        Stack entries are nodes or int markers: MAY_ON / MAY_OFF bracket a subtree that may not be
        evaluated (a walrus there is a MAY definition), DEF_NEXT makes the next node a walrus target."""
        if node is None:
            return
        if self.cur < 0:
            self.cur = self.new_block()
        events = self.scope.blocks[self.cur]  # nested scopes below save and restore scope/cur
        uses = self.uses
        stack = [node]
        pop, push, extend = stack.pop, stack.append, stack.extend
        maybe, define_next = (1 if may else 0), False
        while stack:
            n = pop()
            if n.__class__ is int:
                if n == DEF_NEXT:
                    define_next = True
                else:
                    maybe += 1 if n == MAY_ON else -1
                continue
            t = n.type
            if t == "identifier":
                if define_next:  # walrus target: binds in the nearest enclosing non-comprehension scope
                    define_next = False
                    owner = self.scope
                    while owner.kind == "comprehension" and owner.parent is not None:
                        owner = owner.parent
                    self.define(n, MAY if maybe else MUST, owner)
                    continue
                name = n.text.decode("utf-8", "replace")
                uses.append((name, n.start_byte))
                events.append((USE, name, len(uses) - 1))
            elif t not in EXPR_SPECIAL:
                extend(reversed(n.named_children))
            elif t in LEAVES:
                continue
            elif t == "string":  # only an f-string has names inside
                k = n.start_byte - self.base
                c = self.src[k:k + 2]
                if c[:1] in b"fF" or (c[:1] in b"rRbBuU" and c[1:] in b"fF"):
                    extend(reversed(n.named_children))
            elif t == "attribute" or t == "keyword_argument":
                k = n.child_by_field_name("object" if t == "attribute" else "value")
                if k is not None:
                    push(k)
            elif t == "named_expression":
                name, value = n.child_by_field_name("name"), n.child_by_field_name("value")
                if name is not None:
                    extend((name, DEF_NEXT))
                if value is not None:
                    push(value)
            elif t in COMPREHENSIONS:
                self.comprehension(n)
            elif t == "lambda":
                self.lambda_(n)
            else:  # a if c else b: c first, then a or b; x and y / x or y: y may not run
                kids = n.named_children
                if t == "conditional_expression" and len(kids) > 1:
                    kids = [kids[1], *kids[:1], *kids[2:]]
                extend((MAY_OFF, *reversed(kids[1:]), MAY_ON))
                push(kids[0])

    # ---- statements ---------------------------------------------------------------------------
    def body(self, node) -> None:
        if node is None:
            return
        for ch in node.named_children:
            if ch.type != "comment":
                self.stmt(ch)

    def stmt(self, n) -> None:
        h = _COMPOUND.get(n.type)
        if h is not None:
            self.enter()
            h(self, n)
            self.depth -= 1
            return
        self.simple(n)
        if self.n_exc and self.cur >= 0:  # the next statement may raise: the handler sees this state
            self.route("raise")
            self.follow()

    def simple(self, n) -> None:  # noqa: C901
        t = n.type
        if t == "expression_statement":
            for ch in n.named_children:
                if ch.type == "assignment":
                    self.assignment(ch)
                elif ch.type == "augmented_assignment":
                    left = ch.child_by_field_name("left")
                    self.expr(ch.child_by_field_name("right"))
                    self.expr(left)  # x += 1 reads x ...
                    if left is not None and left.type == "identifier":
                        self.define(left)  # ... and defines it
                else:
                    self.expr(ch)
        elif t == "return_statement":
            self.body_exprs(n)
            self.route("return")
            self.cur = -1
        elif t == "raise_statement":
            self.body_exprs(n)
            self.route("raise")
            self.cur = -1
        elif t in ("break_statement", "continue_statement"):
            self.route("break" if t == "break_statement" else "continue")
            self.cur = -1
        elif t == "import_statement":
            for ch in n.named_children:
                self.bind_import(ch, first=True)
        elif t == "import_from_statement":
            mod = n.child_by_field_name("module_name")
            for ch in n.named_children:
                if mod is None or ch.start_byte != mod.start_byte:
                    self.bind_import(ch, first=False)
        elif t == "global_statement":
            self.scope.globals_.update(_text(c) for c in n.named_children if c.type == "identifier")
        elif t == "nonlocal_statement":
            self.scope.nonlocals.update(_text(c) for c in n.named_children if c.type == "identifier")
        elif t == "type_alias_statement":
            self.expr(n.child_by_field_name("right"))
            left = n.child_by_field_name("left")
            ids = [c for c in (left.named_children if left is not None else []) if c.type == "identifier"]
            if ids:
                self.define(ids[0])
        elif t not in ("pass_statement", "future_import_statement", "comment"):
            self.body_exprs(n)  # assert, del (read only), print, exec, ERROR, ...

    def body_exprs(self, n) -> None:
        for ch in n.named_children:
            self.expr(ch)

    def assignment(self, n) -> None:
        targets = []
        node = n
        while node is not None and node.type == "assignment":
            left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
            self.expr(node.child_by_field_name("type"))
            if right is None:  # `x: int` makes x local to the scope but binds nothing; `a.b: int` reads a
                if left is not None and left.type == "identifier":
                    self.scope.bound.add(_text(left))
                elif left is not None:
                    self.expr(left)
                node = None
                break
            targets.append(left)
            node = right
        self.expr(node)  # the value is evaluated first, then the targets bound left to right
        for t in targets:
            self.target(t)

    def bind_import(self, node, first: bool) -> None:
        if node.type == "aliased_import":
            alias = node.child_by_field_name("alias")
            if alias is not None:
                self.define(alias)
        elif node.type == "dotted_name":
            ids = [c for c in node.named_children if c.type == "identifier"]
            if ids:
                self.define(ids[0] if first else ids[-1])

    # ---- compound statements ------------------------------------------------------------------
    def open_scope(self, kind: str, node):
        child = Scope(kind, self.scope, node.start_byte)
        self.scope.children.append(child)
        self.ev((CHILD, child))
        saved = (self.scope, self.cur, self.ctx, self.n_exc)
        self.scope, self.cur, self.ctx, self.n_exc = child, 0, [], 0
        self.enter()
        return saved

    def close_scope(self, saved) -> None:
        self.depth -= 1
        self.scope, self.cur, self.ctx, self.n_exc = saved

    def params(self, params, outer_reads: bool) -> list:
        """Defaults/annotations read in the enclosing scope (when `outer_reads`); returns the names."""
        names, stack = [], list(reversed(params.named_children)) if params is not None else []
        while stack:
            p = stack.pop()
            t = p.type
            if t == "identifier":
                names.append(p)
            elif t in DEFAULT_PARAMS:
                if outer_reads:
                    self.expr(p.child_by_field_name("value"))
                    self.expr(p.child_by_field_name("type"))
                name = p.child_by_field_name("name")
                if name is None and p.named_child_count:
                    name = p.named_children[0]
                if name is not None:
                    stack.append(name)
            elif t in ("list_splat_pattern", "dictionary_splat_pattern", "tuple_pattern"):
                stack.extend(reversed(p.named_children))
        return names

    def definition(self, n) -> None:
        """def / class: the header is read in the enclosing scope, the body is a scope of its own,
        then the name is bound."""
        kind = "function" if n.type == "function_definition" else "class"
        names = self.params(n.child_by_field_name("parameters"), True) if kind == "function" else []
        for field in ("superclasses", "return_type", "type_parameters"):
            self.expr(n.child_by_field_name(field))
        saved = self.open_scope(kind, n)
        for p in names:
            self.define(p)
        self.body(n.child_by_field_name("body"))
        self.close_scope(saved)
        name = n.child_by_field_name("name")
        if name is not None:
            self.define(name)

    def lambda_(self, n) -> None:
        names = self.params(n.child_by_field_name("parameters"), True)
        saved = self.open_scope("lambda", n)
        for p in names:
            self.define(p)
        self.expr(n.child_by_field_name("body"))
        self.close_scope(saved)

    def decorated(self, n) -> None:
        for ch in n.named_children:
            if ch.type == "decorator":
                self.body_exprs(ch)
        d = n.child_by_field_name("definition")
        if d is not None and d.type in ("function_definition", "class_definition"):
            self.definition(d)
        elif d is not None:  # error recovery can leave something else here
            self.simple(d)


_COMPOUND = {
    "if_statement": FlowBuilder.if_, "for_statement": FlowBuilder.for_, "while_statement": FlowBuilder.while_,
    "with_statement": FlowBuilder.with_, "try_statement": FlowBuilder.try_, "match_statement": FlowBuilder.match_,
    "function_definition": FlowBuilder.definition, "class_definition": FlowBuilder.definition,
    "decorated_definition": FlowBuilder.decorated,
}
