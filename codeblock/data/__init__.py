"""Training data sources, all normalised to one canonical record schema (see schema.py)."""
