"""Stage 4: a light static def-use graph per code block, lifted to coding items (METHOD.md section 4).

Definitions (bindings) collected from the tree-sitter tree of a Python block:
    assignments (tuple/list/starred/parenthesised targets, chained and annotated), augmented
    assignments (a use AND a definition), for targets, with ... as, except ... as, the walrus
    operator (binds in the enclosing non-comprehension scope), comprehension variables (own scope;
    the first iterable is evaluated in the enclosing scope, as Python does), def/class names,
    def and lambda parameters (defaults and annotations are uses in the enclosing scope), imports
    (`import a.b` binds a; `as` binds the alias), match-case captures, and global/nonlocal
    declarations (the binding goes to the module / enclosing function scope).
Uses: identifier reads (attribute names and keyword-argument names are not reads).

Resolution (the "reaching definition" of a use):
    the scope that binds the name is found by Python's LEGB rule (class bodies are skipped by
    nested functions; global/nonlocal redirect). In the use's own scope the reaching definition is
    the last binding whose statement ended before the use (straight-line order; no loop back
    edges). A use that resolves to an enclosing scope runs at call time, so it takes the last
    binding before it, or else the first one after it (a function calling a helper defined below).
    Inside a comprehension the comprehension's own variables always reach. Names bound nowhere
    (builtins, imports of other blocks) give no edge.

Item graph: edge i -> j (i != j) when item j contains a use whose reaching definition lies in item i.
    Reach(i)  = |items transitively reachable from i| / (n - 1)
    Bridge(i) = betweenness centrality of i (Brandes' algorithm, directed, unweighted) / ((n-1)(n-2))
Not tracked (known limits): aliasing, mutation through attributes or subscripts, dynamic calls,
exec/eval, names flowing between different code blocks of one response.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Scope:
    kind: str  # module | function | class | comprehension
    parent: Scope | None
    bindings: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # name -> [(pos, site)]
    globals_: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Binding:
    name: str
    pos: int  # byte after which the binding holds (end of its statement / header)
    site: int  # byte of the binding occurrence (decides its item)


@dataclass(frozen=True)
class Use:
    name: str
    site: int


_TARGET_SEQ = {
    "pattern_list", "tuple_pattern", "list_pattern", "tuple", "list", "parenthesized_expression",
    "list_splat_pattern", "list_splat", "as_pattern_target", "expression_list",
}
_COMPREHENSIONS = {"list_comprehension", "set_comprehension", "dictionary_comprehension", "generator_expression"}


_SPECIAL = frozenset({
    "identifier", "comment", "assignment", "augmented_assignment", "for_statement", "as_pattern",
    "named_expression", *_COMPREHENSIONS, "decorated_definition", "function_definition", "lambda",
    "class_definition", "import_statement", "import_from_statement", "global_statement", "nonlocal_statement",
    "attribute", "keyword_argument", "case_clause",
})


class PythonDefUse:
    """Collects bindings and uses of one Python tree, then resolves each use to its reaching binding."""

    def __init__(self):
        self.module = Scope("module", None)
        self.uses: list[tuple[Use, Scope]] = []

    # ---- collection ---------------------------------------------------------------------------
    def declared_scope(self, name: str, scope: Scope) -> Scope | None:
        """The scope a `global` / `nonlocal` declaration in `scope` sends `name` to: the module,
        or the nearest enclosing function that binds it (None when no function does). `scope`
        itself when the name is not declared."""
        if name in scope.globals_:
            return self.module
        if name in scope.nonlocals:
            s = scope.parent
            while s is not None and not (s.kind == "function" and name in s.bindings):
                s = s.parent
            return s
        return scope

    def bind(self, name: str, scope: Scope, pos: int, site: int) -> None:
        target = self.declared_scope(name, scope) or self.module
        target.bindings.setdefault(name, []).append((pos, site))

    def use(self, node, scope: Scope) -> None:
        self.uses.append((Use(node.text.decode("utf-8", "replace"), node.start_byte), scope))

    def bind_target(self, node, scope: Scope, pos: int) -> None:
        t = node.type
        if t == "identifier":
            self.bind(node.text.decode("utf-8", "replace"), scope, pos, node.start_byte)
        elif t in _TARGET_SEQ:
            for ch in node.named_children:
                self.bind_target(ch, scope, pos)
        elif t == "attribute":
            self.visit(node.child_by_field_name("object"), scope)
        else:  # subscript and anything else: reads only
            self.visit(node, scope)

    def visit_children(self, node, scope: Scope) -> None:
        for ch in node.named_children:
            self.visit(ch, scope)

    def visit(self, node, scope: Scope) -> None:  # noqa: C901 - one dispatch table reads best here
        if node is None:
            return
        t = node.type
        if t not in _SPECIAL:  # most nodes: just walk into them
            for ch in node.named_children:
                self.visit(ch, scope)
            return
        if t == "identifier":
            self.use(node, scope)
        elif t == "comment":
            return
        elif t == "assignment":
            self.visit(node.child_by_field_name("right"), scope)
            self.visit(node.child_by_field_name("type"), scope)
            left = node.child_by_field_name("left")
            if node.child_by_field_name("right") is None and node.child_by_field_name("type") is not None:
                # `x: int` alone declares, does not bind
                if left is not None and left.type != "identifier":
                    self.visit(left, scope)
                return
            self.bind_target(left, scope, node.end_byte)
        elif t == "augmented_assignment":
            left = node.child_by_field_name("left")
            self.visit(node.child_by_field_name("right"), scope)
            self.visit(left, scope)  # x += 1 reads x ...
            if left is not None and left.type == "identifier":
                self.bind_target(left, scope, node.end_byte)  # ... and defines it
        elif t == "for_statement":
            right = node.child_by_field_name("right")
            self.visit(right, scope)
            self.bind_target(node.child_by_field_name("left"), scope, right.end_byte if right else node.start_byte)
            self.visit(node.child_by_field_name("body"), scope)
            self.visit(node.child_by_field_name("alternative"), scope)
        elif t == "as_pattern":
            kids = node.named_children
            for ch in kids:
                if ch.type != "as_pattern_target":
                    self.visit(ch, scope)
            for ch in kids:
                if ch.type == "as_pattern_target":
                    self.bind_target(ch, scope, node.end_byte)
        elif t == "named_expression":
            self.visit(node.child_by_field_name("value"), scope)
            s = scope
            while s.kind == "comprehension" and s.parent is not None:
                s = s.parent
            name = node.child_by_field_name("name")
            if name is not None:
                self.bind_target(name, s, node.end_byte)
        elif t in _COMPREHENSIONS:
            self.visit_comprehension(node, scope)
        elif t == "decorated_definition":
            for ch in node.named_children:
                if ch.type == "decorator":
                    self.visit_children(ch, scope)
            self.visit(node.child_by_field_name("definition"), scope)
        elif t == "function_definition":
            self.visit_function(node, scope, node.child_by_field_name("parameters"), node.child_by_field_name("body"))
        elif t == "lambda":
            self.visit_function(node, scope, node.child_by_field_name("parameters"), node.child_by_field_name("body"))
        elif t == "class_definition":
            self.visit(node.child_by_field_name("superclasses"), scope)
            self.visit(node.child_by_field_name("type_parameters"), scope)
            inner = Scope("class", scope)
            self.visit(node.child_by_field_name("body"), inner)
            name = node.child_by_field_name("name")
            if name is not None:
                self.bind_target(name, scope, node.end_byte)
        elif t == "import_statement":
            for ch in node.named_children:
                self.bind_import(ch, scope, node.end_byte, first=True)
        elif t == "import_from_statement":
            mod = node.child_by_field_name("module_name")
            for ch in node.named_children:
                if mod is not None and ch.start_byte == mod.start_byte:
                    continue
                self.bind_import(ch, scope, node.end_byte, first=False)
        elif t == "global_statement":
            scope.globals_.update(c.text.decode("utf-8", "replace") for c in node.named_children if c.type == "identifier")
        elif t == "nonlocal_statement":
            scope.nonlocals.update(c.text.decode("utf-8", "replace") for c in node.named_children if c.type == "identifier")
        elif t == "attribute":
            self.visit(node.child_by_field_name("object"), scope)
        elif t == "keyword_argument":
            self.visit(node.child_by_field_name("value"), scope)
        elif t == "case_clause":
            pats = [c for c in node.named_children if c.type == "case_pattern"]
            for p in pats:
                self.bind_captures(p, scope, p.end_byte)
            for ch in node.named_children:
                if ch.type != "case_pattern":
                    self.visit(ch, scope)
        else:
            self.visit_children(node, scope)

    def bind_captures(self, node, scope: Scope, pos: int) -> None:
        """match-case: a bare name in a pattern captures; dotted names are value patterns (reads)."""
        for ch in node.named_children:
            if ch.type == "dotted_name":
                parts = [c for c in ch.named_children if c.type == "identifier"]
                if len(parts) == 1 and parts[0].text != b"_":
                    self.bind_target(parts[0], scope, pos)
                elif parts:
                    self.use(parts[0], scope)
            elif ch.type == "identifier":
                self.bind_target(ch, scope, pos)
            elif ch.type == "keyword_pattern":
                kids = ch.named_children
                for k in kids[1:]:
                    self.bind_captures(k, scope, pos) if k.named_child_count else self.bind_target(k, scope, pos)
            else:
                self.bind_captures(ch, scope, pos)

    def bind_import(self, node, scope: Scope, pos: int, first: bool) -> None:
        if node.type == "aliased_import":
            alias = node.child_by_field_name("alias")
            if alias is not None:
                self.bind_target(alias, scope, pos)
        elif node.type == "dotted_name":
            ids = [c for c in node.named_children if c.type == "identifier"]
            if ids:
                self.bind_target(ids[0] if first else ids[-1], scope, pos)

    def visit_function(self, node, scope: Scope, params, body) -> None:
        inner = Scope("function", scope)
        if params is not None:
            for p in params.named_children:
                self.bind_param(p, scope, inner, params.end_byte)
        self.visit(node.child_by_field_name("return_type"), scope)
        if node.type == "function_definition":
            self.visit(node.child_by_field_name("type_parameters"), scope)
        self.visit(body, inner)
        name = node.child_by_field_name("name")
        if name is not None:
            self.bind_target(name, scope, node.end_byte)

    def bind_param(self, p, outer: Scope, inner: Scope, pos: int) -> None:
        t = p.type
        if t == "identifier":
            self.bind_target(p, inner, pos)
        elif t in ("default_parameter", "typed_default_parameter", "typed_parameter"):
            self.visit(p.child_by_field_name("value"), outer)
            self.visit(p.child_by_field_name("type"), outer)
            name = p.child_by_field_name("name")
            if name is None:  # typed_parameter: first named child is the name or a splat pattern
                name = p.named_children[0] if p.named_child_count else None
            if name is not None:
                self.bind_param(name, outer, inner, pos)
        elif t in ("list_splat_pattern", "dictionary_splat_pattern", "tuple_pattern"):
            for ch in p.named_children:
                self.bind_param(ch, outer, inner, pos)

    def visit_comprehension(self, node, scope: Scope) -> None:
        inner = Scope("comprehension", scope)
        clauses = [c for c in node.named_children if c.type in ("for_in_clause", "if_clause")]
        body = [c for c in node.named_children if c.type not in ("for_in_clause", "if_clause", "comment")]
        first = True
        for c in clauses:
            if c.type == "for_in_clause":
                rights = c.children_by_field_name("right")
                for r in rights:
                    self.visit(r, scope if first else inner)
                first = False
                self.bind_target(c.child_by_field_name("left"), inner, c.end_byte)
            else:
                self.visit_children(c, inner)
        for b in body:
            self.visit(b, inner)

    # ---- resolution ---------------------------------------------------------------------------
    def resolve(self, use: Use, scope: Scope) -> Binding | None:
        name = use.name
        s: Scope | None = scope
        if name in scope.globals_ or name in scope.nonlocals:
            s = self.declared_scope(name, scope)
        else:
            while s is not None and name not in s.bindings:
                s = s.parent
                while s is not None and s.kind == "class":  # class bodies are not enclosing scopes
                    s = s.parent
        if s is None or name not in s.bindings:
            return None
        binds = s.bindings[name]
        if s.kind == "comprehension":
            pos, site = binds[0]
            return Binding(name, pos, site)
        before = [b for b in binds if b[0] <= use.site]
        if before:
            pos, site = max(before)
        elif s is scope:
            return None
        else:
            pos, site = min(binds)
        return Binding(name, pos, site)

    def pairs(self) -> list[tuple[Binding, Use]]:
        out = []
        for u, s in self.uses:
            b = self.resolve(u, s)
            if b is not None:
                out.append((b, u))
        return out


def python_def_use(root) -> list[tuple[Binding, Use]]:
    """(reaching binding, use) pairs of a Python tree."""
    a = PythonDefUse()
    a.visit(root, a.module)
    return a.pairs()


ANALYSERS = {"python": python_def_use}


def item_edges(pairs, spans: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Lift def-use pairs to items given their (byte_start, byte_end) spans, sorted and disjoint."""
    starts = [s for s, _ in spans]

    def item_of(pos: int) -> int | None:
        k = bisect_right(starts, pos) - 1
        return k if k >= 0 and pos < spans[k][1] else None

    edges = set()
    for b, u in pairs:
        i, j = item_of(b.site), item_of(u.site)
        if i is not None and j is not None and i != j:
            edges.add((i, j))
    return edges


