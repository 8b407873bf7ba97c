"""Reaching definitions follow control flow: one hand-worked example per construct.

Each test gives the code, the def-use pairs (name, line of the use, line of a reaching definition),
the item edges, and Reach / Bridge worked out by hand:
    Reach(i)  = |items reachable from i| / (n - 1)
    Bridge(i) = sum over pairs (s, t), s != i != t, of (shortest s->t paths through i / all of them),
                divided by (n - 1)(n - 2).
"Old" notes what the previous last-binding-before-the-use rule gave, where it differs.
"""

from __future__ import annotations

import pytest
from dataflow_cases import graph, pairs


def test_definition_in_a_branch_does_not_kill_the_earlier_one():
    code = (
        "x = 0\n"        # 1  item 0
        "if c:\n"        # 2  item 1 (the whole if)
        "    x = 1\n"    # 3
        "y = x\n"        # 4  item 2: x <- 1 (c false) and <- 3 (c true)
        "print(y)\n"     # 5  item 3: y <- 4
    )
    assert pairs(code) == {("x", 4, 1), ("x", 4, 3), ("y", 5, 4)}
    texts, edges, rch, brg = graph(code)
    assert len(texts) == 4
    assert edges == {(0, 2), (1, 2), (2, 3)}
    # Reach: 0 -> {2, 3}: 2/3; 1 -> {2, 3}: 2/3; 2 -> {3}: 1/3; 3: 0
    assert rch == pytest.approx([2 / 3, 2 / 3, 1 / 3, 0])
    # Bridge: 0->3 and 1->3 both pass through 2 (one shortest path each): CB(2) = 2, / (3*2) = 1/3
    # (old: only 1 -> 2, so Reach(0) = 0 and CB(2) = 1 -> 1/6)
    assert brg == pytest.approx([0, 0, 1 / 3, 0])


def test_if_else_on_every_path_kills_elif_without_else_does_not():
    code = (
        "x = 0\n"           # 1   item 0
        "if a:\n"           # 2   item 1
        "    x = 1\n"       # 3
        "elif b:\n"         # 4
        "    x = 2\n"       # 5
        "else:\n"           # 6
        "    x = 3\n"       # 7
        "y = 0\n"           # 8   item 2
        "if a:\n"           # 9   item 3
        "    y = 1\n"       # 10
        "elif b:\n"         # 11
        "    y = 2\n"       # 12
        "print(x, y)\n"     # 13  item 4: x <- 3, 5, 7 (never 1); y <- 8 (a, b false), 10, 12
    )
    assert pairs(code) == {("x", 13, 3), ("x", 13, 5), ("x", 13, 7), ("y", 13, 8), ("y", 13, 10), ("y", 13, 12)}
    texts, edges, rch, brg = graph(code)
    assert len(texts) == 5
    assert edges == {(1, 4), (2, 4), (3, 4)}
    # Reach: items 1, 2, 3 each reach {4}: 1/4; items 0 and 4 reach nothing.  No paths of length 2: Bridge 0
    # (old: y <- 12 only, so item 2 had no edge)
    assert rch == pytest.approx([0, 1 / 4, 1 / 4, 1 / 4, 0])
    assert brg == pytest.approx([0] * 5)


def test_while_loop_carried_and_zero_iterations():
    code = (
        "x = 0\n"            # 1  item 0
        "while x < 3:\n"     # 2  item 1 (header): x <- 1 (first test), <- 3 (next tests)
        "    x += 1\n"       # 3  item 2: x <- 1, <- 3 (the previous iteration)
        "print(x)\n"         # 4  item 3: x <- 1 (zero iterations), <- 3
    )
    assert pairs(code) == {("x", 2, 1), ("x", 2, 3), ("x", 3, 1), ("x", 3, 3), ("x", 4, 1), ("x", 4, 3)}
    texts, edges, rch, brg = graph(code, max_item_tokens=12)
    assert texts == ["x = 0", "while x < 3:", "x += 1", "print(x)"]
    # 2 -> 2 (x += 1 feeding itself) is a self-loop and is not an edge
    assert edges == {(0, 1), (0, 2), (0, 3), (2, 1), (2, 3)}
    # Reach: 0 -> {1, 2, 3}: 1; 2 -> {1, 3}: 2/3.  Every reachable pair is a direct edge: Bridge 0
    # (old: edges 0->1, 0->2, 2->3 only: Reach(2) = 1/3 and CB(2) = 1 for 0->3 -> 1/6)
    assert rch == pytest.approx([1, 0, 2 / 3, 0])
    assert brg == pytest.approx([0, 0, 0, 0])


