"""The built-in corpus: the machine's gettext catalogs, cleaned and split by English message.

Extraction (gettext_catalogs) -> cleaning (cleaning) -> language selection -> split (splitting)
-> a DatasetDict in the corpus schema, and a report of every count on the way. Catalogs are
licensed GPL/LGPL: the corpus is built at run time, never shipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from datasets import DatasetDict

from mmkd.corpus.cleaning import CleaningConfig, clean_pairs
from mmkd.corpus.gettext_catalogs import extract_pairs, find_catalogs
from mmkd.corpus.schema import corpus_fingerprint, language_counts, make_corpus
from mmkd.corpus.splitting import check_fractions, split_rows
from mmkd.errors import MMKDError

DEFAULT_LANGS = ("de", "fr", "zh_CN", "ar", "eu", "xh")
DEFAULT_LOCALE_DIR = "/usr/share/locale"


def build_builtin_corpus(
    langs: Sequence[str] | None = DEFAULT_LANGS,
    min_pairs: int | None = None,
    locale_dir: str = DEFAULT_LOCALE_DIR,
    seed: int = 0,
    dev_fraction: float = 0.05,
    test_fraction: float = 0.10,
    cleaning: CleaningConfig = CleaningConfig(),
) -> tuple[DatasetDict, dict[str, Any]]:
    """Build the corpus from `<locale_dir>/<lang>/LC_MESSAGES/*.mo`.

    langs: target languages by directory name; None = every non-English language found.
    min_pairs: keep only languages with at least this many pairs after cleaning.
    Returns (corpus, report); rows in each split are sorted by (lang, src, tgt), alignment None.
    """
    check_fractions(dev_fraction, test_fraction)
    if min_pairs is not None and min_pairs < 1:
        raise MMKDError(f"min_pairs must be >= 1, got {min_pairs}")
    if langs is not None and not langs:
        raise MMKDError("no languages given")
    extraction = extract_pairs(find_catalogs(locale_dir, langs))
    triples = ((lang, src, tgt) for lang, pairs in extraction.pairs.items() for src, tgt in pairs)
    kept, cleaning_counts = clean_pairs(triples, cleaning)

    per_lang = Counter(lang for lang, _, _ in kept)
    requested = sorted(extraction.pairs) if langs is None else list(langs)
    below = {lang: per_lang[lang] for lang in requested if min_pairs is not None and per_lang[lang] < min_pairs}
    selected = [lang for lang in requested if lang not in below and per_lang[lang] > 0]
    if not selected:
        raise MMKDError(
            f"no language in {locale_dir} has pairs left (min_pairs={min_pairs}): {below or requested}"
        )
    chosen = set(selected)
    rows = [
        {"src": src, "tgt": tgt, "lang": lang, "alignment": None}
        for lang, src, tgt in sorted(kept)
        if lang in chosen
    ]
    dsd = make_corpus(split_rows(rows, seed, dev_fraction, test_fraction))

    report = {
        "source": "gettext",
        "parameters": {
            "langs": None if langs is None else list(langs),
            "min_pairs": min_pairs,
            "locale_dir": str(locale_dir),
            "seed": seed,
            "dev_fraction": dev_fraction,
            "test_fraction": test_fraction,
            "cleaning": cleaning.as_dict(),
        },
        "languages": selected,
        "languages_below_min_pairs": below,
        "languages_without_pairs": [lang for lang in requested if per_lang[lang] == 0 and lang not in below],
        "extraction": dict(sorted(extraction.counts.items())),
        "skipped_catalogs": extraction.skipped,
        "cleaning": cleaning_counts,
        "counts": language_counts(dsd),
        "fingerprint": corpus_fingerprint(dsd),
    }
    return dsd, report
