"""Prefect flows: thin orchestration over the codeblock stage functions (see flows/pipeline.py)."""
