"""Stage 2: split each response into prose and code, and code into tree-sitter coding items.

Pipeline per sample (METHOD.md section 2):
1. `split_markdown`: markdown code fences (``` or ~~~, CommonMark rules: a fence closes only with
   the same character, at least as long, and no info string; an unterminated fence runs to the end;
   a fence tagged markdown/md is split again, so fences nested inside it are found). A response
   with no fence that parses cleanly as code (and is not a bare word) is one code block.
2. `itemise_block`: each statement of a code block is an item; a compound statement (def, class,
   if, for, while, with, try, match, and their clauses) longer than `segment.max_item_tokens`
   tokens of the model's tokenizer is split into its header item and its recursed body.
   Decorators stay with their definition. Comments and blank lines belong to no item. A statement
   with a syntax error is split if it has a body, so that valid parts survive; the erroneous
   region itself is never an item (`segment.on_error: drop_sample` drops the whole sample).
3. Char/token mapping: tree-sitter gives UTF-8 byte offsets; they are mapped to character offsets
   of the response, then to token indices through the tokenizer's offset mapping. A token belongs
   to an item only if its span lies wholly inside the item's span. Byte-level BPE tokens carry the
   preceding space (" return"), so a token's span is taken without its leading/trailing
   whitespace (a pure-whitespace token keeps its full span). Tokens overlapping a comment are removed.
4. Core logic tokens of an item: tokens overlapping a leaf that carries program meaning
   (identifiers, keywords, operators, literals; strings are one literal) - not punctuation,
   brackets, commas, colons, whitespace, comments or docstrings.
5. Prose tokens eligible for the NL share: tokens wholly inside prose that contain a letter or
   digit once markdown syntax is stripped, and are not English stop-words.
6. Reach and Bridge of each item from codeblock/dataflow.py (zeros if `dataflow.enabled` is off).

Output `cfg.paths.segments` (parquet), one row per sample, token indices RELATIVE to
response_start (0 = first response token):
    id                str
    input_ids         list<int32>    encode_pair(...) of the chat-formatted pair (same as score)
    response_start    int32          index of the first response token in input_ids
    response_end      int32          one past the last kept response token
    dropped           bool           on_error=drop_sample and a code block had a syntax error
    n_blocks          int32          code blocks found; n_error_regions int32
    block_lang        list<str>      language of each code block ('' if no grammar)
    block_char_start / block_char_end  list<int32>  char span of each block's code in the response
    item_block        list<int32>    block index of each item
    item_kind         list<str>      tree-sitter node type (header items: '<type>:header')
    item_char_start / item_char_end list<int32>  char span in the response
    item_tokens       list<list<int32>>  token indices of the item
    item_core         list<list<int32>>  its core-logic token indices (subset of item_tokens)
    item_reach / item_bridge  list<float32>
    prose_tokens      list<int32>    eligible prose token indices
Schema metadata (key `codeblock`): config hash of segment/dataflow/score.max_length/model, input sha256.
"""

from __future__ import annotations

import argparse
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from codeblock.select.languages import LanguageSpec, get_spec, parser_for
from codeblock.stages import StageContext, StageResult, stage_hash

# ---------------------------------------------------------------------------------------------
# Markdown fences

_LINE_RE = re.compile(r"[^\n]*\n|[^\n]+")
_FENCE_OPEN_RE = re.compile(r"^( *)(`{3,}|~{3,})(.*)$")
_MARKDOWN_TAGS = {"markdown", "md"}


@dataclass
class Region:
    kind: str  # "code" | "prose"
    start: int  # char span in the text (code: the code only, fence lines excluded)
    end: int
    lang: str = ""  # fence info string's first word (code only)
    indent: int = 0  # spaces before the opening fence: removed from each code line before parsing


def _lines(text: str, base: int):
    for m in _LINE_RE.finditer(text):
        line = m.group(0)
        yield base + m.start(), base + m.end(), line.rstrip("\n").rstrip("\r")


_FENCE_LINE_RE = re.compile(r"^ *(?:`{3,}|~{3,})[^\n]*$", re.MULTILINE)


