"""Plumbing shared by every stage: configuration, atomic I/O, MLflow tracking, model loading,
chat-template tokenization."""
