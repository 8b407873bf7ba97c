"""Helpers of the data-flow tests: def-use pairs by line, and the item graph of a code string."""

from __future__ import annotations

from codeblock.select.dataflow import def_use_pairs, item_edges
from codeblock.select.segment import segment_response


def pairs(code: str) -> set[tuple[str, int, int]]:
    """(name, line of the use, line of a definition reaching it), lines from 1."""
    ps, _ = def_use_pairs(code)
    data = code.encode()
    line = lambda b: data[:b].count(b"\n") + 1  # noqa: E731
    return {(u.name, line(u.site), line(b.site)) for b, u in ps}


def graph(code: str, max_item_tokens: int = 10_000):
    """Items of an unfenced Python string (one 'token' per char: `max_item_tokens` counts chars),
    their texts, the lifted edge set, Reach and Bridge."""
    seg = segment_response(code, [(i, i + 1) for i in range(len(code))], max_item_tokens=max_item_tokens,
                           default_language="python")
    spans = [(len(code[:x.char_start].encode()), len(code[:x.char_end].encode())) for x in seg.items]
    ps, _ = def_use_pairs(code)
    texts = [code[x.char_start:x.char_end] for x in seg.items]
    return texts, item_edges(ps, spans), seg.reach, seg.bridge
