"""Stage 4: the def-use graph of a code block, lifted to coding items; Reach and Bridge (docs/method.md section 4).

Definitions and uses come from classic reaching definitions over each block's control flow
(codeblock/select/pyflow.py builds the per-scope control-flow graphs from the tree-sitter tree,
codeblock/select/reaching.py solves them; docs/dataflow.md has the rules with examples):
    definitions: assignments (tuple/list/starred/parenthesised targets, chained and annotated),
    augmented assignments (a use AND a definition), for targets, with ... as, except ... as, walrus
    (binds in the enclosing non-comprehension scope), comprehension variables, def/class names,
    parameters (defaults and annotations are uses in the enclosing scope), imports, match captures.
    uses: identifier reads (attribute names and keyword-argument names are not reads).
A definition reaches a use when some path from it to the use carries no other definition of the
variable: branches, loops (zero or more iterations, loop-carried), try/except/else/finally, with,
match, return/break/continue/raise are followed; scopes (functions, lambdas, classes,
comprehensions, global/nonlocal) are resolved by Python's scope rules, not by source order.

Item graph: edge i -> j (i != j) when a definition inside item i reaches a use inside item j.
    Reach(i)  = |items transitively reachable from i| / (n - 1)
    Bridge(i) = betweenness centrality of i (Brandes' algorithm, directed, unweighted) / ((n-1)(n-2))
A block nested deeper than `max_depth` compound statements / scopes is not analysed: its items get
Reach = Bridge = 0 and `BlockFlow.skipped` says why (the stage counts it, see `reach_bridge(stats=)`).
Not tracked (known limits): aliasing, mutation through attributes or subscripts, dynamic calls,
exec/eval, `del`, names flowing between different code blocks of one response.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from codeblock.select.pyflow import FlowBuilder
from codeblock.select.pyscope import Binding, TooDeep, Use
from codeblock.select.reaching import Reaching

__all__ = ["ANALYSERS", "Binding", "BlockFlow", "MAX_DEPTH", "SKIP_STAT", "Use", "adjacency", "analyse_block",
           "betweenness", "def_use_pairs", "item_edges", "python_def_use", "reach", "reach_bridge"]

MAX_DEPTH = 100  # nested compound statements / scopes analysed; deeper blocks are skipped and counted
SKIP_STAT = "dataflow_skipped_deep"  # the stats key reach_bridge(stats=...) increments for such a block


def python_sites(root, max_depth: int = MAX_DEPTH) -> list[tuple[int, int]]:
    """(definition byte, use byte) of every reaching definition of a Python tree. Raises TooDeep."""
    fb = FlowBuilder(max_depth)
    module = fb.build(root)
    defs, uses = fb.defs, fb.uses
    return [(defs[d][1], uses[u][1]) for d, u in Reaching(module).run()]


def python_def_use(root, max_depth: int = MAX_DEPTH) -> list[tuple[Binding, Use]]:
    """(reaching binding, use) pairs of a Python tree (each pair once)."""
    fb = FlowBuilder(max_depth)
    module = fb.build(root)
    defs, uses = fb.defs, fb.uses
    pairs = dict.fromkeys((defs[d], uses[u]) for d, u in Reaching(module).run())  # a finally clause is built twice
    return [(Binding(d[0], d[1], d[1]), Use(*u)) for d, u in pairs]


ANALYSERS = {"python": python_def_use}
_SITES = {"python": python_sites}


def _item_of(spans: list[tuple[int, int]]):
    starts = [s for s, _ in spans]

    def item_of(pos: int) -> int | None:
        k = bisect_right(starts, pos) - 1
        return k if k >= 0 and pos < spans[k][1] else None

    return item_of


def _site_edges(sites, spans: list[tuple[int, int]]) -> set[tuple[int, int]]:
    item_of = _item_of(spans)
    memo: dict[int, int | None] = {}
    edges = set()
    for d, u in set(sites):
        i = memo[d] if d in memo else memo.setdefault(d, item_of(d))
        if i is None:
            continue
        j = memo[u] if u in memo else memo.setdefault(u, item_of(u))
        if j is not None and i != j:
            edges.add((i, j))
    return edges


def item_edges(pairs, spans: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Lift def-use pairs to items given their (byte_start, byte_end) spans, sorted and disjoint."""
    return _site_edges(((b.site, u.site) for b, u in pairs), spans)


