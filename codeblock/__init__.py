"""CodeBlock: structure-aware sparse supervision for fine-tuning code LLMs."""

__version__ = "0.1.0"
