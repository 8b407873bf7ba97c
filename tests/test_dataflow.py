"""Stage 4: def-use pairs, the item graph, Reach and Bridge - each expected result worked out by hand.

Pairs are written (name, line of the use, line of its reaching definition), lines from 1.
"""

from __future__ import annotations

import itertools
import random
from collections import deque

import pytest
from dataflow_cases import graph, pairs

from codeblock.select.dataflow import adjacency, betweenness, reach
from codeblock.select.segment import segment_response


def test_assignments_tuple_starred_augmented():
    code = (
        "a, (b, *c) = 1, (2, 3, 4)\n"  # 1: a, b, c
        "[d, e] = c\n"                  # 2: use c<-1; d, e
        "a += b\n"                      # 3: use a<-1, b<-1; def a
        "x: int = a + d\n"              # 4: use a<-3, d<-2
        "y = z = x\n"                   # 5: use x<-4
        "print(y, z, e)\n"              # 6: y<-5, z<-5, e<-2
    )
    assert pairs(code) == {
        ("c", 2, 1), ("a", 3, 1), ("b", 3, 1), ("a", 4, 3), ("d", 4, 2),
        ("x", 5, 4), ("y", 6, 5), ("z", 6, 5), ("e", 6, 2),
    }


def test_for_with_except_walrus_targets():
    code = (
        "import os, json as js\n"             # 1: os, js
        "from pathlib import Path as P, PurePath\n"  # 2: P, PurePath
        "for k, v in os.environ.items():\n"   # 3: use os<-1; k, v
        "    print(k, v)\n"                   # 4: k<-3, v<-3
        "with open(P('f')) as fh, PurePath('g') as (g1, g2):\n"  # 5: P<-2, PurePath<-2; fh, g1, g2
        "    data = js.load(fh)\n"            # 6: js<-1, fh<-5
        "try:\n"                              # 7
        "    pass\n"                          # 8
        "except (OSError, ValueError) as err:\n"  # 9: err
        "    print(err, g1)\n"                # 10: err<-9, g1<-5
        "if (n := len(data)) > 3:\n"          # 11: data<-6; n
        "    print(n)\n"                      # 12: n<-11
    )
    assert pairs(code) == {
        ("os", 3, 1), ("k", 4, 3), ("v", 4, 3), ("P", 5, 2), ("PurePath", 5, 2),
        ("js", 6, 1), ("fh", 6, 5), ("err", 10, 9), ("g1", 10, 5), ("data", 11, 6), ("n", 12, 11),
    }


def test_comprehension_scope_and_walrus_escape():
    code = (
        "x = 10\n"                                        # 1
        "ys = [x * i for i in range(x) if i]\n"           # 2: x<-1 (twice: body and first iterable), i<-2
        "zs = [j for i in ys for j in range(i)]\n"        # 3: ys<-2 (outer scope), i<-3, j<-3
        "best = [m for w in ys if (m := w)]\n"            # 4: w<-4, m<-4 (walrus binds in module)
        "print(i, m)\n"                                   # 5: i: comprehension var, no module binding; m<-4
    )
    assert pairs(code) == {
        ("x", 2, 1), ("i", 2, 2), ("ys", 3, 2), ("i", 3, 3), ("j", 3, 3),
        ("ys", 4, 2), ("w", 4, 4), ("m", 4, 4), ("m", 5, 4),
    }


def test_def_lambda_params_global_nonlocal_class():
    code = (
        "limit = 5\n"                           # 1
        "counter = 0\n"                         # 2
        "def bump(step=limit, *extra, **kw):\n" # 3: limit<-1 (default, outer scope); step, extra, kw
        "    global counter\n"                  # 4
        "    counter += step + len(extra)\n"    # 5: counter<-2 (module), <-5 (an earlier call); step<-3, extra<-3
        "    def inner():\n"                    # 6
        "        nonlocal step\n"               # 7
        "        step = helper(kw)\n"           # 8: helper<-14 (defined later, call time), kw<-3; def step in bump
        "    return step\n"                     # 9: step<-3 (inner may not run), <-8 (inner's nonlocal write)
        "f = lambda a, b=limit: a * b\n"        # 10: limit<-1; a<-10, b<-10
        "class K(Base):\n"                      # 11: Base unbound -> no pair
        "    size = limit\n"                    # 12: limit<-1
        "    def get(self): return size\n"      # 13: self<-13; size: class scope skipped -> unbound
        "def helper(z): return z\n"             # 14: z<-14
        "print(counter, f, K)\n"                # 15: counter<-2 (bump maybe never called), <-5; f<-10, K<-11
    )
    assert pairs(code) == {
        ("limit", 3, 1), ("counter", 5, 2), ("counter", 5, 5), ("step", 5, 3), ("extra", 5, 3),
        ("helper", 8, 14), ("kw", 8, 3), ("step", 9, 3), ("step", 9, 8),
        ("limit", 10, 1), ("a", 10, 10), ("b", 10, 10),
        ("limit", 12, 1), ("z", 14, 14),
        ("counter", 15, 2), ("counter", 15, 5), ("f", 15, 10), ("K", 15, 11),
    }


