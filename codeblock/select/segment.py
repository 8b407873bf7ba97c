"""Stage 2: split each response into prose and code, and code into tree-sitter coding items.

Pipeline per sample (docs/method.md section 2):
1. `split_markdown` (codeblock/core/markdown.py, the project's one fence parser): prose and fenced
   code blocks. A response with no fence that parses cleanly as code (and is more than data) is
   one code block. A tagged fence is parsed with the grammar of its tag (none: not itemised); an
   untagged fence is parsed with `segment.default_language` only when
   codeblock/select/fencelang.py rates it code - shell, console sessions, tracebacks, printed
   data and text are neither items nor prose (counted in the stage metrics `untagged_*`).
2. `itemise_block`: each statement of a code block is an item; a compound statement (def, class,
   if, for, while, with, try, match, and their clauses) longer than `segment.max_item_tokens`
   tokens of the model's tokenizer is split into its header item and its recursed body.
   Decorators stay with their definition. Comments and blank lines belong to no item.
   Truncation (`score.max_length` cuts the response): a compound statement the cut goes through
   is split the same way, so its complete header and complete inner statements stay items; only
   the statements the cut goes through (and everything after it) are dropped. A statement
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
5. Prose words eligible for the NL share (codeblock/select/prose.py): whole words of prose (all
   their tokens, or none), never markup, numbers, URLs or stop-words, each with its sentence key.
6. Reach and Bridge of each item from codeblock/dataflow.py (zeros if `dataflow.enabled` is off).

Output `cfg.paths.segments` (parquet), one row per sample, token indices RELATIVE to
response_start (0 = first response token):
    id                str
    input_ids         list<int32>    encode_pair(...) of the chat-formatted pair (same as score)
    response_start    int32          index of the first response token in input_ids
    response_end      int32          one past the last kept response token
    dropped           bool           on_error=drop_sample and a code block had a syntax error
    n_blocks          int32          code blocks found; n_error_regions int32; n_deep_blocks int32
                                     (nested past MAX_SPLIT_DEPTH or dataflow.MAX_DEPTH: kept whole, no data flow)
    block_lang        list<str>      language of each code block ('' if no grammar or not code)
    block_kind        list<str>      'tagged' | 'unfenced' | verdict on an untagged fence (fencelang.KINDS)
    block_char_start / block_char_end  list<int32>  char span of each block's code in the response
    item_block        list<int32>    block index of each item
    item_kind         list<str>      tree-sitter node type (header items: '<type>:header')
    item_char_start / item_char_end list<int32>  char span in the response
    item_tokens       list<list<int32>>  token indices of the item
    item_core         list<list<int32>>  its core-logic token indices (subset of item_tokens)
    item_lines        list<list<int32>>  positions in item_tokens where a source line starts
    item_reach / item_bridge  list<float32>
    prose_tokens      list<int32>    eligible prose token indices (the tokens of prose_words)
    prose_words       list<list<int32>>  token indices of each eligible prose word
    prose_word_text   list<str>      the word, lower case
    prose_word_sentence list<int64>  key of its sentence (prose.sentence_key)
Schema metadata (key `codeblock`): config hash of segment/dataflow/score.max_length/model, input sha256.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from itertools import chain

import numpy as np

from codeblock.core.markdown import Region, split_markdown
from codeblock.select.fencelang import classify_untagged
from codeblock.select.items import BlockItemiser, Item, TokenSpans, assign_tokens, block_source
from codeblock.select.languages import LanguageSpec, get_spec, parser_for
from codeblock.select.prose import prose_words
from codeblock.select.segment_metrics import SegmentTotals, fence_counts  # noqa: F401 - fence_counts re-exported
from codeblock.stages import StageContext, StageResult, stage_hash


def looks_like_code(text: str, spec: LanguageSpec) -> bool:
    """An unfenced response counts as code if it parses without error and is more than data."""
    return classify_untagged(text, spec) == "code"


def find_regions(response: str, default_language: str) -> list[Region]:
    regions = split_markdown(response)
    if not any(r.kind == "code" for r in regions):
        spec = get_spec("", default_language)
        if spec is not None and looks_like_code(response, spec):
            return [Region("code", 0, len(response), spec.name)]
    return regions



def _line_starts(response: str, items: list[Item], toks: TokenSpans) -> None:
    """Set each item's `line_starts`: positions in its tokens where a source line starts."""
    sizes = np.fromiter((len(x.tokens) for x in items), dtype=np.int64, count=len(items))
    flat = np.fromiter(chain.from_iterable(x.tokens for x in items), dtype=np.int64, count=int(sizes.sum()))
    line = toks.line_of(flat)
    first = np.cumsum(sizes) - sizes
    new = np.empty(len(flat), dtype=bool)
    new[0] = True
    np.not_equal(line[1:], line[:-1], out=new[1:])
    new[first] = True
    pos = np.flatnonzero(new)
    owner = np.searchsorted(first, pos, side="right") - 1
    rel = (pos - first[owner]).tolist()
    bounds = np.searchsorted(owner, np.arange(len(items) + 1)).tolist()
    for k, x in enumerate(items):
        x.line_starts = rel[bounds[k]:bounds[k + 1]]


