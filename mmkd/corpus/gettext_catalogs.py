"""Read (English msgid, translation) pairs from compiled gettext catalogs (.mo files).

Catalogs live in `<locale_dir>/<lang>/LC_MESSAGES/<domain>.mo`; the language is the directory name
(de, zh_CN, pt_BR, sr@latin). Parsing is the standard library's `gettext.GNUTranslations`, which
decodes by the catalog's charset and stores messages in `_catalog`:
- `msgid -> msgstr`, where a message with a context has the key `msgctxt + "\\x04" + msgid`;
- `(msgid, i) -> msgstr[i]` for plural entries (msgid is the singular). We keep the form the
  catalog's own plural function gives for n = 1, paired with the singular msgid;
- `"" -> header`, skipped.
A catalog that fails to parse (bad magic, truncated, unknown charset, a header the standard library
cannot decode, a bad Plural-Forms expression) is skipped and named in the result.
"""

from __future__ import annotations

import gettext
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mmkd.errors import MMKDError

CONTEXT_SEPARATOR = "\x04"
PARSE_ERRORS = (OSError, ValueError, LookupError, IndexError, struct.error)  # ValueError covers decoding


@dataclass
class CatalogExtraction:
    """Pairs read from catalogs: `pairs[lang]` = [(src, tgt), ...] in catalog order; `skipped` =
    [{"path", "error"}] for catalogs that failed to parse; `counts` = messages read, contexts
    stripped, plural entries resolved, plural entries missing the n = 1 form, catalogs read."""

    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def is_english(lang: str) -> bool:
    """True for English locales (en, en_GB, en@quot, ...), whose "translations" are English."""
    return lang.split("@")[0].split("_")[0] == "en"


def available_languages(locale_dir: str | Path) -> list[str]:
    """Non-English languages with at least one catalog under `locale_dir`, sorted."""
    root = Path(locale_dir)
    if not root.is_dir():
        raise MMKDError(f"{locale_dir}: locale directory not found")
    return sorted(
        d.name for d in root.iterdir() if not is_english(d.name) and any((d / "LC_MESSAGES").glob("*.mo"))
    )


def find_catalogs(locale_dir: str | Path, langs: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Catalog paths per language, sorted; `langs=None` = every non-English language.

    Only the named languages' directories are listed. Raises MMKDError for a language that has no
    catalog there or is English.
    """
    root = Path(locale_dir)
    names = available_languages(root) if langs is None else list(langs)
    catalogs = {}
    for lang in names:
        if is_english(lang):
            raise MMKDError(f"language {lang!r}: English variants are the source side, not a target")
        paths = sorted((root / lang / "LC_MESSAGES").glob("*.mo"))
        if not paths:
            raise MMKDError(f"language {lang!r}: no catalogs in {root / lang / 'LC_MESSAGES'}")
        catalogs[lang] = paths
    return catalogs


def read_catalog(path: str | Path, counts: Counter) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of one .mo file, contexts stripped, plurals resolved for n = 1.

    Raises one of PARSE_ERRORS when the file cannot be parsed; adds to `counts`.
    """
    with open(path, "rb") as fp:
        catalog = gettext.GNUTranslations(fp)
    singular_form = catalog.plural(1)
    pairs = []
    plural_ids = set()
    for key, msgstr in catalog._catalog.items():
        if isinstance(key, tuple):
            msgid, form = key
            plural_ids.add(msgid)
            if form != singular_form:
                continue
            counts["plural_resolved"] += 1
        elif key == "":
            continue
        else:
            msgid = key
        if CONTEXT_SEPARATOR in msgid:
            msgid = msgid.split(CONTEXT_SEPARATOR, 1)[1]
            counts["context_stripped"] += 1
        counts["messages"] += 1
        pairs.append((msgid, msgstr))
    counts["plural_missing_form"] += sum((msgid, singular_form) not in catalog._catalog for msgid in plural_ids)
    return pairs


def extract_pairs(catalogs: Mapping[str, Sequence[Path]]) -> CatalogExtraction:
    """Read every catalog (progress bar over files); failed catalogs are skipped and recorded."""
    result = CatalogExtraction()
    jobs = [(lang, path) for lang, paths in catalogs.items() for path in paths]
    for lang, path in tqdm(jobs, desc="reading catalogs", unit="file", disable=None):
        try:
            pairs = read_catalog(path, result.counts)
        except PARSE_ERRORS as err:
            result.skipped.append({"path": str(path), "error": f"{type(err).__name__}: {err}"})
            continue
        result.counts["catalogs_read"] += 1
        result.pairs.setdefault(lang, []).extend(pairs)
    return result
