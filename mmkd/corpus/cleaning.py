"""Cleaning of (English, translation) message pairs into sentence-like training pairs.

Text rules rewrite both sides, in `TEXT_RULES` order: Unicode (NFC, invisible and control
characters removed: normalisation.py), command-line option columns, newlines and whitespace, markup,
accelerators, format specifiers, whitespace again. Pair filters then drop a pair, in `PAIR_FILTERS`
order, and the first filter that drops it is the one counted: empty side,
untranslated, code-like English, English length in words, length ratio in characters; last come
duplicates of (lang, src, tgt). `clean_pairs` returns the kept pairs and the counters
{"changed": {text rule: pairs it changed}, "dropped": {filter: pairs it dropped}}.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from mmkd.corpus.normalisation import normalise_characters
from mmkd.errors import MMKDError


@dataclass(frozen=True)
class CleaningConfig:
    """Bounds of the pair filters: English words (str.split) and len(tgt) / len(src) in characters."""

    min_words: int = 3
    max_words: int = 60
    min_char_ratio: float = 0.1  # Chinese runs 0.1-0.4 characters per English character
    max_char_ratio: float = 4.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_words <= self.max_words:
            raise MMKDError(
                f"word bounds must satisfy 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}"
            )
        if not 0 < self.min_char_ratio < self.max_char_ratio:
            raise MMKDError(
                f"length-ratio bounds must satisfy 0 < min < max, got {self.min_char_ratio}, {self.max_char_ratio}"
            )

    def as_dict(self) -> dict[str, float]:
        """The bounds by name, for the report."""
        return asdict(self)


# --- text rules: str -> str ------------------------------------------------------------------------

ESCAPED_WHITESPACE = re.compile(r"\\[nrt]")


def normalise_whitespace(text: str) -> str:
    """Escaped (\\n \\t \\r as two characters) and real newlines/tabs/runs of spaces -> one space."""
    if "\\" in text:
        text = ESCAPED_WHITESPACE.sub(" ", text)
    return " ".join(text.split())


OPTION_COLUMN = re.compile(r"^[ \t]*-[^\n]*?(?: {2,}|\t|\n\s*)(?=\S)", re.MULTILINE)


def strip_option_column(text: str) -> str:
    """Drop the option column of a one-option --help entry: "  -v, --verbose     explain" ->
    "explain" (a line starting with an option, then two or more spaces, a tab or a line break).
    Blocks listing several options are left whole, for the code-like filter."""
    if "-" not in text:
        return text
    stripped, n = OPTION_COLUMN.subn("", text)
    return stripped if n == 1 else text


TAG = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>")
LINE_BREAK_TAG = re.compile(r"</?(?:br|p|div|li|para)\b[^<>]*>", re.IGNORECASE)
ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z]+);")


def strip_markup(text: str) -> str:
    """Remove tags (<b>, </span>, <br/>, <placeholder-1/>) and decode entities (&amp; &#160;).

    Line-break tags become a space, other tags nothing; only entities ending in ';' are decoded.
    """
    if "<" in text:
        text = TAG.sub("", LINE_BREAK_TAG.sub(" ", text))
    if "&" in text:
        text = ENTITY.sub(lambda m: html.unescape(m.group()), text)
    return text


CJK_ACCELERATOR = re.compile(r"\s*[(（][_&][^\W_][)）]")
UNDERSCORE_MNEMONIC = re.compile(r"(?<!\w)_(?=[^\W_])")
AMPERSAND_MNEMONIC = re.compile(r"&(?=[^\W_])(?!#?\w+;)")


def strip_accelerators(text: str) -> str:
    """Remove keyboard accelerators: "(_O)" / "(&O)" suffixes (CJK), "_File" (GTK: one underscore
    at a word start; foo_bar is an identifier, left alone) and "&File" (Qt/KDE: one '&' before a
    letter, not an entity; "&&" is a literal '&')."""
    if "(" in text or "（" in text:
        text = CJK_ACCELERATOR.sub("", text)
    if text.count("_") == 1:
        text = UNDERSCORE_MNEMONIC.sub("", text)
    if "&" not in text:
        return text
    parts = text.split("&&")
    if sum(len(AMPERSAND_MNEMONIC.findall(part)) for part in parts) == 1:
        parts = [AMPERSAND_MNEMONIC.sub("", part) for part in parts]
    return "&".join(parts)


SPECIFIER = (
    r"%\([^()\s]+\)[-+#0 ]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"  # Python %(name)s
    r"|%p[A-Z]"  # kernel/binutils extensions %pA %pB
    r"|%(?:\d+\$)?[-+#0']*(?:\d+|\*(?:\d+\$)?)?(?:\.(?:\d+|\*(?:\d+\$)?))?"
    r"(?:hh|h|ll|l|L|q|j|z|Z|t|I64|I32|I)?[diouxXeEfFgGaAcCsSpnm]"  # C printf %s %1$s %-10.3f %m
    r"|%L?\d+"  # Qt %1 %L1
    r"|%\{\w+\}"  # Ruby %{name}
    r"|\$\{[^{}]*\}|\$[A-Za-z_]\w*"  # shell ${var} $var
    r"|\{\w*(?:[.\[:!][^{}\s]*)?\}"  # str.format {0} {name} {} {0:>10}
)
# "%%" (a literal '%'), or a run of specifiers joined by at most one of . : / , - ("%s.%s", "%s:%d")
FORMAT_SPECIFIER = re.compile(rf"%%|(?:{SPECIFIER})(?:[.:/,-]?(?:{SPECIFIER}))*")
EMPTY_QUOTES = re.compile(
    r"''|\"\"|`'|``|“”|‘’|„“|‚‘|「」|『』|《》|〈〉|\(\s*\)|（\s*）|\[\s*\]|«\s*»|»\s*«"
)
LEADING_SEPARATORS = re.compile(r"^[\s:;,.-]+")
SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+(?=[,.)])")
CJK = "\u3000-\u30ff\u3400-\u9fff\uac00-\ud7af\uff00-\uffef"
SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{CJK}])\s+(?=[{CJK}])")


def strip_format_specifiers(text: str) -> str:
    """Remove format specifiers (%s %d %1$s %(name)s %-10.3f %1 {0} {name} ${var}; %% -> %), then
    what they leave behind: empty quotes/brackets, leading separators, spaces before , . ) and
    between CJK characters ("“%s”: not found" -> "not found", "写入 %s 失败" -> "写入失败")."""
    if "%" not in text and "{" not in text and "$" not in text:
        return text
    stripped = FORMAT_SPECIFIER.sub(lambda m: "%" if m.group() == "%%" else "", text)
    if stripped == text.replace("%%", "%"):
        return stripped
    stripped = LEADING_SEPARATORS.sub("", EMPTY_QUOTES.sub("", stripped))
    return SPACE_BETWEEN_CJK.sub("", SPACE_BEFORE_PUNCTUATION.sub("", stripped))


TEXT_RULES: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("unicode", normalise_characters),
    ("option_column", strip_option_column),
    ("whitespace", normalise_whitespace),
    ("markup", strip_markup),
    ("accelerators", strip_accelerators),
    ("format_specifiers", strip_format_specifiers),
    ("whitespace_final", normalise_whitespace),
)


# --- pair filters: (src, tgt, config) -> keep? -----------------------------------------------------

LETTER = re.compile(r"[^\W\d_]")


def has_text(src: str, tgt: str, config: CleaningConfig) -> bool:
    """Both sides contain at least one letter (any script)."""
    return bool(LETTER.search(src)) and bool(LETTER.search(tgt))


def is_translated(src: str, tgt: str, config: CleaningConfig) -> bool:
    """The translation differs from the English beyond letter case."""
    return src.casefold() != tgt.casefold()


CODE_TOKEN = re.compile(
    r"\w+://"  # URL
    r"|^[~.]?/|/\S*/|\\"  # path: /usr, ~/x, ./x, a/b/c, C:\x
    r"|^--?[A-Za-z]"  # command-line option
    r"|\w_\w|\w::\w|\w->\w|\w\(\)"  # identifiers: foo_bar, a::b, a->b, f()
    r"|[A-Za-z_]\w*\.[A-Za-z_]\w{2,}"  # dotted names: org.gnome.foo, file.txt, os.path
    r"|[={}<>\[\]|$]|;\S"  # assignments, brackets, pipes, statements
)
MAX_CODE_TOKEN_SHARE = 0.25


def is_prose(src: str, tgt: str, config: CleaningConfig) -> bool:
    """The English side is prose: its first token and more than 3/4 of all its tokens do not look
    like code (paths, URLs, options, identifiers, brackets, assignments)."""
    code = [bool(CODE_TOKEN.search(token)) for token in src.split()]
    return bool(code) and not code[0] and sum(code) <= MAX_CODE_TOKEN_SHARE * len(code)


def has_sentence_length(src: str, tgt: str, config: CleaningConfig) -> bool:
    """English has min_words..max_words whitespace-separated words."""
    return config.min_words <= len(src.split()) <= config.max_words


def has_plausible_ratio(src: str, tgt: str, config: CleaningConfig) -> bool:
    """len(tgt) / len(src) in characters is within [min_char_ratio, max_char_ratio]."""
    return config.min_char_ratio <= len(tgt) / len(src) <= config.max_char_ratio


PAIR_FILTERS: tuple[tuple[str, Callable[[str, str, CleaningConfig], bool]], ...] = (
    ("empty", has_text),
    ("untranslated", is_translated),
    ("code_like", is_prose),
    ("length", has_sentence_length),
    ("length_ratio", has_plausible_ratio),
)
DUPLICATE = "duplicate"


def clean_text(text: str, changed: set[str] | None = None) -> str:
    """Apply TEXT_RULES in order; add to `changed` the name of each rule that altered the text."""
    for name, rule in TEXT_RULES:
        result = rule(text)
        if changed is not None and result != text:
            changed.add(name)
        text = result
    return text


def first_failed_filter(src: str, tgt: str, config: CleaningConfig) -> str | None:
    """Name of the first pair filter that drops (src, tgt), or None to keep it."""
    for name, keep in PAIR_FILTERS:
        if not keep(src, tgt, config):
            return name
    return None


def clean_pairs(
    pairs: Iterable[tuple[str, str, str]], config: CleaningConfig = CleaningConfig()
) -> tuple[list[tuple[str, str, str]], dict[str, dict[str, int]]]:
    """Clean (lang, src, tgt) triples; returns kept triples (input order) and the counters.

    "changed" counts pairs a text rule altered on either side; "dropped" counts pairs per filter.
    """
    changed: Counter = Counter()
    dropped: Counter = Counter()
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for lang, src, tgt in pairs:
        rules_applied: set[str] = set()
        src = clean_text(src, rules_applied)
        tgt = clean_text(tgt, rules_applied)
        for name in rules_applied:
            changed[name] += 1
        failed = first_failed_filter(src, tgt, config)
        if failed is None and (lang, src, tgt) in seen:
            failed = DUPLICATE
        if failed is not None:
            dropped[failed] += 1
            continue
        seen.add((lang, src, tgt))
        kept.append((lang, src, tgt))
    rules = [name for name, _ in TEXT_RULES]
    filters = [name for name, _ in PAIR_FILTERS] + [DUPLICATE]
    return kept, {
        "changed": {name: changed[name] for name in rules},
        "dropped": {name: dropped[name] for name in filters},
    }
