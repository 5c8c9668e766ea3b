"""ragrec.generation."""
