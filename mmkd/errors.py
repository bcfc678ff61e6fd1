"""Errors the user can fix: the CLI prints them as one line, without a traceback."""


class MMKDError(Exception):
    """Bad input, config or environment; the message names the file, line or key at fault."""
