"""Sparse-loss fine-tuning: the Trainer subclass, the supervised-positions head, token-budget
collation."""