def test_attributes_keywords_and_fstrings():
    code = (
        "obj = make()\n"               # 1
        "obj.value = obj.other\n"      # 2: obj<-1 twice (target object is a read); no binding of 'value'
        "call(key=obj, other=1)\n"     # 3: obj<-1 only ('key' and 'other' are keyword names)
        "s = f'{obj!r} {value}'\n"     # 4: obj<-1; value unbound
    )
    assert pairs(code) == {("obj", 2, 1), ("obj", 3, 1), ("obj", 4, 1)}


def test_straight_line_item_graph_reach_bridge():
    # items 0..3;  edges worked by hand: a:0->1, 0->2; b:1->2; c:2->3
    code = "a = 1\nb = a + 1\nc = a * b\nprint(c)\n"
    texts, edges, rch, brg = graph(code)
    assert len(texts) == 4
    assert edges == {(0, 1), (0, 2), (1, 2), (2, 3)}
    # Reach: 0 reaches {1,2,3} -> 3/3; 1 reaches {2,3} -> 2/3; 2 reaches {3} -> 1/3; 3 -> 0
    assert rch == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    # Bridge: shortest paths through an intermediate: 0->3 via 2 (0->2->3), 1->3 via 2: CB(2)=2,
    # normalised by (n-1)(n-2) = 6 -> 1/3
    assert brg == pytest.approx([0.0, 0.0, 1 / 3, 0.0])


def test_split_function_header_feeds_body_items():
    code = (
        "def area(w, h):\n"       # item 0 (header): binds area, w, h
        "    s = w * h\n"         # item 1: uses w, h <- 0
        "    return s\n"          # item 2: uses s <- 1
        "print(area(2, 3))\n"     # item 3: uses area <- 0
    )
    texts, edges, rch, brg = graph(code, max_item_tokens=20)
    assert texts == ["def area(w, h):", "s = w * h", "return s", "print(area(2, 3))"]
    assert edges == {(0, 1), (1, 2), (0, 3)}
    assert rch == pytest.approx([1.0, 1 / 3, 0.0, 0.0])
    # only 0->2 goes through an intermediate (item 1): CB(1) = 1 / (3*2)
    assert brg == pytest.approx([0.0, 1 / 6, 0.0, 0.0])


def test_loop_item_and_diamond_betweenness():
    # diamond: 0 -> {1, 2} -> 3 ; two shortest paths 0->3, each middle node carries half
    n, edges = 4, {(0, 1), (0, 2), (1, 3), (2, 3)}
    adj = adjacency(n, edges)
    assert betweenness(n, adj) == pytest.approx([0.0, 0.5 / 6, 0.5 / 6, 0.0])
    assert reach(n, adj) == pytest.approx([1.0, 1 / 3, 1 / 3, 0.0])
    # a cycle 0 -> 1 -> 2 -> 0: every node reaches the two others, each lies on one path
    adj = adjacency(3, {(0, 1), (1, 2), (2, 0)})
    assert reach(3, adj) == pytest.approx([1.0, 1.0, 1.0])
    assert betweenness(3, adj) == pytest.approx([0.5, 0.5, 0.5])


def _brute_betweenness(n, adj):
    """Count shortest paths explicitly (independent of Brandes' accumulation)."""
    def bfs(s):
        dist, sigma = [-1] * n, [0] * n
        dist[s], sigma[s] = 0, 1
        q = deque([s])
        while q:
            v = q.popleft()
            for w in adj[v]:
                if dist[w] < 0:
                    dist[w] = dist[v] + 1
                    q.append(w)
                if dist[w] == dist[v] + 1:
                    sigma[w] += sigma[v]
        return dist, sigma

    info = [bfs(s) for s in range(n)]
    cb = [0.0] * n
    for s, t in itertools.permutations(range(n), 2):
        d_st, s_st = info[s][0][t], info[s][1][t]
        if d_st <= 0:
            continue
        for v in range(n):
            if v in (s, t):
                continue
            d_sv, d_vt = info[s][0][v], info[v][0][t]
            if d_sv > 0 and d_vt > 0 and d_sv + d_vt == d_st:
                cb[v] += info[s][1][v] * info[v][1][t] / s_st
    return [c / ((n - 1) * (n - 2)) for c in cb]


@pytest.mark.parametrize("seed", range(5))
def test_brandes_matches_path_counting(seed):
    rnd = random.Random(seed)
    n = rnd.randint(4, 12)
    edges = {(i, j) for i in range(n) for j in range(n) if i != j and rnd.random() < 0.25}
    adj = adjacency(n, edges)
    assert betweenness(n, adj) == pytest.approx(_brute_betweenness(n, adj))


def test_no_dataflow_and_single_item_give_zeros():
    code = "x = 1\ny = x\n"
    seg = segment_response(code, [(i, i + 1) for i in range(len(code))], dataflow=False)
    assert seg.reach == [0.0, 0.0] and seg.bridge == [0.0, 0.0]
    one = "x = 1\n"
    seg = segment_response(one, [(i, i + 1) for i in range(len(one))])
    assert seg.reach == [0.0] and seg.bridge == [0.0]


def test_blocks_are_analysed_separately():
    text = "```python\nx = 1\ny = x\n```\nthen\n```python\nprint(x)\nz = 2\n```\n"
    seg = segment_response(text, [(i, i + 1) for i in range(len(text))])
    # block 0: 0 -> 1 ; block 1: print(x) has no definition of x in its own block
    assert seg.reach == pytest.approx([1.0, 0.0, 0.0, 0.0])