def reach(n: int, adj: list[list[int]]) -> list[float]:
    """|items transitively reachable from i| / (n - 1)."""
    if n <= 1:
        return [0.0] * n
    out = []
    for s in range(n):
        if not adj[s]:
            out.append(0.0)
            continue
        seen = {s}
        q = deque([s])
        while q:
            v = q.popleft()
            for w in adj[v]:
                if w not in seen:
                    seen.add(w)
                    q.append(w)
        out.append((len(seen) - 1) / (n - 1))
    return out


def betweenness(n: int, adj: list[list[int]], normalized: bool = True) -> list[float]:
    """Brandes (2001) betweenness for a directed, unweighted graph; normalised by (n-1)(n-2)."""
    cb = [0.0] * n
    if not any(adj[v] for v in {w for out in adj for w in out}):
        return cb  # no node has both an in- and an out-edge: no path passes through anything
    for s in range(n):
        if not adj[s]:
            continue  # a source with no out-edge starts no path
        stack: list[int] = []
        preds: list[list[int]] = [[] for _ in range(n)]
        sigma = [0] * n
        sigma[s] = 1
        dist = [-1] * n
        dist[s] = 0
        q = deque([s])
        while q:
            v = q.popleft()
            stack.append(v)
            for w in adj[v]:
                if dist[w] < 0:
                    dist[w] = dist[v] + 1
                    q.append(w)
                if dist[w] == dist[v] + 1:
                    sigma[w] += sigma[v]
                    preds[w].append(v)
        delta = [0.0] * n
        while stack:
            w = stack.pop()
            for v in preds[w]:
                delta[v] += sigma[v] / sigma[w] * (1.0 + delta[w])
            if w != s:
                cb[w] += delta[w]
    if normalized and n > 2:
        scale = 1.0 / ((n - 1) * (n - 2))
        cb = [c * scale for c in cb]
    elif normalized:
        cb = [0.0] * n
    return cb


def adjacency(n: int, edges) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(n)]
    for i, j in sorted(edges):
        adj[i].append(j)
    return adj


def reach_bridge(root, spans: list[tuple[int, int]], language: str = "python") -> tuple[list[float], list[float]]:
    """Reach and Bridge of each item (byte spans inside the block parsed into `root`)."""
    n = len(spans)
    if n <= 1 or language not in ANALYSERS:
        return [0.0] * n, [0.0] * n
    try:
        pairs = ANALYSERS[language](root)
    except RecursionError:  # pathologically deep expression: no graph rather than a crash
        return [0.0] * n, [0.0] * n
    adj = adjacency(n, item_edges(pairs, spans))
    return reach(n, adj), betweenness(n, adj)


def def_use_pairs(code: str, language: str = "python"):
    """Parse `code` and return its (reaching binding, use) pairs and the tree."""
    from codeblock.select.languages import parser_for

    tree = parser_for(language).parse(code.encode("utf-8"))
    return ANALYSERS[language](tree.root_node), tree
