"""ragrec.feedback."""
