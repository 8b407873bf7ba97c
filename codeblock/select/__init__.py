"""The method (docs/method.md): filter, segment, score, data-flow rerank and budgeted selection,
plus the baseline selectors that share its interface."""