@dataclass
class Segmented:
    regions: list[Region]
    blocks: list[Region]
    block_lang: list[str]
    block_kind: list[str]  # 'tagged', 'unfenced', or classify_untagged's verdict on an untagged fence
    items: list[Item]
    prose_tokens: list[int]
    n_error_regions: int
    reach: list[float]
    bridge: list[float]
    prose_words: list[list[int]]  # token indices of each eligible prose word (codeblock/select/prose.py)
    prose_word_text: list[str]
    prose_word_sentence: list[int]  # key of the word's sentence (boilerplate discount)
    n_deep_blocks: int = 0  # blocks nested too deep: items kept whole past the depth, data flow skipped


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
    deep = 0
    blocks = [r for r in regions if r.kind == "code"]
    langs, kinds = [], []
    unfenced = len(blocks) == 1 and len(regions) == 1 and blocks[0].end - blocks[0].start == len(response)
    for bi, r in enumerate(blocks):
        spec = get_spec(r.lang, default_language)
        data, base, b2c = block_source(response, r)
        if unfenced:
            kinds.append("unfenced")
        elif r.lang:
            kinds.append("tagged")
        else:
            kinds.append(classify_untagged(data.decode("utf-8"), spec))
            if kinds[-1] != "code":
                spec = None  # shell, output, data: neither items nor prose
        langs.append(spec.name if spec else "")
        if spec is None:
            continue
        tree = parser_for(spec.name).parse(data)
        it = BlockItemiser(spec, data, base, b2c, toks, max_item_tokens, bi)
        it.visit_container(tree.root_node)
        errors += it.errors
        found = assign_tokens(it.items, toks, it.char_spans(it.core_spans), it.char_spans(it.comment_spans))
        items.extend(found)
        flow_stats: dict[str, int] = {}
        if dataflow and spec.name in df.ANALYSERS and len(found) > 1:
            rb = df.reach_bridge(tree.root_node, [(x.byte_start, x.byte_end) for x in found], spec.name,
                                 stats=flow_stats)
        else:
            rb = ([0.0] * len(found), [0.0] * len(found))
        deep += int(it.deep or bool(flow_stats.get(df.SKIP_STAT)))
        reach.extend(rb[0])
        bridge.extend(rb[1])
    if items:
        _line_starts(response, items, toks)
    words = []
    for r in regions:
        if r.kind == "prose":
            words.extend(prose_words(response, r.start, r.end, toks.starts, toks.ends))
    prose = sorted({k for w in words for k in w[0]})
    return Segmented(regions, blocks, langs, kinds, items, prose, errors, reach, bridge,
                     [w[0] for w in words], [w[1] for w in words], [w[2] for w in words], deep)


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
        "n_deep_blocks": seg.n_deep_blocks,
        "block_lang": seg.block_lang,
        "block_kind": seg.block_kind,
        "block_char_start": [b.start for b in seg.blocks],
        "block_char_end": [b.end for b in seg.blocks],
        "item_block": [x.block for x in items],
        "item_kind": [x.kind for x in items],
        "item_char_start": [x.char_start for x in items],
        "item_char_end": [x.char_end for x in items],
        "item_tokens": [x.tokens for x in items],
        "item_core": [x.core for x in items],
        "item_lines": [x.line_starts for x in items],
        "item_reach": [] if dropped else seg.reach,
        "item_bridge": [] if dropped else seg.bridge,
        "prose_tokens": [] if dropped else seg.prose_tokens,
        "prose_words": [] if dropped else seg.prose_words,
        "prose_word_text": [] if dropped else seg.prose_word_text,
        "prose_word_sentence": [] if dropped else seg.prose_word_sentence,
    }


