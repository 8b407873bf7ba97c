"""Scopes in the data flow: comprehensions, lambdas, global/nonlocal by scope, the closure rule,
class bodies, deep nesting - hand-worked, plus Python's own `symtable` as the oracle of which
scope owns every name in real standard-library modules.

Pairs are (name, line of the use, line of a reaching definition); Reach / Bridge as in
test_dataflow_control.py.  "Old" is the previous last-binding-before-the-use rule, where it differs.
"""

from __future__ import annotations

import importlib.util
import symtable
from pathlib import Path

import pytest
from dataflow_cases import graph, pairs

from codeblock.select import dataflow as df
from codeblock.select.languages import parser_for
from codeblock.select.pyflow import FlowBuilder
from codeblock.select.reaching import Reaching
from codeblock.select.segment import segment_response


def test_comprehension_and_lambda_scopes():
    code = (
        "k = 2\n"                                  # 1  item 0
        "xs = [k * i for i in range(k)]\n"         # 2  item 1: k <- 1 (element and first iterable), i <- 2
        "f = lambda y, k=k: y * k\n"               # 3  item 2: default k <- 1; y, k <- the parameters (3)
        "i = 5\n"                                  # 4  item 3
        "print(xs, f(i), i)\n"                     # 5  item 4: xs <- 2, f <- 3, i <- 4 (not the comprehension's)
    )
    assert pairs(code) == {("k", 2, 1), ("i", 2, 2), ("k", 3, 1), ("y", 3, 3), ("k", 3, 3), ("xs", 5, 2),
                           ("f", 5, 3), ("i", 5, 4)}
    texts, edges, rch, brg = graph(code)
    assert edges == {(0, 1), (0, 2), (1, 4), (2, 4), (3, 4)}
    # Reach (/4): 0 -> {1, 2, 4}: 3/4; 1, 2, 3 -> {4}: 1/4
    assert rch == pytest.approx([3 / 4, 1 / 4, 1 / 4, 1 / 4, 0])
    # Bridge: 0 -> 4 has two shortest paths (via 1, via 2): 1/2 each; / (4*3) = 1/24
    assert brg == pytest.approx([0, 1 / 24, 1 / 24, 0, 0])


def test_comprehension_is_a_loop_and_its_walrus_a_may_definition():
    code = (
        "y = 0\n"                                          # 1
        "vals = [y for x in data if (y := f(x))]\n"        # 2: x <- 2; element y <- 2 (this iteration's walrus)
        "print(y)\n"                                       # 3: y <- 1 (no element passed), <- 2
        "pairs = [(a, b) for a in ys for b in range(a)]\n"  # 4: a <- 4 (outer loop), b <- 4
    )
    assert pairs(code) == {("x", 2, 2), ("y", 2, 2), ("y", 3, 1), ("y", 3, 2), ("a", 4, 4), ("b", 4, 4)}


def test_nonlocal_binds_to_the_enclosing_function_even_when_bound_later():
    code = (
        "count = 100\n"              # 1  item 0 (module count)
        "def outer():\n"             # 2  item 1 (the whole def)
        "    def bump():\n"          # 3
        "        nonlocal count\n"   # 4
        "        count += 1\n"       # 5  count <- 6 (outer's, bound after bump), <- 5 (an earlier call)
        "    count = 0\n"            # 6
        "    bump()\n"               # 7  bump <- 3
        "    return count\n"         # 8  count <- 6, <- 5 (bump's write is never killed: it may run later)
        "print(count)\n"             # 9  item 2: count <- 1 (outer's count is another variable)
    )
    assert pairs(code) == {("count", 5, 6), ("count", 5, 5), ("bump", 7, 3), ("count", 8, 6), ("count", 8, 5),
                           ("count", 9, 1)}
    texts, edges, rch, brg = graph(code)
    assert edges == {(0, 2)}
    # Reach: 0 -> {2}: 1/2.  Bridge 0.
    # (old: bump's write went to the module's count, so count@9 <- 5: the one edge was 1 -> 2, Reach(0) = 0)
    assert rch == pytest.approx([1 / 2, 0, 0])
    assert brg == pytest.approx([0, 0, 0])


def test_global_write_in_a_function():
    code = (
        "total = 0\n"         # 1  item 0
        "def add(v):\n"       # 2  item 1
        "    global total\n"  # 3
        "    total += v\n"    # 4  total <- 1, <- 4 (an earlier call); v <- 2
        "add(3)\n"            # 5  item 2: add <- 2
        "print(total)\n"      # 6  item 3: total <- 1 (calls are not followed), <- 4
    )
    assert pairs(code) == {("total", 4, 1), ("total", 4, 4), ("v", 4, 2), ("add", 5, 2), ("total", 6, 1),
                           ("total", 6, 4)}
    texts, edges, rch, brg = graph(code)
    assert edges == {(0, 1), (1, 2), (0, 3), (1, 3)}
    # Reach (/3): 0 -> {1, 2, 3}: 1; 1 -> {2, 3}: 2/3
    # Bridge: 0->2 only through 1 (CB 1); 0->3 direct: CB(1) = 1, / (3*2) = 1/6
    assert rch == pytest.approx([1, 2 / 3, 0, 0])
    assert brg == pytest.approx([0, 1 / 6, 0, 0])


