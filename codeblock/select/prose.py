"""Prose words eligible for the natural-language share of the budget (docs/method.md section 5).

Prose is chosen by WORD, never by BPE piece: a word's tokens are all supervised or none
(`Outer` -> `Out` + `er` is one unit). A word is a run of letters (with inner digits, hyphens and
apostrophes) in a prose region; these are never words: list numbers and other numbers, markdown
syntax (#, *, >, |, link brackets), inline code spans, URLs and e-mail addresses, HTML tags,
identifiers with an underscore, single letters, English stop-words (also before an apostrophe: don't, it's). A word is eligible only when every one of its pieces survived
truncation.

Each word carries the key of its sentence (a hash of the sentence's lower-cased words, inline
code and identifiers left out, so a template sentence filled with another name is one key), so the
selection can discount boilerplate: a sentence that recurs in many samples ("Here is the code:")
is not informative however surprising its words are to the model (codeblock/select/priority.py).
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right

STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just let me more most my myself
    no nor not now of off on once only or other our ours ourselves out over own same she should so some such
    than that the their theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours yourself
    yourselves s t ll ve re d m also may might must shall us don doesn didn isn aren wasn weren hasn haven
    hadn won wouldn shouldn couldn can""".split()
)
_WORD_RE = re.compile(r"(?<![\w'’-])[^\W\d_](?:[\w'’-]*[^\W_])?(?![\w])")
# spans that hold no prose words: URLs, e-mail addresses, HTML tags, link targets
_NOT_PROSE_RE = re.compile(
    r"(?:https?|ftp)://[^\s<>()\[\]]*|www\.[^\s<>()\[\]]+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+|</?[A-Za-z][^>\n]*>|\]\([^)\n]*\)"
)
_SENTENCE_RE = re.compile(r"[^\n.!?]+[.!?]*")
# inline code (`name`, ``a`b``): code, not prose, and left out of the sentence key, so that
# "The function below, `egg_drop`, does what was asked." recurs across samples as one sentence
_CODE_SPAN_RE = re.compile(r"(`+)[^`\n]+?\1")


def sentence_key(words: list[str]) -> int:
    """A signed 64-bit key of a sentence, from its lower-cased words (markup and spacing ignored)."""
    h = hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little", signed=True)


def prose_words(text: str, start: int, end: int, starts: list[int], ends: list[int]):
    """Eligible words of the prose region text[start:end]: a list of (token indices, lower-cased
    word, sentence key). `starts`/`ends` are the sorted, whitespace-trimmed char spans of the
    response tokens (codeblock/select/items.TokenSpans); a word's tokens are those that overlap it,
    and it is kept only if they cover it wholly and stay inside the region."""
    blank = lambda m: " " * len(m.group(0))  # noqa: E731 - same length keeps offsets
    region = _NOT_PROSE_RE.sub(blank, _CODE_SPAN_RE.sub(blank, text[start:end]))
    n = len(starts)
    out = []
    for sm in _SENTENCE_RE.finditer(region):
        found = [(m.start(), m.end(), m.group(0).lower()) for m in _WORD_RE.finditer(sm.group(0))]
        if not found:
            continue
        key = sentence_key([w for _, _, w in found if "_" not in w])  # identifiers vary, the template does not
        base = start + sm.start()
        for a, b, word in found:
            if len(word) < 2 or word in STOP_WORDS or "_" in word or re.split("['’]", word)[0] in STOP_WORDS:
                continue
            ws, we = base + a, base + b
            lo = bisect_right(ends, ws)  # first token ending after the word starts
            hi = bisect_left(starts, we, lo)  # first token starting at or after its end
            if hi <= lo or hi > n or starts[lo] < start or ends[hi - 1] > end:
                continue
            if starts[lo] > ws or ends[hi - 1] < we:
                continue  # a piece is missing (cut by max_length)
            out.append((list(range(lo, hi)), word, key))
    return out