def test_for_loop_zero_iterations_continue_break_else():
    code = (
        "total = 0\n"              # 1  item 0
        "for v in data:\n"         # 2  item 1 (the whole for)
        "    if v < 0:\n"          # 3  v <- 2
        "        continue\n"       # 4
        "    total += v\n"         # 5  total <- 1, <- 5 (loop-carried, also across `continue`); v <- 2
        "print(total, v)\n"        # 6  item 2: total <- 1 (data empty), <- 5; v <- 2
    )
    assert pairs(code) == {("v", 3, 2), ("total", 5, 1), ("total", 5, 5), ("v", 5, 2), ("total", 6, 1),
                           ("total", 6, 5), ("v", 6, 2)}
    texts, edges, rch, brg = graph(code)
    assert edges == {(0, 1), (0, 2), (1, 2)}
    # Reach: 0 -> {1, 2}: 1; 1 -> {2}: 1/2.  0 -> 2 is direct: Bridge 0
    # (old: total@6 <- 5 only, so 0 -> 2 ran through the loop: CB(1) = 1 -> 1/2)
    assert rch == pytest.approx([1, 1 / 2, 0])
    assert brg == pytest.approx([0, 0, 0])

    # break skips the else clause; the else clause runs when the loop ends (also after zero iterations)
    code = (
        "found = None\n"           # 1: reaches nothing below (every path sets found again)
        "for v in data:\n"         # 2
        "    if v > 0:\n"          # 3
        "        found = v\n"      # 4
        "        break\n"          # 5
        "else:\n"                  # 6
        "    found = -1\n"         # 7
        "print(found)\n"           # 8: found <- 4 (break), <- 7 (exhausted)
    )
    assert pairs(code) == {("v", 3, 2), ("v", 4, 2), ("found", 8, 4), ("found", 8, 7)}


def test_while_true_leaves_only_by_break():
    code = (
        "n = 0\n"                # 1  item 0
        "while True:\n"          # 2  item 1 (the whole while)
        "    n += 1\n"           # 3  n <- 1, <- 3 (after `continue` or a full iteration)
        "    if n % 2:\n"        # 4  n <- 3
        "        continue\n"     # 5
        "    if n > 9:\n"        # 6  n <- 3
        "        break\n"        # 7
        "print(n)\n"             # 8  item 2: n <- 3 only: the loop is left by `break` after n += 1
    )
    assert pairs(code) == {("n", 3, 1), ("n", 3, 3), ("n", 4, 3), ("n", 6, 3), ("n", 8, 3)}
    texts, edges, rch, brg = graph(code)
    assert edges == {(0, 1), (1, 2)}
    # Reach: 0 -> {1, 2}: 1; 1 -> {2}: 1/2.  0 -> 2 only through 1: CB(1) = 1, / (2*1) = 1/2
    assert rch == pytest.approx([1, 1 / 2, 0])
    assert brg == pytest.approx([0, 1 / 2, 0])


def test_try_except_else_finally():
    code = (
        "x = 0\n"                      # 1   item 0
        "try:\n"                       # 2   item 1 (the whole try)
        "    x = parse()\n"            # 3
        "    y = x\n"                  # 4   x <- 3
        "except ValueError as e:\n"    # 5
        "    log(e, x)\n"              # 6   e <- 5; x <- 1 (parse raised), <- 3 (line 4 raised)
        "    y = None\n"               # 7
        "else:\n"                      # 8
        "    z = y\n"                  # 9   y <- 4 (else runs only when the body finished)
        "finally:\n"                   # 10
        "    done(x)\n"                # 11  x <- 1, <- 3
        "print(x, y)\n"                # 12  item 2: x <- 1, <- 3; y <- 4 (no exception), <- 7 (handled)
    )
    assert pairs(code) == {("x", 4, 3), ("e", 6, 5), ("x", 6, 1), ("x", 6, 3), ("y", 9, 4), ("x", 11, 1),
                           ("x", 11, 3), ("x", 12, 1), ("x", 12, 3), ("y", 12, 4), ("y", 12, 7)}
    texts, edges, rch, brg = graph(code)
    assert edges == {(0, 1), (0, 2), (1, 2)}
    # Reach: 0 -> {1, 2}: 1; 1 -> {2}: 1/2; Bridge 0 (0 -> 2 is direct)
    # (old: every x read took line 3: no edge from item 0 at all, Reach(0) = 0)
    assert rch == pytest.approx([1, 1 / 2, 0])
    assert brg == pytest.approx([0, 0, 0])


def test_finally_runs_on_early_return_without_leaking_past_the_try():
    code = (
        "def read(path):\n"               # 1   item 0 (header)
        "    f = open(path)\n"            # 2   item 1: path <- 1
        "    try:\n"                      # 3   item 2 (header)
        "        data = f.read()\n"       # 4   item 3: f <- 2
        "        if not data:\n"          # 5   item 4 (header): data <- 4
        "            return None\n"       # 6   item 5 (leaves through the finally clause)
        "        data = data.strip()\n"   # 7   item 6: data <- 4
        "    finally:\n"                  # 8   item 7 (the whole finally clause)
        "        f.close()\n"             # 9   f <- 2
        "    return data\n"               # 10  item 8: data <- 7 only (the line-6 path returned)
    )
    assert pairs(code) == {("path", 2, 1), ("f", 4, 2), ("data", 5, 4), ("data", 7, 4), ("f", 9, 2),
                           ("data", 10, 7)}
    texts, edges, rch, brg = graph(code, max_item_tokens=30)
    assert texts == ["def read(path):", "f = open(path)", "try:", "data = f.read()", "if not data:", "return None",
                     "data = data.strip()", "finally:\n        f.close()", "return data"]
    assert edges == {(0, 1), (1, 3), (1, 7), (3, 4), (3, 6), (6, 8)}
    # Reach (n - 1 = 8): 0 -> {1,3,7,4,6,8}: 6/8; 1 -> {3,7,4,6,8}: 5/8; 3 -> {4,6,8}: 3/8; 6 -> {8}: 1/8
    assert rch == pytest.approx([6 / 8, 5 / 8, 0, 3 / 8, 0, 0, 1 / 8, 0, 0])
    # The graph is a tree, one shortest path per pair.  Through 1: 0->3, 0->7, 0->4, 0->6, 0->8 (5);
    # through 3: 0->4, 0->6, 0->8, 1->4, 1->6, 1->8 (6); through 6: 0->8, 1->8, 3->8 (3); / (8*7)
    assert brg == pytest.approx([0, 5 / 56, 0, 6 / 56, 0, 0, 3 / 56, 0, 0])