def split_markdown(text: str, base: int = 0) -> list[Region]:
    """Prose and fenced code regions of `text` (offsets shifted by `base`); fence lines are in neither."""
    if "```" not in text and "~~~" not in text:
        return [Region("prose", base, base + len(text))] if text else []
    # only lines that look like a fence matter: (start, end incl. newline, line without \r)
    cands = []
    for m in _FENCE_LINE_RE.finditer(text):
        end = m.end() + 1 if m.end() < len(text) else m.end()
        cands.append((base + m.start(), base + end, m.group(0).rstrip("\r")))
    regions: list[Region] = []
    prose_start = base
    i = 0
    while i < len(cands):
        ls, le, body = cands[i]
        m = _FENCE_OPEN_RE.match(body)
        if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).strip()
        if ls > prose_start:
            regions.append(Region("prose", prose_start, ls))
        close = None
        for j in range(i + 1, len(cands)):
            stripped = cands[j][2].lstrip(" ")
            if stripped.startswith(fence[0] * len(fence)) and not stripped.lstrip(fence[0]).strip():
                close = j
                break
        code_start = le
        code_end = cands[close][0] if close is not None else base + len(text)
        tag = info.split(maxsplit=1)[0].lower() if info else ""
        if tag in _MARKDOWN_TAGS:
            regions.extend(split_markdown(text[code_start - base:code_end - base], code_start))
        else:
            regions.append(Region("code", code_start, code_end, tag, indent))
        i = (close + 1) if close is not None else len(cands)
        prose_start = cands[close][1] if close is not None else base + len(text)
    if prose_start < base + len(text):
        regions.append(Region("prose", prose_start, base + len(text)))
    return regions


def looks_like_code(text: str, spec: LanguageSpec) -> bool:
    """An unfenced response counts as code if it parses without error and is more than bare words."""
    if not text.strip():
        return False
    tree = parser_for(spec.name).parse(text.encode("utf-8"))
    root = tree.root_node
    if root.has_error:
        return False
    stmts = [c for c in root.named_children if c.type not in spec.comments]
    if not stmts:
        return False
    for s in stmts:
        kids = s.named_children
        if not (s.type == spec.docstring_statement and len(kids) == 1 and kids[0].type in ("identifier", spec.docstring_child)):
            return True
    return False


def find_regions(response: str, default_language: str) -> list[Region]:
    regions = split_markdown(response)
    if not any(r.kind == "code" for r in regions):
        spec = get_spec("", default_language)
        if spec is not None and looks_like_code(response, spec):
            return [Region("code", 0, len(response), spec.name)]
    return regions


# ---------------------------------------------------------------------------------------------
# Token spans

_STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just let me more most my myself
    no nor not now of off on once only or other our ours ourselves out over own same she should so some such
    than that the their theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours yourself
    yourselves s t ll ve re d m also may might must shall us""".split()
)
_MD_CHARS = "#*_>`~-=|[](){}!:;,.?\"'/\\+<>^$%&@ \t\r\n"


_IS_SPACE = np.array([chr(c).isspace() for c in range(0x3002)], dtype=bool)  # last entry: any higher code point


class TokenSpans:
    """Response token spans with surrounding whitespace trimmed, for bisect lookups.

    Vectorised: `nxt[i]` is the first non-space char at or after i, `prv[i]` one past the last
    non-space char before i; a token (a, b) becomes (nxt[a], prv[b]) unless it is all whitespace."""

    __slots__ = ("starts", "ends", "n", "text", "ts", "te")

    def __init__(self, response: str, offsets):
        n = len(offsets)
        self.n, self.text = n, response
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

    def eligible_prose(self, lo: int, hi: int) -> list[int]:
        out = []
        for k in range(lo, hi):
            word = self.text[self.starts[k]:self.ends[k]].strip(_MD_CHARS).lower()
            if word and any(ch.isalnum() for ch in word) and word not in _STOP_WORDS:
                out.append(k)
        return out


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


class _BlockItemiser:
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
        if not node.has_error:
            lo, hi = self.toks.inside(self.c(node.start_byte), self.c(node.end_byte))
            if hi - lo <= self.max_tokens or not splittable:
                self.emit(node.type, node.start_byte, node.end_byte, [node])
                return
        elif not splittable:
            self.errors += 1
            return
        self.split(node, target)

    def split(self, node, target) -> None:
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


def _block_source(response: str, r: Region) -> tuple[bytes, int, list[int] | None]:
    """(UTF-8 bytes to parse, char base, byte -> response-char map or None when the map is base + byte).

    Up to `r.indent` leading spaces are removed from every line (a fence indented inside a list
    item); the map then points every parsed byte back at its character in the response."""
    code = response[r.start:r.end]
    data = code.encode("utf-8")
    if r.indent == 0 and len(data) == len(code):
        return data, r.start, None
    chars: list[int] = []  # response char index of every char that is parsed
    if r.indent:
        parts = []
        for m in _LINE_RE.finditer(code):
            line = m.group(0)
            k = min(r.indent, len(line) - len(line.lstrip(" ")))
            parts.append(line[k:])
            chars.extend(range(r.start + m.start() + k, r.start + m.end()))
        code = "".join(parts)
        data = code.encode("utf-8")
    else:
        chars = list(range(r.start, r.end))
    m_: list[int] = []
    for ci, ch in zip(chars, code):
        m_.extend([ci] * len(ch.encode("utf-8")) if ord(ch) > 127 else (ci,))
    m_.append(r.end)
    return data, 0, m_


@dataclass
class Segmented:
    regions: list[Region]
    blocks: list[Region]
    block_lang: list[str]
    items: list[Item]
    prose_tokens: list[int]
    n_error_regions: int
    reach: list[float]
    bridge: list[float]


def segment_response(response: str, offsets, *, max_item_tokens: int = 64, default_language: str = "python",
                     dataflow: bool = True) -> Segmented:
    """Regions, items (with token indices into `offsets`), prose tokens, Reach and Bridge of one response.

    `offsets` are the (start, end) char offsets of the response tokens inside `response`."""
    from codeblock.select import dataflow as df

    toks = TokenSpans(response, offsets)
    regions = find_regions(response, default_language)
    items: list[Item] = []
    reach: list[float] = []
    bridge: list[float] = []
    errors = 0
    blocks = [r for r in regions if r.kind == "code"]
    langs = []
    for bi, r in enumerate(blocks):
        spec = get_spec(r.lang, default_language)
        langs.append(spec.name if spec else "")
        if spec is None:
            continue
        data, base, b2c = _block_source(response, r)
        tree = parser_for(spec.name).parse(data)
        it = _BlockItemiser(spec, data, base, b2c, toks, max_item_tokens, bi)
        it.visit_container(tree.root_node)
        errors += it.errors
        found = assign_tokens(it.items, toks, it.char_spans(it.core_spans), it.char_spans(it.comment_spans))
        items.extend(found)
        if dataflow and spec.name in df.ANALYSERS and len(found) > 1:
            rb = df.reach_bridge(tree.root_node, [(x.byte_start, x.byte_end) for x in found], spec.name)
        else:
            rb = ([0.0] * len(found), [0.0] * len(found))
        reach.extend(rb[0])
        bridge.extend(rb[1])
    prose: list[int] = []
    for r in regions:
        if r.kind == "prose":
            lo, hi = toks.inside(r.start, r.end)
            prose.extend(toks.eligible_prose(lo, hi))
    return Segmented(regions, blocks, langs, items, prose, errors, reach, bridge)


# ---------------------------------------------------------------------------------------------
# Stage

_WORKER: dict = {}


def _init_worker(cfg) -> None:
    import os
    import signal

    from codeblock.core.models import load_tokenizer

    # A forked worker inherits the parent's SIGTERM handler (Prefect installs one that raises);
    # the pool terminates its workers with SIGTERM, so restore the default and exit quietly.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the pool already uses every core
    if _WORKER.get("cfg") is cfg and "tok" in _WORKER:  # inherited through fork: already loaded
        return
    _WORKER["cfg"] = cfg
    _WORKER["tok"] = load_tokenizer(cfg.model)


def _row(sample_id: str, response: str, enc, cfg) -> dict:
    seg = segment_response(
        response, enc.offsets, max_item_tokens=cfg.segment.max_item_tokens,
        default_language=cfg.segment.default_language, dataflow=cfg.dataflow.enabled,
    )
    dropped = cfg.segment.on_error == "drop_sample" and seg.n_error_regions > 0
    items = [] if dropped else seg.items
    return {
        "id": sample_id,
        "input_ids": list(enc.input_ids),
        "response_start": enc.response_start,
        "response_end": enc.response_end,
        "dropped": dropped,
        "n_blocks": len(seg.blocks),
        "n_error_regions": seg.n_error_regions,
        "block_lang": seg.block_lang,
        "block_char_start": [b.start for b in seg.blocks],
        "block_char_end": [b.end for b in seg.blocks],
        "item_block": [x.block for x in items],
        "item_kind": [x.kind for x in items],
        "item_char_start": [x.char_start for x in items],
        "item_char_end": [x.char_end for x in items],
        "item_tokens": [x.tokens for x in items],
        "item_core": [x.core for x in items],
        "item_reach": [] if dropped else seg.reach,
        "item_bridge": [] if dropped else seg.bridge,
        "prose_tokens": [] if dropped else seg.prose_tokens,
    }


def _work(batch):
    """Tokenize a batch (fast tokenizer, batch encoding) and segment every response of it."""
    from codeblock.core.tokenize import encode_pairs

    cfg = _WORKER["cfg"]
    encs = encode_pairs(_WORKER["tok"], [(ins, resp) for _, ins, resp in batch], cfg.score.max_length)
    return [_row(i, resp, enc, cfg) for (i, _, resp), enc in zip(batch, encs)]


SCHEMA_FIELDS = {
    "id": "string", "input_ids": "list<int32>", "response_start": "int32", "response_end": "int32",
    "dropped": "bool", "n_blocks": "int32", "n_error_regions": "int32", "block_lang": "list<string>",
    "block_char_start": "list<int32>", "block_char_end": "list<int32>", "item_block": "list<int32>",
    "item_kind": "list<string>", "item_char_start": "list<int32>", "item_char_end": "list<int32>",
    "item_tokens": "list<list<int32>>", "item_core": "list<list<int32>>", "item_reach": "list<float32>",
    "item_bridge": "list<float32>", "prose_tokens": "list<int32>",
}


def arrow_schema():
    import pyarrow as pa

    prim = {"string": pa.string(), "int32": pa.int32(), "bool": pa.bool_(), "float32": pa.float32()}

    def parse(t: str):
        if t.startswith("list<"):
            return pa.list_(parse(t[5:-1]))
        return prim[t]

    return pa.schema([(k, parse(v)) for k, v in SCHEMA_FIELDS.items()])


def segment_rows(cfg, rows, workers: int | None = None, chunk: int = 64, progress: bool = True) -> list[dict]:
    """Segment (id, instruction, response) triples, tokenizing in the workers; keeps input order."""
    from tqdm import tqdm

    workers = cfg.segment.workers if workers is None else workers
    batches = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    out: list[dict] = []
    bar = tqdm(total=len(rows), desc="segment", unit="resp", disable=not progress)
    if workers <= 1:
        _init_worker(cfg)
        for b in batches:
            out.extend(_work(b))
            bar.update(len(b))
    else:
        import copy
        import gc
        import multiprocessing as mp

        from codeblock.core.models import resolve_model_path

        # convert/cache the model once, before the workers start; they open the resolved folder
        wcfg = copy.deepcopy(cfg)
        wcfg.model.name_or_path = resolve_model_path(cfg.model.name_or_path, cfg.model)
        fork = "fork" in mp.get_all_start_methods()
        if fork:  # load the tokenizer once here; the forked workers inherit it
            _init_worker(wcfg)
        ctx = mp.get_context("fork" if fork else "spawn")
        gc.freeze()  # forked workers then do not copy the parent's pages when the GC walks them
        try:
            with ctx.Pool(workers, initializer=_init_worker, initargs=(wcfg,)) as pool:
                for res in pool.imap(_work, batches):
                    out.extend(res)
                    bar.update(len(res))
        finally:
            gc.unfreeze()
    bar.close()
    return out


def run_segment(cfg, limit: int = 0) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from codeblock.core.io import sha256_file, write_parquet
    from codeblock.core.tracking import stage_run

    src = cfg.paths.filtered
    table = pq.read_table(src, columns=["id", "instruction", "response"])
    rows = list(zip(*(table.column(c).to_pylist() for c in ("id", "instruction", "response"))))
    if limit:
        rows = rows[:limit]
    params = {"segment." + k: v for k, v in cfg.to_dict()["segment"].items()}
    params["dataflow.enabled"] = cfg.dataflow.enabled
    with stage_run(cfg, "segment", params=params) as tr:
        out = segment_rows(cfg, rows)
        n_items = sum(len(r["item_tokens"]) for r in out)
        resp_tokens = sum(r["response_end"] - r["response_start"] for r in out)
        item_tokens = sum(len(t) for r in out for t in r["item_tokens"])
        metrics = {
            "samples": len(out),
            "dropped_samples": sum(r["dropped"] for r in out),
            "samples_without_code": sum(r["n_blocks"] == 0 for r in out),
            "code_blocks": sum(r["n_blocks"] for r in out),
            "items": n_items,
            "items_per_sample": n_items / max(1, len(out)),
            "error_regions": sum(r["n_error_regions"] for r in out),
            "response_tokens": resp_tokens,
            "item_token_share": item_tokens / max(1, resp_tokens),
            "prose_tokens_eligible": sum(len(r["prose_tokens"]) for r in out),
        }
        meta = {
            "stage": "segment",
            "config_hash": stage_hash(cfg, "segment"),
            "score_max_length": cfg.score.max_length,
            "input": src,
            "input_sha256": sha256_file(src),
            "metrics": metrics,
        }
        write_parquet(cfg.paths.segments, pa.Table.from_pylist(out, schema=arrow_schema()), metadata=meta)
        tr.log_metrics(metrics)
    return {"outputs": [cfg.paths.segments], "metrics": metrics}


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=0, help="segment only the first N samples (debugging)")


def run(cfg, ctx: StageContext) -> StageResult:
    return StageResult.from_dict("segment", run_segment(cfg, limit=int(ctx.options.get("limit") or 0)))


def summary(res: StageResult) -> str:
    return "\n".join(f"{k:28s} {v}" for k, v in res.metrics.items())
