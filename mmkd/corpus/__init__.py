"""Parallel corpora in one schema: the built-in gettext corpus and user formats (schema.py)."""