def test_with_as():
    code = (
        "src = 'a.txt'\n"             # 1  item 0
        "with open(src) as fh:\n"     # 2  item 1: src <- 1
        "    text = fh.read()\n"      # 3  fh <- 2
        "print(text, fh)\n"           # 4  item 2: text <- 3, fh <- 2
    )
    assert pairs(code) == {("src", 2, 1), ("fh", 3, 2), ("text", 4, 3), ("fh", 4, 2)}
    texts, edges, rch, brg = graph(code)
    assert edges == {(0, 1), (1, 2)}
    # Reach: 0 -> {1, 2}: 1; 1 -> {2}: 1/2.  0 -> 2 only through 1: CB(1) = 1, / (2*1) = 1/2
    assert rch == pytest.approx([1, 1 / 2, 0])
    assert brg == pytest.approx([0, 1 / 2, 0])


def test_match_captures_guards_and_fallthrough():
    code = (
        "cmd = read()\n"                       # 1   item 0
        "size = 0\n"                           # 2   item 1
        "match cmd:\n"                         # 3   item 2 (the whole match): cmd <- 1
        "    case ['go', n] if n > size:\n"    # 4   n <- 4 (capture), size <- 2
        "        size = n\n"                   # 5   n <- 4
        "    case Point(x=px):\n"              # 6   px captured (x= is a keyword, Point unbound)
        "        size = px\n"                  # 7   px <- 6
        "    case _:\n"                        # 8
        "        pass\n"                       # 9
        "print(size, n)\n"                     # 10  item 3: size <- 2 (case _), 5, 7; n <- 4
    )
    assert pairs(code) == {("cmd", 3, 1), ("n", 4, 4), ("size", 4, 2), ("n", 5, 4), ("px", 7, 6),
                           ("size", 10, 2), ("size", 10, 5), ("size", 10, 7), ("n", 10, 4)}
    texts, edges, rch, brg = graph(code)
    assert edges == {(0, 2), (1, 2), (1, 3), (2, 3)}
    # Reach: 0 -> {2, 3}: 2/3; 1 -> {2, 3}: 2/3; 2 -> {3}: 1/3
    # Bridge: 0->3 only through 2 (CB 1); 1->3 is direct: CB(2) = 1, / (3*2) = 1/6
    # (old: size@10 <- 7 only, so 1->3 also ran through 2: CB(2) = 2 -> 1/3)
    assert rch == pytest.approx([2 / 3, 2 / 3, 1 / 3, 0])
    assert brg == pytest.approx([0, 0, 1 / 6, 0])


def test_early_return_and_raise():
    code = (
        "def sign(v):\n"                 # 1  item 0 (header)
        "    s = 0\n"                    # 2  item 1
        "    if v > 0:\n"                # 3  item 2 (header): v <- 1
        "        s = 1\n"                # 4  item 3
        "        return s\n"             # 5  item 4: s <- 4
        "    if v < 0:\n"                # 6  item 5 (header): v <- 1
        "        raise ValueError(s)\n"  # 7  item 6: s <- 2 (the s = 1 path has returned)
        "    return s\n"                 # 8  item 7: s <- 2
    )
    assert pairs(code) == {("v", 3, 1), ("s", 5, 4), ("v", 6, 1), ("s", 7, 2), ("s", 8, 2)}
    texts, edges, rch, brg = graph(code, max_item_tokens=20)
    assert texts == ["def sign(v):", "s = 0", "if v > 0:", "s = 1", "return s", "if v < 0:", "raise ValueError(s)",
                     "return s"]
    assert edges == {(0, 2), (0, 5), (1, 6), (1, 7), (3, 4)}
    # Reach (/7): 0 -> {2, 5}: 2/7; 1 -> {6, 7}: 2/7; 3 -> {4}: 1/7.  No path of length 2: Bridge 0
    # (old: s@7 and s@8 <- 4: Reach(1) = 0, Reach(3) = 3/7)
    assert rch == pytest.approx([2 / 7, 2 / 7, 0, 1 / 7, 0, 0, 0, 0])
    assert brg == pytest.approx([0] * 8)
