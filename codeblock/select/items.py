"""Coding items of one parsed code block, and the mapping of char spans to response token indices.

`TokenSpans` holds the response tokens' char spans (whitespace trimmed) for lookups; `BlockItemiser`
walks a tree-sitter tree and emits `Item`s (see codeblock/select/segment.py for the rules);
`assign_tokens` resolves each item's tokens and core-logic tokens.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from codeblock.core.markdown import Region, dedent_lines
from codeblock.select.languages import LanguageSpec

# ---------------------------------------------------------------------------------------------
# Token spans

_IS_SPACE = np.array([chr(c).isspace() for c in range(0x3002)], dtype=bool)  # last entry: any higher code point


class TokenSpans:
    """Response token spans with surrounding whitespace trimmed, for bisect lookups.

    Vectorised: `nxt[i]` is the first non-space char at or after i, `prv[i]` one past the last
    non-space char before i; a token (a, b) becomes (nxt[a], prv[b]) unless it is all whitespace."""

    __slots__ = ("starts", "ends", "n", "text", "ts", "te", "_lines")

    def __init__(self, response: str, offsets):
        n = len(offsets)
        self.n, self.text, self._lines = n, response, None
        if n == 0:
            self.starts, self.ends = [], []
            self.ts = self.te = np.zeros(0, dtype=np.int64)
            return
        off = np.fromiter(chain.from_iterable(offsets), dtype=np.int64, count=2 * n).reshape(n, 2)
        a, b = off[:, 0], off[:, 1]
        cps = np.frombuffer(response.encode("utf-32-le"), dtype=np.uint32)
        solid = ~_IS_SPACE[np.minimum(cps, len(_IS_SPACE) - 1)]
        L = len(cps)
        idx = np.arange(L + 1, dtype=np.int64)
        nxt = np.where(np.append(solid, True), idx, L)
        nxt = np.minimum.accumulate(nxt[::-1])[::-1]  # first solid char >= i (L if none)
        prv = np.where(np.insert(solid, 0, True), idx, 0)
        prv = np.maximum.accumulate(prv)  # one past the last solid char < i (0 if none)
        ts, te = nxt[a], prv[b]
        blank = ts >= b
        self.ts, self.te = np.where(blank, a, ts), np.where(blank, b, te)
        self.starts, self.ends = self.ts.tolist(), self.te.tolist()

    def line_of(self, idx: np.ndarray) -> np.ndarray:
        """The 0-based source line (newlines before its trimmed start) of each token in `idx`."""
        if self._lines is None:
            cps = np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32)
            self._lines = np.concatenate(([0], np.cumsum(cps == 10)))
        return self._lines[self.ts[idx]]

    def touching(self, spans: np.ndarray) -> np.ndarray:
        """Bool per token: its span overlaps one of the (k, 2) char `spans`."""
        delta = np.zeros(len(self.text) + 2, dtype=np.int32)
        np.add.at(delta, spans[:, 0], 1)
        np.add.at(delta, spans[:, 1], -1)
        mark = np.cumsum(delta[:-1]) > 0  # chars covered by at least one span
        cum = np.concatenate(([0], np.cumsum(mark)))
        return cum[self.te] > cum[self.ts]

    def inside(self, cs: int, ce: int) -> tuple[int, int]:
        """[lo, hi): tokens whose span lies wholly inside chars [cs, ce)."""
        lo = bisect_left(self.starts, cs)
        hi = bisect_right(self.ends, ce, lo)
        return lo, max(lo, hi)


# ---------------------------------------------------------------------------------------------
# Items


@dataclass
class Item:
    block: int
    kind: str
    char_start: int
    char_end: int
    byte_start: int  # inside the block's code
    byte_end: int
    tokens: list[int] = field(default_factory=list)
    core: list[int] = field(default_factory=list)
    tok_range: tuple[int, int] = (0, 0)  # tokens wholly inside [char_start, char_end)
    line_starts: list[int] = field(default_factory=list)  # positions in `tokens` where a source line starts


MAX_SPLIT_DEPTH = 100  # nested compound statements split into items; deeper ones stay one item

class BlockItemiser:
    """Walks one parsed code block and emits items (see the module docstring)."""

    def __init__(self, spec: LanguageSpec, code: bytes, char_base: int, b2c, toks: TokenSpans,
                 max_item_tokens: int, block_index: int):
        self.spec, self.code, self.base, self.b2c = spec, code, char_base, b2c
        self.toks, self.max_tokens, self.block = toks, max_item_tokens, block_index
        self.items: list[Item] = []
        self.core_spans: list[tuple[int, int]] = []
        self.comment_spans: list[tuple[int, int]] = []
        self.errors = 0
        self.containers = set(spec.containers)
        self.comments = set(spec.comments)
        self.atomic = set(spec.atomic)
        self.punct = set(spec.punctuation)
        self.limit = toks.ends[-1] if toks.n else 0  # chars past this were truncated away
        self.depth = 0  # compound statements being split right now
        self.deep = False  # some statement nested deeper than MAX_SPLIT_DEPTH was kept whole

    def c(self, byte: int) -> int:
        return self.base + (byte if self.b2c is None else self.b2c[byte])

    def _has_body(self, node) -> bool:
        return any(k.type in self.containers for k in node.children)

    def _is_clause(self, node) -> bool:
        return node.is_named and self._has_body(node)

    def visit_container(self, node) -> None:
        for ch in node.children:
            if ch.type in self.comments:
                continue
            if not ch.is_named:
                if ch.type.strip() and ch.type not in (":", ";", "NEWLINE", "INDENT", "DEDENT"):
                    self.errors += 1  # stray token (tree-sitter error recovery)
                continue
            self.visit_statement(ch)

    def visit_statement(self, node) -> None:
        if node.type == "ERROR" or node.is_missing:
            self.errors += 1
            return
        target = node
        if node.type in self.spec.wrappers:
            target = node.child_by_field_name("definition") or node
        splittable = self._has_body(target)
        if self.c(node.start_byte) >= self.limit:
            return  # wholly past the max_length cut
        cut = self.c(node.end_byte) > self.limit  # a compound cut by max_length: keep its complete parts
        if not node.has_error:
            lo, hi = self.toks.inside(self.c(node.start_byte), self.c(node.end_byte))
            if (hi - lo <= self.max_tokens and not cut) or not splittable:
                self.emit(node.type, node.start_byte, node.end_byte, [node])
                return
        elif not splittable:
            self.errors += 1
            return
        self.split(node, target)

    def split(self, node, target) -> None:
        if self.depth >= MAX_SPLIT_DEPTH:  # pathological nesting: keep the rest whole, no recursion
            self.deep = True
            if not node.has_error:
                self.emit(node.type, node.start_byte, node.end_byte, [node])
            return
        self.depth += 1
        try:
            self._split(node, target)
        finally:
            self.depth -= 1

    def _split(self, node, target) -> None:
        kids = target.children
        first = next(i for i, k in enumerate(kids) if k.type in self.containers or self._is_clause(k))
        head = [k for k in kids[:first] if k.type not in self.comments]
        if target is not node:  # decorators (and anything before the definition) join the header
            head = [k for k in node.children if k is not target and k.type not in self.comments] + head
        if head:
            if any(k.has_error or k.is_missing or k.type == "ERROR" for k in head):
                self.errors += 1
            else:
                self.emit(f"{target.type}:header", node.start_byte, head[-1].end_byte, head)
        for k in kids[first:]:
            if k.type in self.comments:
                continue
            if k.type in self.containers:
                self.visit_container(k)
            elif k.is_named:
                self.visit_statement(k)

    def emit(self, kind: str, b0: int, b1: int, roots) -> None:
        cs, ce = self.c(b0), self.c(b1)
        if ce > self.limit:  # truncated by max_length: not a whole item any more
            return
        lo, hi = self.toks.inside(cs, ce)
        if hi <= lo:
            return
        self._leaves(roots)
        self.items.append(Item(self.block, kind, cs, ce, b0, b1, tok_range=(lo, hi)))

    def _leaves(self, roots) -> None:
        """Add the byte spans of core-logic leaves and of comments under `roots`."""
        core, comments = self.core_spans, self.comment_spans
        comment_t, atomic, punct = self.comments, self.atomic, self.punct
        doc_stmt, doc_child = self.spec.docstring_statement, self.spec.docstring_child
        stack = list(reversed(roots))
        pop, extend = stack.pop, stack.extend
        while stack:
            n = pop()
            t = n.type
            if t in comment_t:
                comments.append((n.start_byte, n.end_byte))
            elif t in atomic:
                core.append((n.start_byte, n.end_byte))
            elif n.child_count == 0:
                if t not in punct and t != "ERROR":
                    a, b = n.start_byte, n.end_byte
                    if b > a:
                        core.append((a, b))
            elif t == doc_stmt and n.named_child_count == 1 and n.named_children[0].type == doc_child:
                continue  # a bare string statement: a docstring, no program meaning
            else:
                extend(reversed(n.children))

    def char_spans(self, spans: list[tuple[int, int]]) -> np.ndarray:
        """Byte spans of the parsed block -> (k, 2) char spans in the response."""
        arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        return arr + self.base if self.b2c is None else np.asarray(self.b2c, dtype=np.int64)[arr]


def assign_tokens(items: list[Item], toks: TokenSpans, core_spans, comment_spans) -> list[Item]:
    """Resolve each item's token range into its tokens (minus comment tokens) and core tokens."""
    if not items:
        return items
    is_comment = toks.touching(comment_spans)
    is_core = toks.touching(core_spans) & ~is_comment
    keep = []
    for it in items:
        lo, hi = it.tok_range
        rng = np.arange(lo, hi)
        tokens = rng[~is_comment[lo:hi]]
        if len(tokens):
            it.tokens, it.core = tokens.tolist(), rng[is_core[lo:hi]].tolist()
            keep.append(it)
    return keep


def block_source(response: str, r: Region) -> tuple[bytes, int, list[int] | None]:
    """(UTF-8 bytes to parse, char base, byte -> response-char map or None when the map is base + byte).

    Up to `r.indent` leading spaces are removed from every line (a fence indented inside a list
    item); the map then points every parsed byte back at its character in the response."""
    code = response[r.start:r.end]
    data = code.encode("utf-8")
    if r.indent == 0 and len(data) == len(code):
        return data, r.start, None
    if r.indent:
        code, keep = dedent_lines(code, r.indent)
        data = code.encode("utf-8")
        chars = [r.start + k for k in keep]  # response char index of every char that is parsed
    else:
        chars = list(range(r.start, r.end))
    m_: list[int] = []
    for ci, ch in zip(chars, code):
        m_.extend([ci] * len(ch.encode("utf-8")) if ord(ch) > 127 else (ci,))
    m_.append(r.end)
    return data, 0, m_
