"""An out-of-domain evaluation set: translation pairs from another source than the training catalogs.

The built-in corpus comes from the machine's gettext catalogs (`/usr/share/locale`). An evaluation
confined to its held-out split measures the same software's wording. This module reads gettext
catalogs from anywhere else, by default those an installed Python package ships (Django's:
`django/conf/locale` and one `locale` tree per contrib app), cleans them exactly like the corpus
(mmkd.corpus.cleaning) and drops every pair whose English message is in the training corpus, in
any split (compared as the split compares them, mmkd.corpus.splitting.normalise_src). The result is
a corpus whose test split holds the out-of-domain pairs; `mmkd eval retrieval --out-of-domain` scores
it, grouping languages by the training corpus's train pairs.

Projects name some locales differently from glibc: a requested language is looked up under its own
name, then under LOCALE_ALIASES (Django's zh_Hans for zh_CN), and reported under the requested name.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from mmkd.corpus.cleaning import clean_pairs
from mmkd.corpus.gettext_catalogs import extract_pairs
from mmkd.corpus.schema import SPLITS, column, make_corpus
from mmkd.corpus.splitting import normalise_src
from mmkd.errors import MMKDError

LOCALE_ALIASES = {"zh_CN": ("zh_Hans",), "zh_TW": ("zh_Hant",), "zh_HK": ("zh_Hant",), "nb": ("nb_NO",)}
PACKAGE_PREFIX = "package:"  # `package:django` = every locale tree inside the installed package


def package_locale_dirs(package: str) -> list[Path]:
    """Every directory named `locale` inside an installed Python package, sorted.

    Raises MMKDError when the package is not installed or ships no locale directory.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MMKDError(f"out-of-domain source {PACKAGE_PREFIX}{package}: package {package!r} is not installed "
                        f"(pip install {package}), or give a gettext locale directory instead")
    dirs = sorted({path for root in spec.submodule_search_locations for path in Path(root).rglob("locale")
                   if path.is_dir()})
    if not dirs:
        raise MMKDError(f"out-of-domain source {PACKAGE_PREFIX}{package}: no 'locale' directory in {package}")
    return dirs


def source_locale_dirs(source: str) -> list[Path]:
    """The locale directories of a source: `package:NAME` or one directory of `<lang>/LC_MESSAGES/*.mo`."""
    if source.startswith(PACKAGE_PREFIX):
        return package_locale_dirs(source[len(PACKAGE_PREFIX):])
    directory = Path(source)
    if not directory.is_dir():
        raise MMKDError(f"out-of-domain source {source}: no such directory (give a gettext locale directory "
                        f"or {PACKAGE_PREFIX}NAME for an installed Python package)")
    return [directory]


def find_language_catalogs(locale_dirs: Iterable[Path], lang: str) -> list[Path]:
    """The .mo files of `lang` (or its first alias that has any) across `locale_dirs`, sorted."""
    for name in (lang, *LOCALE_ALIASES.get(lang, ())):
        paths = sorted(path for root in locale_dirs for path in (root / name / "LC_MESSAGES").glob("*.mo"))
        if paths:
            return paths
    return []


def build_out_of_domain(source: str, langs: Sequence[str], training: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
    """The out-of-domain pairs of `source` for `langs`, as a corpus with everything in its test split.

    training: the training corpus; a pair whose English message is in any of its splits is dropped.
    Returns (corpus, report); a language without catalogs in the source is reported, not an error,
    unless no language has any (MMKDError).
    """
    locale_dirs = source_locale_dirs(source)
    catalogs = {lang: find_language_catalogs(locale_dirs, lang) for lang in langs}
    missing = [lang for lang, paths in catalogs.items() if not paths]
    if len(missing) == len(catalogs):
        raise MMKDError(f"out-of-domain source {source}: no catalog for any of {', '.join(langs)}")
    extraction = extract_pairs({lang: paths for lang, paths in catalogs.items() if paths})
    kept, cleaning = clean_pairs((lang, src, tgt) for lang, pairs in extraction.pairs.items() for src, tgt in pairs)
    seen = {normalise_src(src) for split in SPLITS for src in column(training[split], "src")}
    rows = [{"src": src, "tgt": tgt, "lang": lang, "alignment": None}
            for lang, src, tgt in sorted(kept) if normalise_src(src) not in seen]
    report = {"source": source, "locale_dirs": [str(path) for path in locale_dirs],
              "languages_without_catalogs": missing,
              "cleaning": cleaning, "in_training_corpus": len(kept) - len(rows),
              "pairs": dict(sorted(Counter(row["lang"] for row in rows).items()))}
    return make_corpus({"train": [], "dev": [], "test": rows}), report