def _work(batch):
    """Tokenize a batch (fast tokenizer, batch encoding) and segment every response of it."""
    from codeblock.core.tokenize import encode_pairs

    cfg = _WORKER["cfg"]
    encs = encode_pairs(_WORKER["tok"], [(ins, resp) for _, ins, resp in batch], cfg.score.max_length)
    return [_row(i, resp, enc, cfg) for (i, _, resp), enc in zip(batch, encs)]


SCHEMA_FIELDS = {
    "id": "string", "input_ids": "list<int32>", "response_start": "int32", "response_end": "int32",
    "dropped": "bool", "n_blocks": "int32", "n_error_regions": "int32", "n_deep_blocks": "int32", "block_lang": "list<string>",
    "block_kind": "list<string>",
    "block_char_start": "list<int32>", "block_char_end": "list<int32>", "item_block": "list<int32>",
    "item_kind": "list<string>", "item_char_start": "list<int32>", "item_char_end": "list<int32>",
    "item_tokens": "list<list<int32>>", "item_core": "list<list<int32>>", "item_lines": "list<list<int32>>", "item_reach": "list<float32>",
    "item_bridge": "list<float32>", "prose_tokens": "list<int32>",
    "prose_words": "list<list<int32>>", "prose_word_text": "list<string>", "prose_word_sentence": "list<int64>",
}


def arrow_schema():
    import pyarrow as pa

    prim = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "bool": pa.bool_(), "float32": pa.float32()}

    def parse(t: str):
        if t.startswith("list<"):
            return pa.list_(parse(t[5:-1]))
        return prim[t]

    return pa.schema([(k, parse(v)) for k, v in SCHEMA_FIELDS.items()])


def iter_segments(cfg, rows, workers: int | None = None, chunk: int = 64, progress: bool = True):
    """Segment (id, instruction, response) triples, tokenizing in the workers; yields the results
    batch by batch, in input order (the caller can write them out without holding them all)."""
    from tqdm import tqdm

    workers = cfg.segment.workers if workers is None else workers
    batches = (rows[i:i + chunk] for i in range(0, len(rows), chunk))
    bar = tqdm(total=len(rows), desc="segment", unit="resp", disable=not progress)
    try:
        if workers <= 1:
            _init_worker(cfg)
            for b in batches:
                res = _work(b)
                bar.update(len(res))
                yield res
            return
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
                    bar.update(len(res))
                    yield res
        finally:
            gc.unfreeze()
    finally:
        bar.close()


def segment_rows(cfg, rows, workers: int | None = None, chunk: int = 64, progress: bool = True) -> list[dict]:
    """All of `iter_segments` as one list."""
    return [r for batch in iter_segments(cfg, rows, workers, chunk, progress) for r in batch]


def run_segment(cfg, limit: int = 0) -> dict:
    import pyarrow.parquet as pq

    from codeblock.core.io import ParquetStream, sha256_file
    from codeblock.core.tracking import stage_run

    src = cfg.paths.filtered
    table = pq.read_table(src, columns=["id", "instruction", "response"])
    rows = list(zip(*(table.column(c).to_pylist() for c in ("id", "instruction", "response"))))
    del table
    if limit:
        rows = rows[:limit]
    params = {"segment." + k: v for k, v in cfg.to_dict()["segment"].items()}
    params["dataflow.enabled"] = cfg.dataflow.enabled
    with stage_run(cfg, "segment", params=params) as tr:
        totals = SegmentTotals()
        # streamed: the parent holds one row group of results, not the pool's (14.9 GB at 300K before)
        with ParquetStream(cfg.paths.segments, arrow_schema()) as sink:
            for batch in iter_segments(cfg, rows):
                totals.add(batch)
                sink.write(batch)
            metrics = totals.metrics()
            sink.metadata = {
                "stage": "segment",
                "config_hash": stage_hash(cfg, "segment"),
                "score_max_length": cfg.score.max_length,
                "input": src,
                "input_sha256": sha256_file(src),
                "metrics": metrics,
            }
        tr.log_metrics(metrics)
    return {"outputs": [cfg.paths.segments], "metrics": metrics}


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=0, help="segment only the first N samples (debugging)")


def run(cfg, ctx: StageContext) -> StageResult:
    return StageResult.from_dict("segment", run_segment(cfg, limit=int(ctx.options.get("limit") or 0)))


def summary(res: StageResult) -> str:
    return "\n".join(f"{k:28s} {v}" for k, v in res.metrics.items())
