"""Stage 2: fences, coding items, byte -> char -> token mapping, core tokens, prose tokens, the stage."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codeblock.select.languages import LANGUAGES, get_spec
from codeblock.select.segment import find_regions, segment_response, split_markdown


def char_offsets(text: str):
    """One 'token' per character: item boundaries can be checked without a tokenizer."""
    return [(i, i + 1) for i in range(len(text))]


def code_regions(text, default="python"):
    return [(text[r.start:r.end], r.lang) for r in find_regions(text, default) if r.kind == "code"]


def item_texts(text, seg):
    return [text[x.char_start:x.char_end] for x in seg.items]


# ---------------------------------------------------------------------------------------------
# fences


def test_fences_split_prose_and_code():
    text = "Intro text.\n```python\nx = 1\n```\nMiddle.\n~~~\ny = 2\n~~~\nEnd."
    regions = split_markdown(text)
    kinds = [(r.kind, text[r.start:r.end], r.lang) for r in regions]
    assert kinds == [
        ("prose", "Intro text.\n", ""),
        ("code", "x = 1\n", "python"),
        ("prose", "Middle.\n", ""),
        ("code", "y = 2\n", ""),
        ("prose", "End.", ""),
    ]


def test_unterminated_fence_runs_to_end():
    text = "Try this:\n```py\ndef f():\n    return 1\n"
    assert code_regions(text) == [("def f():\n    return 1\n", "py")]


def test_nested_fences_inside_longer_fence_and_markdown_block():
    # a 4-backtick fence is not closed by the inner 3-backtick lines
    text = "````text\n```python\nx = 1\n```\n````\nafter"
    assert code_regions(text) == [("```python\nx = 1\n```\n", "text")]
    # a markdown-tagged block is split again: the python fence nested in it is found
    md = "````markdown\nSome doc.\n```python\ny = 2\n```\n````\n"
    assert code_regions(md) == [("y = 2\n", "python")]
    prose = [md[r.start:r.end] for r in find_regions(md, "python") if r.kind == "prose"]
    assert prose == ["Some doc.\n"]


def test_crlf_and_indented_fences():
    text = "Code:\r\n  ```python\r\nx = 1\r\ny = x\r\n  ```\r\nDone."
    assert code_regions(text) == [("x = 1\r\ny = x\r\n", "python")]
    seg = segment_response(text, char_offsets(text), max_item_tokens=64)
    assert item_texts(text, seg) == ["x = 1", "y = x"]


def test_backtick_info_string_is_not_a_fence_and_closer_must_be_bare():
    text = "```not`a fence\nx\n"
    assert code_regions(text) == [] or code_regions(text)[0][1] == "python"  # may still parse as code
    text2 = "```python\nx = 1\n```python\ny = 2\n```\n"
    # "```python" cannot close a fence (a closing fence has no info string)
    assert code_regions(text2) == [("x = 1\n```python\ny = 2\n", "python")]


def test_empty_response_and_prose_only():
    for text in ("", "   \n", "Sorting is easy: call sorted on the list.", "Yes"):
        seg = segment_response(text, char_offsets(text))
        assert seg.items == [] and seg.blocks == []
    text = "Sorting is easy: call sorted on the list."
    seg = segment_response(text, char_offsets(text))
    assert seg.prose_tokens  # prose only: tokens still eligible for the NL share


def test_unfenced_code_is_one_block():
    text = "import os\n\ndef f(x):\n    return os.path.join(x, 'a')\n"
    regions = find_regions(text, "python")
    assert [(r.kind, r.start, r.end) for r in regions] == [("code", 0, len(text))]
    seg = segment_response(text, char_offsets(text))
    assert item_texts(text, seg) == ["import os", "def f(x):\n    return os.path.join(x, 'a')"]


def test_unknown_language_is_not_itemised_and_registry_resolves_aliases():
    assert get_spec("py").name == "python" and get_spec("Python3 title=x").name == "python"
    assert get_spec("", "python").name == "python" and get_spec("bash") is None
    assert "python" in LANGUAGES
    text = "```bash\nls -la\n```\n"
    seg = segment_response(text, char_offsets(text))
    assert seg.block_lang == [""] and seg.items == []


# ---------------------------------------------------------------------------------------------
# items


def test_statements_compounds_decorators_comments():
    code = (
        "import math  # needed\n"
        "\n"
        "# a comment line\n"
        "@functools.cache\n"
        "def area(r):\n"
        "    # inside\n"
        "    return math.pi * r ** 2\n"
        "\n"
        "x = area(2)\n"
    )
    text = f"```python\n{code}```"
    seg = segment_response(text, char_offsets(text), max_item_tokens=10_000)
    assert item_texts(text, seg) == [
        "import math",
        "@functools.cache\ndef area(r):\n    # inside\n    return math.pi * r ** 2",
        "x = area(2)",
    ]
    # comment characters belong to no item, even inside the definition's span
    comment_chars = {text.index("# inside") + k for k in range(len("# inside"))}
    for it in seg.items:
        assert not comment_chars & set(it.tokens)
    assert [x.kind for x in seg.items] == ["import_statement", "decorated_definition", "expression_statement"]


def test_long_compound_splits_into_header_and_recursed_body():
    code = (
        "@dec\n"
        "def f(a, b):\n"
        "    if a > b:\n"
        "        c = a - b\n"
        "        d = c * 2\n"
        "    else:\n"
        "        d = 0\n"
        "    return d\n"
    )
    text = f"```python\n{code}```"
    # char-level tokens: every compound here is longer than 30 "tokens" except the else clause
    seg = segment_response(text, char_offsets(text), max_item_tokens=30)
    assert item_texts(text, seg) == [
        "@dec\ndef f(a, b):",  # decorator stays with the header
        "if a > b:",
        "c = a - b",
        "d = c * 2",
        "else:\n        d = 0",  # a short clause is one item
        "return d",
    ]
    assert seg.items[0].kind == "function_definition:header" and seg.items[1].kind == "if_statement:header"
    # items are disjoint and in order
    spans = [(x.char_start, x.char_end) for x in seg.items]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_max_item_tokens_counts_model_tokens(tokenizer):
    code = "def f(values):\n    total = 0\n    for v in values:\n        total += v\n    return total\n"
    enc = tokenizer(code, add_special_tokens=False, return_offsets_mapping=True)
    n_tokens = len(enc["input_ids"])
    whole = segment_response(code, enc["offset_mapping"], max_item_tokens=n_tokens)
    assert len(whole.items) == 1
    split = segment_response(code, enc["offset_mapping"], max_item_tokens=n_tokens // 2)
    assert item_texts(code, split)[0] == "def f(values):" and len(split.items) == 4


def test_syntax_error_regions_skip_or_drop(cfg):
    code = "x = 1\ny = = 2\nfor i in range(3):\n    print(i)\n    z = (\nw = 3\n"
    text = f"```python\n{code}```"
    seg = segment_response(text, char_offsets(text), max_item_tokens=10)
    texts = item_texts(text, seg)
    assert "x = 1" in texts and "print(i)" in texts
    assert not any("y = = 2" in t for t in texts)
    assert seg.n_error_regions > 0
    from codeblock.select.segment import _row

    class Enc:  # the tokenization shape _row consumes
        input_ids = list(range(len(text)))
        response_start, response_end = 0, len(text)
        offsets = char_offsets(text)

    cfg.segment.on_error = "drop_sample"
    row = _row("s", text, Enc(), cfg)
    assert row["dropped"] and row["item_tokens"] == []
    cfg.segment.on_error = "skip_region"
    assert not _row("s", text, Enc(), cfg)["dropped"]


def test_tabs_and_crlf_code():
    code = "def f(x):\r\n\tif x:\r\n\t\treturn 1\r\n\treturn 2\r\n"
    text = f"```python\r\n{code}```\r\n"
    seg = segment_response(text, char_offsets(text), max_item_tokens=20)
    assert item_texts(text, seg) == ["def f(x):", "if x:\r\n\t\treturn 1", "return 2"]


# ---------------------------------------------------------------------------------------------
# mapping, core tokens, prose tokens (real tokenizer)


def tok_texts(text, offsets, idx):
    return [text[offsets[k][0]:offsets[k][1]] for k in idx]


def test_non_ascii_maps_exactly(tokenizer):
    text = (
        "Voilà — a function naïve about ünïcode 🐍:\n"
        "```python\n"
        "def grüße(名前):  # コメント ✓\n"
        "    return f\"Hallo {名前} 😀\"\n"
        "π = 3.14159\n"
        "s = grüße('Zoë')\n"
        "```\n"
    )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    off = enc["offset_mapping"]
    seg = segment_response(text, off, max_item_tokens=64)
    assert item_texts(text, seg) == [
        "def grüße(名前):  # コメント ✓\n    return f\"Hallo {名前} 😀\"",
        "π = 3.14159",
        "s = grüße('Zoë')",
    ]
    for it in seg.items:
        for k in it.tokens:  # wholly inside the item (up to the token's own leading space)
            a, b = off[k]
            piece = text[a:b]
            assert it.char_start <= a + (len(piece) - len(piece.lstrip())) and b <= it.char_end
        # the tokens cover exactly the item's non-blank characters, minus its comment
        covered = {c for k in it.tokens for c in range(*off[k]) if not text[c].isspace()}
        expect = {c for c in range(it.char_start, it.char_end) if not text[c].isspace()}
        if it is seg.items[0]:
            at = text.index("# コメント ✓")
            expect -= set(range(at, at + len("# コメント ✓")))
        assert covered == expect
    # the comment's tokens are in no item; the identifiers are core
    comment = tok_texts(text, off, [k for it in seg.items for k in it.tokens])
    assert not any("コメ" in t for t in comment)
    core0 = "".join(tok_texts(text, off, seg.items[0].core))
    assert "名前" in core0 and "grüße" in core0.replace(" ", "")


def test_core_tokens_exclude_punctuation_comments_docstrings(tokenizer):
    text = "```python\ndef f(a, b):\n    \"\"\"Add them.\"\"\"\n    return foo(a, b)[0]  # note\n```"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    off = enc["offset_mapping"]
    seg = segment_response(text, off, max_item_tokens=8)
    by_text = {text[x.char_start:x.char_end]: x for x in seg.items}
    doc = by_text['"""Add them."""']
    assert doc.tokens and doc.core == []
    ret = by_text["return foo(a, b)[0]"]
    core = [t.strip() for t in tok_texts(text, off, ret.core)]
    assert {"return", "foo", "a", "b", "0"} <= set(core)
    assert not {"(", ")", ",", "[", "]", ")[", "#"} & set(core)
    assert set(ret.core) <= set(ret.tokens)


def test_prose_tokens_skip_markdown_punctuation_stopwords(tokenizer):
    text = "## Approach\n\nWe **iterate** over the list, then `sorted` returns it.\n\n```python\nx = 1\n```\n"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    seg = segment_response(text, enc["offset_mapping"])
    words = [t.strip() for t in tok_texts(text, enc["offset_mapping"], seg.prose_tokens)]
    assert "Approach" in words and "iterate" in words and "list" in words and "returns" in words
    # inline code (`sorted`) is code, not prose
    assert not {"##", "**", "the", "over", "then", "it", ".", ",", "`", "We", "sorted"} & set(words)


def test_truncated_items_are_dropped(tokenizer):
    text = "```python\na = 1\nb = 2\nc = 3\n```"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    off = enc["offset_mapping"]
    cut = next(k for k, (a, b) in enumerate(off) if text[a:b].strip() == "2") + 1  # keep up to "b = 2"
    seg = segment_response(text, off[:cut])
    assert item_texts(text, seg) == ["a = 1", "b = 2"]
    seg2 = segment_response(text, off[:cut - 1])
    assert item_texts(text, seg2) == ["a = 1"]


def test_truncation_keeps_the_complete_parts_of_a_cut_compound():
    # small enough to be one item if it were whole (one token per char here); the cut falls inside the
    # third statement of the loop body: header and the two finished statements stay items
    text = ("```python\nimport os\nfor name in os.listdir('.'):\n    size = os.path.getsize(name)\n"
            "    total = size * 2\n    print(name, total)\nprint('done')\n```")
    off = char_offsets(text)
    cut = text.index("print(name") + len("print(na")
    seg = segment_response(text, off[:cut], max_item_tokens=500)
    assert item_texts(text, seg) == ["import os", "for name in os.listdir('.'):", "size = os.path.getsize(name)",
                                     "total = size * 2"]
    assert [x.kind for x in seg.items][1] == "for_statement:header"
    # a cut inside the header: the whole compound is gone, the earlier statement stays
    seg = segment_response(text, off[:text.index("listdir")], max_item_tokens=500)
    assert item_texts(text, seg) == ["import os"]
    # no cut: the loop is one item
    whole = segment_response(text, off, max_item_tokens=500)
    assert "for name in os.listdir('.'):" not in item_texts(text, whole) and len(whole.items) == 3


# ---------------------------------------------------------------------------------------------
# the stage


def _write_pool(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_run_segment_writes_schema_and_workers_agree(cfg, tmp_path, default_model_dir):
    from codeblock.core.tokenize import encode_pair
    from codeblock.select.segment import arrow_schema, run_segment

    rows = [
        {"id": f"s{i}", "instruction": f"Write function number {i}.",
         "response": f"Here you go:\n```python\ndef f{i}(x):\n    y = x + {i}\n    return y * 2\n```\nIt doubles.",
         "source": "t", "judge_score": None, "test_score": None}
        for i in range(12)
    ] + [{"id": "prose", "instruction": "Hi", "response": "Hello there.", "source": "t", "judge_score": None, "test_score": None}]
    from pathlib import Path

    _write_pool(Path(cfg.paths.filtered), rows)
    cfg.model.name_or_path = default_model_dir
    cfg.segment.workers = 2
    cfg.segment.max_item_tokens = 8  # the 3-line functions split into header + 2 body items
    res = run_segment(cfg)
    t = pq.read_table(cfg.paths.segments)
    assert t.schema.remove_metadata().equals(arrow_schema())
    assert res["metrics"]["samples"] == 13 and res["metrics"]["items"] == 12 * 3
    out = t.to_pylist()
    cfg.segment.workers = 1
    run_segment(cfg)
    assert pq.read_table(cfg.paths.segments).to_pylist() == out
    # token indices line up with the shared tokenization used by `score`
    from codeblock.core.models import load_tokenizer

    tok = load_tokenizer(cfg.model)
    enc = encode_pair(tok, rows[3]["instruction"], rows[3]["response"], cfg.score.max_length)
    r = out[3]
    assert r["input_ids"] == enc.input_ids and r["response_start"] == enc.response_start
    header = r["item_tokens"][0]
    ids = [enc.input_ids[enc.response_start + k] for k in header]
    assert tok.decode(ids).strip() == "def f3(x):"
    assert out[-1]["n_blocks"] == 0 and out[-1]["item_tokens"] == [] and out[-1]["prose_tokens"]


@pytest.mark.parametrize("max_item_tokens", [4, 16, 64])
def test_items_never_overlap_and_stay_inside_blocks(tokenizer, max_item_tokens):
    import inspect
    import textwrap

    src = inspect.getsource(textwrap)
    text = f"The module:\n```python\n{src}```\nDone."
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    seg = segment_response(text, enc["offset_mapping"], max_item_tokens=max_item_tokens)
    assert len(seg.items) > 20 and seg.n_error_regions == 0
    block = seg.blocks[0]
    seen: set[int] = set()
    for it in seg.items:
        assert block.start <= it.char_start < it.char_end <= block.end
        assert not seen & set(it.tokens)
        seen.update(it.tokens)
        if not it.kind.endswith(":header") and "definition" not in it.kind and "statement" in it.kind:
            pass
    assert len(seg.reach) == len(seg.items) == len(seg.bridge)
    assert all(0.0 <= v <= 1.0 for v in seg.reach + seg.bridge)


def test_fence_indented_in_a_list_item_is_dedented_for_parsing():
    text = (
        "Steps:\n\n1. Define it:\n\n"
        "    ```python\n"
        "    def f(x):\n"
        "        return x + 1  # é\n"
        "\n"
        "    y = f(2)\n"
        "    ```\n\n"
        "2. Done."
    )
    seg = segment_response(text, char_offsets(text), max_item_tokens=8)
    assert item_texts(text, seg) == ["def f(x):", "return x + 1", "y = f(2)"]
    assert seg.n_error_regions == 0 and seg.reach == [1.0, 0.0, 0.0]
    prose = "".join(text[r.start:r.end] for r in seg.regions if r.kind == "prose")
    assert "Steps" in prose and "Done" in prose and "def" not in prose and "```" not in prose


def test_untagged_fences_are_itemised_only_when_they_hold_code():
    text = ("Install it:\n```\npip install numpy\n```\nThen:\n```\nimport numpy as np\nprint(np.ones(2))\n```\n"
            "Output:\n```\n6\n```\nand a trace:\n```\nTraceback (most recent call last):\n  File \"a.py\", line 1\n```\n"
            "```python\n6\n```\n")
    seg = segment_response(text, char_offsets(text))
    assert seg.block_kind == ["shell", "code", "data", "traceback", "tagged"]
    assert seg.block_lang == ["", "python", "", "", "python"]
    # no item from the shell command or the printed output; the tagged block is parsed as tagged
    assert item_texts(text, seg) == ["import numpy as np", "print(np.ones(2))", "6"]
    # skipped blocks are not prose either: no prose token inside them
    for b, kind in zip(seg.blocks, seg.block_kind):
        if kind != "code" and kind != "tagged":
            assert not [k for k in seg.prose_tokens if b.start <= k < b.end]


def test_fence_counts_reports_untagged_code_and_not_code():
    from codeblock.select.segment import fence_counts

    rows = [{"block_kind": ["tagged", "code", "shell"]}, {"block_kind": ["unfenced"]}, {"block_kind": ["data", "code"]}]
    c = fence_counts(rows)
    assert (c["blocks_tagged"], c["blocks_unfenced"], c["untagged_fences"]) == (1, 1, 4)
    assert (c["untagged_code"], c["untagged_not_code"], c["untagged_shell"], c["untagged_data"]) == (2, 2, 1, 1)


def test_prose_words_are_whole_and_never_markup_numbers_urls(tokenizer):
    text = ("1. The Outerlist holds https://example.com/a_b.html entries; see <code>x</code>.\n"
            "2. Use my_var carefully, then 2nd pass.\n\n```python\nx = 1\n```\nDone quickly")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    off = enc["offset_mapping"]
    seg = segment_response(text, off)
    assert seg.prose_word_text == ["outerlist", "holds", "entries", "see", "use", "carefully", "pass", "done", "quickly"]
    for toks, word in zip(seg.prose_words, seg.prose_word_text):
        # all pieces of the word and nothing else: the pieces spell the word
        assert "".join(text[off[k][0]:off[k][1]] for k in toks).strip().lower().rstrip(";.,") == word
    assert len(seg.prose_words[0]) > 1  # Outerlist is several BPE pieces, all taken together
    assert seg.prose_tokens == sorted(k for w in seg.prose_words for k in w)
    # words of one sentence share its key; the two list items are different sentences
    assert seg.prose_word_sentence[0] == seg.prose_word_sentence[2] != seg.prose_word_sentence[4]
    # a word cut by truncation is not eligible at all: cut after Outerlist's first piece
    first = seg.prose_words[0][0]
    assert "outerlist" not in segment_response(text, off[:first + 1]).prose_word_text
    assert "outerlist" in segment_response(text, off[:seg.prose_words[0][-1] + 1]).prose_word_text


def test_template_sentence_with_other_names_is_one_sentence(tokenizer):
    """Inline code is not prose, and it stays out of the sentence key: the same template filled
    with another function name is one recurring sentence (so boilerplate is discounted)."""
    def words(name):
        text = f"The function below, `{name}`, does what was asked. Then `sort` it by hand."
        off = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return segment_response(text, off)

    a, b, c = words("egg_drop"), words("find_difference"), words("schedule")
    assert a.prose_word_text == ["function", "asked", "hand"] == c.prose_word_text  # "below": a stop-word
    assert a.prose_word_sentence == b.prose_word_sentence == c.prose_word_sentence
    plain = "The function below does what was asked."
    off = tokenizer(plain, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert segment_response(plain, off).prose_word_sentence[0] == a.prose_word_sentence[0]
