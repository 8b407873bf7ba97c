"""Decontamination: a word n-gram index of benchmark problems, and its builder from the registry.

Used by the filter stage (codeblock/select/filter.py) to drop training pairs that share an n-gram
with an evaluation problem (rules in `Decontaminator`).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WORD_RE = re.compile(r"\w+")

ProblemTexts = Callable[[Any, list[str]], Iterable[tuple[str, str, str]]]


def words(text: str) -> list[str]:
    return WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


IMPORT_LINE_RE = re.compile(r"^[ \t]*(?:from[ \t]+\S+[ \t]+)?import[ \t].*$", re.M)


class Decontaminator:
    """Word n-gram index of benchmark problems; `hit(text)` names the first matching problem.

    Boilerplate is not problem content and is not indexed: import lines of benchmark texts, and
    every n-gram of which more than half the words lie under a "common" n-gram, one found in
    `common` or more distinct problems of the same benchmark (a prompt template that every
    problem repeats, followed by one problem-specific word, stays boilerplate). `common` = 0
    keeps everything. Call `add` for every problem, then `finalize()`, then `hit`."""

    def __init__(self, n: int, min_words: int, common: int = 0):
        self.n, self.min_words, self.common = n, min_words, common
        self.problems: list[tuple[str, str, list[str]]] = []
        self.grams: dict[tuple[str, ...], tuple[str, str]] = {}
        self.short: dict[int, dict[tuple[str, ...], tuple[str, str]]] = {}
        self.counts: dict[str, int] = {}
        self.boilerplate = 0  # n-grams left out as boilerplate

    def add(self, benchmark: str, task_id: str, text: str) -> None:
        self.counts[benchmark] = self.counts.get(benchmark, 0) + 1
        self.problems.append((benchmark, task_id, words(IMPORT_LINE_RE.sub(" ", text))))

    def _common_grams(self) -> set[tuple[str, tuple[str, ...]]]:
        df: dict[tuple[str, tuple[str, ...]], int] = {}
        for bench, _, w in self.problems:
            for g in {tuple(w[i:i + self.n]) for i in range(len(w) - self.n + 1)}:
                df[(bench, g)] = df.get((bench, g), 0) + 1
        return {k for k, c in df.items() if c >= self.common} if self.common > 0 else set()

    def finalize(self) -> None:
        common, n = self._common_grams(), self.n
        for bench, task_id, w in self.problems:
            if len(w) < n:
                if len(w) >= self.min_words:
                    self.short.setdefault(len(w), {}).setdefault(tuple(w), (bench, task_id))
                continue
            covered = np.zeros(len(w) + 1, dtype=np.int64)  # difference array of common coverage
            starts = [i for i in range(len(w) - n + 1) if (bench, tuple(w[i:i + n])) in common]
            for i in starts:
                covered[i] += 1
                covered[i + n] -= 1
            boiler = np.cumsum(covered[:-1]) > 0
            in_window = np.concatenate([[0], np.cumsum(boiler)])
            for i in range(len(w) - n + 1):
                if 2 * (in_window[i + n] - in_window[i]) > n:
                    self.boilerplate += 1
                    continue
                self.grams.setdefault(tuple(w[i:i + n]), (bench, task_id))
        self.problems = []

    def hit(self, text: str) -> tuple[str, str, str] | None:
        """(benchmark, task_id, the matching n-gram) of the first match, or None."""
        w = words(text)
        for size, table in [(self.n, self.grams), *sorted(self.short.items())]:
            if not table:
                continue
            for i in range(len(w) - size + 1):
                gram = tuple(w[i:i + size])
                found = table.get(gram)
                if found:
                    return found[0], found[1], " ".join(gram)
        return None


def registry_problem_texts(cfg, names: list[str]) -> Iterator[tuple[str, str, str]]:
    """(benchmark, task_id, text) from the evaluation registry."""
    from codeblock.evaluate.registry import iter_problem_texts

    yield from iter_problem_texts(cfg, names)


def build_decontaminator(cfg, problem_texts: ProblemTexts | None = None) -> tuple[Decontaminator, dict[str, str]]:
    """Index every configured benchmark; returns the index and {unavailable benchmark: why}."""
    fc = cfg.filter
    problem_texts = problem_texts or registry_problem_texts
    dec = Decontaminator(fc.decontam_ngram, fc.decontam_min_words, fc.decontam_common_problems)
    unavailable: dict[str, str] = {}
    for name in fc.decontam_benchmarks:
        try:
            items = list(problem_texts(cfg, [name]))
        except Exception as e:  # a missing file, an unknown name, no registry, no hub access
            log.warning("decontamination: benchmark %r unavailable, skipped: %s", name, e)
            unavailable[name] = f"{type(e).__name__}: {e}"
            continue
        if not items:
            log.warning("decontamination: benchmark %r yielded no problems, skipped", name)
            unavailable[name] = "no problems"
            continue
        for bench, task_id, text in items:
            dec.add(bench, str(task_id), text or "")
    dec.finalize()
    return dec, unavailable