def test_closure_sees_later_definitions_class_body_does_not():
    code = (
        "scale = 1\n"                     # 1  item 0
        "def apply(v):\n"                 # 2  item 1
        "    return v * scale\n"          # 3  v <- 2; scale <- 1, <- 8 (a call may come after line 8)
        "class Cfg:\n"                    # 4  item 2
        "    factor = scale\n"            # 5  scale <- 1 only: a class body runs where it stands
        "    def get(self):\n"            # 6
        "        return factor, self\n"   # 7  factor: class scope is skipped -> module factor (none); self <- 6
        "scale = 10\n"                    # 8  item 3
        "print(apply(2), Cfg.factor)\n"   # 9  item 4: apply <- 2, Cfg <- 4
    )
    assert pairs(code) == {("v", 3, 2), ("scale", 3, 1), ("scale", 3, 8), ("scale", 5, 1), ("self", 7, 6),
                           ("apply", 9, 2), ("Cfg", 9, 4)}
    texts, edges, rch, brg = graph(code)
    assert edges == {(0, 1), (0, 2), (3, 1), (1, 4), (2, 4)}
    # Reach (/4): 0 -> {1, 2, 4}: 3/4; 1 -> {4}: 1/4; 2 -> {4}: 1/4; 3 -> {1, 4}: 2/4
    assert rch == pytest.approx([3 / 4, 1 / 4, 1 / 4, 1 / 2, 0])
    # Bridge: 0->4 via 1 or via 2 (1/2 each), 3->4 only via 1 (1): CB(1) = 3/2, CB(2) = 1/2; / (4*3)
    # (old: scale@3 <- 1 only - no edge 3 -> 1, Reach(3) = 0, CB(1) = 1/2)
    assert brg == pytest.approx([0, 1.5 / 12, 0.5 / 12, 0, 0])


def test_function_defined_before_its_helper_and_recursion():
    code = (
        "def main(n):\n"                                  # 1
        "    return helper(n)\n"                          # 2  helper <- 3; n <- 1
        "def helper(n):\n"                                # 3
        "    return n if n < 2 else helper(n - 1)\n"      # 4  n <- 3; helper <- 3 (itself)
    )
    assert pairs(code) == {("helper", 2, 3), ("n", 2, 1), ("n", 4, 3), ("helper", 4, 3)}


def _nested_ifs(depth: int) -> tuple[str, list[tuple[int, int]]]:
    """`x = 1`, `depth` nested ifs, `print(x)`; spans of the first and the last statement."""
    code = "x = 1\n" + "".join("    " * d + f"if c{d}:\n" for d in range(depth)) + "    " * depth + "pass\nprint(x)\n"
    n = len(code.encode())
    return code, [(0, 5), (n - 9, n - 1)]


@pytest.mark.parametrize("depth", [50, 340])
def test_deep_nesting_is_skipped_and_counted(depth):
    code, spans = _nested_ifs(depth)
    root = parser_for("python").parse(code.encode()).root_node
    stats: dict = {}
    rch, brg = df.reach_bridge(root, spans, "python", stats=stats)
    if depth <= df.MAX_DEPTH:  # analysed: x = 1 -> print(x) is the one edge, Reach(0) = 1/1
        assert (rch, brg, stats) == ([1.0, 0.0], [0.0, 0.0], {})
    else:  # skipped, zeros, counted - not a RecursionError
        assert (rch, brg) == ([0.0, 0.0], [0.0, 0.0])
        assert stats == {df.SKIP_STAT: 1}
    # the guard is a parameter: the same block at a smaller limit is skipped
    assert df.analyse_block(root, spans, "python", max_depth=10).skipped == "too_deep"


@pytest.mark.parametrize("depth", [50, 340])
def test_deep_block_keeps_its_items_through_segmentation(depth):
    # items: `x = 1`, the whole if-nest (not split at this item limit), `print(x)`
    code, _ = _nested_ifs(depth)
    seg = segment_response(code, [(i, i + 1) for i in range(len(code))], max_item_tokens=10**6)
    assert len(seg.items) == 3
    # analysed: 0 -> 2 (x), Reach(0) = 1/2; too deep: zeros
    assert seg.reach == ([0.5, 0.0, 0.0] if depth <= df.MAX_DEPTH else [0.0, 0.0, 0.0])
    assert seg.bridge == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("depth", [50, 340])
