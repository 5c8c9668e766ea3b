"""ragrec.retrieval."""
