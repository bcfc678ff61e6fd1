"""Writing GNU gettext .mo catalogs for the tests (the machine's catalogs are GPL/LGPL text: tests
write their own)."""

from __future__ import annotations

import struct
from pathlib import Path

GERMANIC_PLURAL = "nplurals=2; plural=(n != 1);"
ARABIC_LIKE_PLURAL = "nplurals=3; plural=(n==0 ? 0 : n==1 ? 1 : 2);"  # n = 1 is form 1, not 0


def write_mo(path: Path, messages: dict[str, str | list[str]], charset: str = "UTF-8",
             plural_forms: str = GERMANIC_PLURAL) -> Path:
    """Write a GNU .mo catalog. Keys are msgid, "ctxt\\x04msgid" or "msgid\\x00msgid_plural" (whose
    value is the list of plural forms); strings are encoded in `charset`, named in the header."""
    header = f"Content-Type: text/plain; charset={charset}\nPlural-Forms: {plural_forms}\n"
    entries = {b"": header.encode("ascii")}
    for key, value in messages.items():
        forms = value if isinstance(value, list) else [value]
        entries[key.encode(charset)] = b"\0".join(form.encode(charset) for form in forms)
    keys = sorted(entries)
    ids = b"".join(key + b"\0" for key in keys)
    strs = b"".join(entries[key] + b"\0" for key in keys)
    ids_start = 28 + 16 * len(keys)
    strs_start = ids_start + len(ids)
    id_table, str_table, id_offset, str_offset = [], [], 0, 0
    for key in keys:
        id_table += [len(key), ids_start + id_offset]
        str_table += [len(entries[key]), strs_start + str_offset]
        id_offset += len(key) + 1
        str_offset += len(entries[key]) + 1
    head = struct.pack("<7I", 0x950412DE, 0, len(keys), 28, 28 + 8 * len(keys), 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + struct.pack(f"<{4 * len(keys)}I", *id_table, *str_table) + ids + strs)
    return path


def catalog(locale_dir: Path, lang: str, domain: str = "app") -> Path:
    return locale_dir / lang / "LC_MESSAGES" / f"{domain}.mo"
