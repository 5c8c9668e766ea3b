"""ragrec.prompting."""
