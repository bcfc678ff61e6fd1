"""Language codes as corpora name them: an ISO 639-1/639-3 code, then optional region or script
subtags and a gettext modifier ("de", "zh_CN", "pt-BR", "zh-Hant", "sr@latin", "fil").

The ISO 639 table is the one `datasets` ships for dataset cards (utils/resources/languages.json).
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources

from mmkd.errors import MMKDError

LANGUAGE_CODE = re.compile(r"(?P<primary>[a-z]{2,3})(?:[_-][A-Za-z0-9]{2,8})*(?:@[A-Za-z]+)?")


@functools.cache
def iso_639_codes() -> frozenset[str]:
    """Every ISO 639-1 (two letters) and ISO 639-3 (three letters) code."""
    text = resources.files("datasets.utils.resources").joinpath("languages.json").read_text(encoding="utf-8")
    return frozenset(code for code in json.loads(text) if LANGUAGE_CODE.fullmatch(code))


@functools.lru_cache(maxsize=4096)  # a corpus repeats a few codes millions of times
def is_language_code(value: str) -> bool:
    """Whether `value` is a language code (module docstring): "de", "zh_CN" -> True; "Bonjour." -> False."""
    match = LANGUAGE_CODE.fullmatch(value)
    return match is not None and match.group("primary") in iso_639_codes()


def parse_language_list(value: str, option: str) -> list[str]:
    """'de,fr' -> ['de', 'fr']; raises MMKDError naming `option` for an empty list, a repeated
    language or a value that is no language code."""
    langs = [lang.strip() for lang in value.split(",") if lang.strip()]
    if not langs:
        raise MMKDError(f"{option} {value!r}: no language codes")
    for lang in langs:
        if not is_language_code(lang):
            raise MMKDError(f"{option}: {lang!r} is not a language code (ISO 639: de, zh_CN, pt-BR, sr@latin)")
    if len(set(langs)) != len(langs):
        raise MMKDError(f"{option} {value!r}: a language is named twice")
    return langs
