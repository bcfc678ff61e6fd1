"""Subcommands of the `mmkd` CLI, one module each (see `mmkd/cli.py`)."""