def _paths(n: int, adj: list[list[int]]) -> tuple[list[int], list[float]]:
    """One breadth-first search per source gives both: how many items each item reaches, and the
    raw Brandes (2001) betweenness of each item (directed, unweighted)."""
    reached = [len(set(a)) for a in adj]
    cb = [0.0] * n
    if not any(adj[v] for v in {w for out in adj for w in out}):
        return reached, cb  # no node has both an in- and an out-edge: every path is one edge
    for s in range(n):
        if not adj[s]:
            continue  # a source with no out-edge starts no path
        dist, sigma, preds, order = {s: 0}, {s: 1}, {}, [s]  # dicts: a search reaches few of the n items
        k = 0
        while k < len(order):
            v = order[k]
            k += 1
            dv, sv = dist[v] + 1, sigma[v]
            for w in adj[v]:
                dw = dist.get(w)
                if dw is None:
                    dist[w], sigma[w], preds[w] = dv, sv, [v]
                    order.append(w)
                elif dw == dv:
                    sigma[w] += sv
                    preds[w].append(v)
        reached[s] = len(order) - 1
        delta = dict.fromkeys(order, 0.0)
        for w in reversed(order):
            coeff = (1.0 + delta[w]) / sigma[w]
            for v in preds.get(w, ()):
                delta[v] += sigma[v] * coeff
            if w != s:
                cb[w] += delta[w]
    return reached, cb


def _normalise(n: int, reached: list[int], cb: list[float]) -> tuple[list[float], list[float]]:
    r = [x / (n - 1) for x in reached] if n > 1 else [0.0] * n
    b = [c / ((n - 1) * (n - 2)) for c in cb] if n > 2 else [0.0] * n
    return r, b


def reach(n: int, adj: list[list[int]]) -> list[float]:
    """|items transitively reachable from i| / (n - 1)."""
    return _normalise(n, *_paths(n, adj))[0]


def betweenness(n: int, adj: list[list[int]], normalized: bool = True) -> list[float]:
    """Brandes (2001) betweenness for a directed, unweighted graph; normalised by (n-1)(n-2)."""
    if not normalized:
        return _paths(n, adj)[1]
    return _normalise(n, *_paths(n, adj))[1]


def adjacency(n: int, edges) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(n)]
    for i, j in sorted(edges):
        adj[i].append(j)
    return adj


@dataclass
class BlockFlow:
    reach: list[float]
    bridge: list[float]
    skipped: str = ""  # "" analysed (or nothing to analyse); "too_deep" nesting past max_depth


def analyse_block(root, spans: list[tuple[int, int]], language: str = "python",
                  max_depth: int = MAX_DEPTH) -> BlockFlow:
    """Reach and Bridge of each item (byte spans, sorted and disjoint, inside the block parsed into `root`)."""
    n = len(spans)
    zeros = BlockFlow([0.0] * n, [0.0] * n)
    if n <= 1 or language not in _SITES:
        return zeros
    try:
        sites = _SITES[language](root, max_depth)
    except (TooDeep, RecursionError):  # RecursionError: a guard of last resort (e.g. a low recursion limit)
        zeros.skipped = "too_deep"
        return zeros
    adj = adjacency(n, _site_edges(sites, spans))
    return BlockFlow(*_normalise(n, *_paths(n, adj)))


def reach_bridge(root, spans: list[tuple[int, int]], language: str = "python", stats: dict | None = None,
                 max_depth: int = MAX_DEPTH) -> tuple[list[float], list[float]]:
    """Reach and Bridge of each item; a block skipped for deep nesting adds 1 to `stats[SKIP_STAT]`."""
    res = analyse_block(root, spans, language, max_depth)
    if res.skipped and stats is not None:
        stats[SKIP_STAT] = stats.get(SKIP_STAT, 0) + 1
    return res.reach, res.bridge


def def_use_pairs(code: str, language: str = "python"):
    """Parse `code` and return its (reaching binding, use) pairs and the tree."""
    from codeblock.select.languages import parser_for

    tree = parser_for(language).parse(code.encode("utf-8"))
    return ANALYSERS[language](tree.root_node), tree
