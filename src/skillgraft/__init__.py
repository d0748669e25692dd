"""skillgraft: extract, graft and inject skills and knowledge into open LLMs."""

__version__ = "0.1.0"