def test_deep_block_split_into_items_without_recursion_error(depth):
    """With a small item limit every `if` is split: its header is an item down to
    MAX_SPLIT_DEPTH, below that the rest of the nest is one item; the block is counted as deep."""
    from codeblock.select.items import MAX_SPLIT_DEPTH

    code, _ = _nested_ifs(depth)
    seg = segment_response(code, [(i, i + 1) for i in range(len(code))], max_item_tokens=4)
    kinds = [it.kind for it in seg.items]
    if depth <= MAX_SPLIT_DEPTH and depth <= df.MAX_DEPTH:
        # `x = 1`, `depth` headers, `pass`, `print(x)`
        assert len(seg.items) == depth + 3 and seg.n_deep_blocks == 0
        assert kinds.count("if_statement:header") == depth
    else:
        # `x = 1`, MAX_SPLIT_DEPTH headers, the rest of the nest whole, `print(x)`
        assert kinds.count("if_statement:header") == MAX_SPLIT_DEPTH
        assert kinds[MAX_SPLIT_DEPTH + 1] == "if_statement" and len(seg.items) == MAX_SPLIT_DEPTH + 3
        assert seg.n_deep_blocks == 1 and set(seg.reach) == {0.0}


def test_long_flat_expressions_are_not_deep():
    code = "x = " + " + ".join(f"a{i}" for i in range(3000)) + "\ny = x\n"
    n = len(code)
    root = parser_for("python").parse(code.encode()).root_node
    res = df.analyse_block(root, [(0, n - 7), (n - 6, n - 1)], "python")
    assert (res.reach, res.skipped) == ([1.0, 0.0], "")


# ---- symtable as the oracle of scope resolution ---------------------------------------------------
STDLIB_MODULES = ["functools", "textwrap", "argparse", "dataclasses", "contextlib", "string", "json.decoder", "types",
                  "tempfile", "enum", "statistics"]


_ANONYMOUS = {"lambda", "listcomp", "setcomp", "dictcomp", "genexpr"}  # not compared (several on one line)


def _tables(code: str):
    """{(kind, line): (table, enclosing function/class/module table)} of the function and class tables."""
    out, stack = {}, [(symtable.symtable(code, "<oracle>", "exec"), None)]
    while stack:
        t, parent = stack.pop()
        kind = str(t.get_type()).lower().rsplit(".", 1)[-1]
        real = kind in ("module", "function", "class") and t.get_name() not in _ANONYMOUS
        if real and kind != "module":
            out[(kind, t.get_lineno())] = (t, parent)
        stack.extend((c, t if real else parent) for c in t.get_children())
    return out


def _ours(code: str):
    data = code.encode()
    fb = FlowBuilder(max_depth=1000)
    module = fb.build(parser_for("python").parse(data).root_node)
    r = Reaching(module)
    r.run()
    scopes, stack = {}, [module]
    while stack:
        s = stack.pop()
        if s.kind in ("function", "class"):
            scopes[(s.kind, data[:s.site].count(b"\n") + 1)] = s
        stack.extend(s.children)
    return module, scopes, r


def _expected_owner(table, parent_of, name):
    """The table owning `name` as seen from `table`, by symtable's classification."""
    sym = table.lookup(name)
    if sym.is_local() and not sym.is_declared_global():
        return table
    if sym.is_global() or sym.is_declared_global():
        return None  # the module
    t = parent_of(table)
    while t is not None:  # free / nonlocal: the nearest enclosing function that has it as a local
        if str(t.get_type()).lower().endswith("function"):
            s = t.lookup(name) if name in t.get_identifiers() else None
            if s is not None and s.is_local() and not s.is_declared_global():
                return t
        t = parent_of(t)
    return None


@pytest.mark.parametrize("modname", STDLIB_MODULES)
def test_scope_owners_match_symtable(modname):
    spec = importlib.util.find_spec(modname)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        pytest.skip(f"{modname} has no Python source here")
    code = Path(spec.origin).read_text(encoding="utf-8")
    tables = _tables(code)
    module, scopes, r = _ours(code)
    parents = {id(t): p for t, p in tables.values()}
    ours_of = {id(t): scopes.get(key) for key, (t, _) in tables.items()}
    assert len(tables) > 10 and sum(v is not None for v in ours_of.values()) == len(tables)
    checked = 0
    for key, (t, _) in tables.items():
        scope = scopes[key]
        for name in t.get_identifiers():
            if name.startswith("__") and name.endswith("__") or name == ".0":
                continue  # implicit names (__class__ for super(), ...)
            want = _expected_owner(t, lambda x: parents.get(id(x)), name)
            want_scope = module if want is None else ours_of[id(want)]
            got = r.owner(scope, name)
            assert got is want_scope, (modname, key, name, got.kind, want_scope.kind)
            checked += 1
    assert checked > 100
