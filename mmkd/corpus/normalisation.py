"""One form for every text that enters the corpus, so that copies a reader cannot tell apart are equal.

`normalise_text` applies, in order (`NORMALISATIONS`):
- nfc: Unicode canonical composition, NFC (UAX #15): "cafe" + U+0301 -> "café";
- invisible: format characters removed (Unicode category Cf: zero-width space/joiners U+200B-U+200D,
  word joiner U+2060, BOM U+FEFF, soft hyphen, bidirectional marks), as BERT's tokenizer drops them;
- control: control characters other than whitespace removed (category Cc: NUL, U+0001-U+0008, DEL,
  C1 controls);
- whitespace: every run of whitespace (tabs, line breaks, no-break and ideographic spaces) becomes
  one space, and the ends are stripped.
A side with no letter or digit left (`has_letter_or_digit`) is empty.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

NORMALISATIONS = ("nfc", "invisible", "control", "whitespace")
LETTER_OR_DIGIT = re.compile(r"[^\W_]")


# category Cc is fixed by Unicode's stability policy (U+0000-U+001F, U+007F-U+009F); these are the
# ones that are not whitespace (str.isspace)
CONTROL_RANGES = "\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f"
CONTROL = re.compile(f"[{CONTROL_RANGES}]")
ASCII_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f]")


@functools.cache
def format_ranges() -> str:
    """The format characters (Cf) of this Python's Unicode database as regex class ranges (a class
    listing each character is ~20x slower to match)."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) == "Cf":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


@functools.cache
def invisible_characters() -> re.Pattern:
    """Format characters (Cf), e.g. U+200B, U+2060, U+FEFF."""
    return re.compile(f"[{format_ranges()}]")


@functools.cache
def invisible_or_control_characters() -> re.Pattern:
    """Format characters and the control characters of `CONTROL`, in one class."""
    return re.compile(f"[{format_ranges()}{CONTROL_RANGES}]")


def normalise_characters(text: str, changed: set[str] | None = None) -> str:
    """The nfc, invisible and control steps (module docstring); adds to `changed` the name of each
    step that altered the text. Whitespace is left as it is."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
        if changed is not None:
            changed.add("nfc")
    # one search decides for both removals; ASCII text can hold only ASCII controls (a cheaper search)
    if (ASCII_CONTROL if text.isascii() else invisible_or_control_characters()).search(text):
        for name, pattern in (("invisible", invisible_characters()), ("control", CONTROL)):
            text, n = pattern.subn("", text)
            if n and changed is not None:
                changed.add(name)
    return text


def normalise_text(text: str, changed: set[str] | None = None) -> str:
    """`text` in the corpus form (every step of the module docstring); adds to `changed` the name of
    each step that altered it."""
    text = normalise_characters(text, changed)
    collapsed = " ".join(text.split())
    if changed is not None and collapsed != text.strip(" "):
        changed.add("whitespace")
    return collapsed


def has_letter_or_digit(text: str) -> bool:
    """At least one letter or digit (any script): a side without one carries no text."""
    return LETTER_OR_DIGIT.search(text) is not None
