"""What to do with a malformed input line: fail at once, or skip it and count it.

Malformed = a line that cannot be read as a pair (wrong column count, bad JSON, a missing field,
a bad Pharaoh token, bytes that are not UTF-8). Structural faults (line counts of a file pair or
of an alignment file that differ) are not lines: they always raise, because every line after them
is suspect.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mmkd.errors import MMKDError

ON_ERROR = ("fail", "skip")
MAX_EXAMPLES = 20  # skipped lines quoted in the report


class BadInputLog:
    """Applies the on-error policy and keeps the counters of skipped lines (by reason)."""

    def __init__(self, on_error: str = "fail") -> None:
        if on_error not in ON_ERROR:
            raise MMKDError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.by_reason: Counter = Counter()
        self.examples: list[str] = []

    def record(self, where: str, kind: str, message: str) -> None:
        """Fail with MMKDError naming `where` (file:line), or count the line under `kind` (a short
        reason: "columns", "json", "field", "alignment", "encoding", "lang") and skip it."""
        if self.on_error == "fail":
            raise MMKDError(f"{where}: {message} (--on-error skip skips and counts such lines)")
        self.by_reason[kind] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {message}")

    @property
    def skipped(self) -> int:
        return sum(self.by_reason.values())

    def summary(self) -> dict[str, Any]:
        """{"on_error", "skipped", "by_reason", "examples"} for the report."""
        return {
            "on_error": self.on_error,
            "skipped": self.skipped,
            "by_reason": dict(sorted(self.by_reason.items())),
            "examples": list(self.examples),
        }
