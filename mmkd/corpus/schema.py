"""The corpus schema every source loads into (docs/architecture.md, "Corpus schema").

A corpus is a `datasets.DatasetDict` with splits train/dev/test and the features in `FEATURES`,
saved with `save_to_disk` beside `counts.tsv` (lang, train, dev, test, total) and `report.json`
(parameters, cleaning and bad-input counters, fingerprint). A `src` string is in exactly one split.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, List, Value
from datasets.fingerprint import generate_random_fingerprint
from datasets.table import InMemoryTable

from mmkd.errors import MMKDError

SPLITS = ("train", "dev", "test")
FEATURES = Features(
    {
        "src": Value("string"),
        "tgt": Value("string"),
        "lang": Value("string"),
        "alignment": List(List(Value("int32"), length=2)),
    }
)
COUNTS_FILE = "counts.tsv"
REPORT_FILE = "report.json"

Row = dict[str, Any]  # one pair: {"src", "tgt", "lang", "alignment"}


def make_corpus(rows_by_split: Mapping[str, Sequence[Row]]) -> DatasetDict:
    """Build the corpus DatasetDict from rows per split (a missing split is empty)."""
    return DatasetDict(
        {
            split: Dataset.from_dict(
                {name: [row[name] for row in rows_by_split.get(split, ())] for name in FEATURES},
                features=FEATURES,
            )
            for split in SPLITS
        }
    )


def corpus_from_table(table: pa.Table, indices_by_split: Mapping[str, Sequence[int]]) -> DatasetDict:
    """The corpus whose split `s` holds the rows `indices_by_split[s]` of `table` (schema
    FEATURES.arrow_schema), in that order; a missing split is empty. One take copies the rows of all
    splits, each split a slice of it. Each split gets a random `datasets` fingerprint (the default
    hashes the whole table: ~0.3 GB of Python memory per million pairs)."""
    order = [np.asarray(indices_by_split.get(split, ()), dtype=np.int64) for split in SPLITS]
    rows = table.take(pa.array(np.concatenate(order)))
    starts = np.cumsum([0, *map(len, order)])
    return DatasetDict(
        {split: Dataset(InMemoryTable(rows.slice(starts[i], len(order[i]))), fingerprint=generate_random_fingerprint())
         for i, split in enumerate(SPLITS)}
    )


def column(dataset: Dataset, name: str) -> list:
    """All values of one column as a Python list (one Arrow read, not row by row)."""
    return dataset.with_format("arrow")[name].to_pylist()


def value_counts(dataset: Dataset, name: str) -> Counter:
    """Occurrences of each value of one column (counted by Arrow)."""
    counts = pc.value_counts(dataset.with_format("arrow")[name])
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def language_counts(dsd: DatasetDict) -> dict[str, dict[str, int]]:
    """Pairs per language and split: {lang: {"train": n, "dev": n, "test": n, "total": n}}, sorted."""
    per_split = {split: value_counts(dsd[split], "lang") for split in SPLITS}
    langs = sorted(set().union(*per_split.values()))
    counts = {}
    for lang in langs:
        row = {split: per_split[split][lang] for split in SPLITS}
        row["total"] = sum(row.values())
        counts[lang] = row
    return counts


def format_count_table(counts: Mapping[str, Mapping[str, int]]) -> str:
    """The per-language count table as aligned text, with a total line."""
    columns = (*SPLITS, "total")
    totals = {column: sum(row[column] for row in counts.values()) for column in columns}
    lines = [("lang", *columns)]
    lines += [(lang, *(str(row[c]) for c in columns)) for lang, row in counts.items()]
    lines.append(("all", *(str(totals[c]) for c in columns)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in lines
    )


def corpus_fingerprint(dsd: DatasetDict) -> str:
    """sha256 (hex) of every row of every split, in order: equal corpora have equal fingerprints.
    The hashed text is one JSON line [split, src, tgt, lang, alignment] per row (one encoder, one
    update per batch)."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    digest = hashlib.sha256()
    for split in SPLITS:
        for batch in dsd[split].iter(batch_size=10_000):
            records = zip(batch["src"], batch["tgt"], batch["lang"], batch["alignment"])
            digest.update("".join(encode([split, *record]) + "\n" for record in records).encode("utf-8"))
    return digest.hexdigest()


def save_corpus(dsd: DatasetDict, report: Mapping[str, Any], out_dir: str | Path) -> None:
    """Write the corpus (`save_to_disk`), `counts.tsv` and `report.json` into `out_dir`."""
    check_corpus(dsd, str(out_dir))
    out = Path(out_dir)
    # an empty split must still get one (empty) shard: with none, load_from_disk fails (datasets 5.2)
    dsd.save_to_disk(str(out), num_shards={split: 1 for split in SPLITS if len(dsd[split]) == 0})
    counts = language_counts(dsd)
    lines = ["\t".join(("lang", *SPLITS, "total"))]
    lines += ["\t".join((lang, *(str(row[c]) for c in (*SPLITS, "total")))) for lang, row in counts.items()]
    (out / COUNTS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def is_corpus_directory(path: str | Path) -> bool:
    """Whether `path` holds a saved DatasetDict with exactly the corpus splits (it is loaded and
    checked when used)."""
    dict_file = Path(path) / "dataset_dict.json"
    try:
        return sorted(json.loads(dict_file.read_text(encoding="utf-8"))["splits"]) == sorted(SPLITS)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_saved_dataset(path: str | Path) -> Dataset | DatasetDict:
    """`datasets.load_from_disk(path)`; a truncated or corrupt Arrow file raises MMKDError naming it."""
    try:
        return datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as err:
        bad = [arrow for arrow in sorted(Path(path).rglob("*.arrow")) if not readable_arrow_file(arrow)]
        where = bad[0] if bad else path
        raise MMKDError(f"{where}: truncated or corrupt Arrow file ({err}); save or copy the dataset again "
                        f"(a corpus: rebuild it with mmkd corpus build or import)") from err


def readable_arrow_file(path: Path) -> bool:
    """Whether `path` reads whole as an Arrow stream (the format save_to_disk writes)."""
    try:
        with pa.memory_map(str(path)) as source:
            pa.ipc.open_stream(source).read_all()
    except (OSError, pa.ArrowException):
        return False
    return True


def load_corpus(path: str | Path) -> DatasetDict:
    """Load a corpus directory and check its splits, features and split disjointness (MMKDError)."""
    path = str(path)
    try:
        dsd = load_saved_dataset(path)
    except FileNotFoundError as err:
        raise MMKDError(f"{path}: not a corpus directory (no saved dataset found: {err})") from err
    if not isinstance(dsd, DatasetDict):
        raise MMKDError(f"{path}: holds a single Dataset; a corpus is a DatasetDict with splits {SPLITS}")
    check_corpus(dsd, path)
    return dsd


def check_corpus(dsd: DatasetDict, where: str) -> None:
    """Raise MMKDError naming `where` unless `dsd` has exactly the splits, features and disjoint src
    (compared as Arrow arrays: no Python string per row)."""
    if sorted(dsd) != sorted(SPLITS):
        raise MMKDError(f"{where}: corpus splits are {sorted(dsd)}, expected {list(SPLITS)}")
    for split in SPLITS:
        features = dsd[split].features
        if features != FEATURES:
            raise MMKDError(
                f"{where}: split {split!r} has features {dict(features)}, expected {dict(FEATURES)}"
            )
    distinct = {split: pc.unique(dsd[split].with_format("arrow")["src"]) for split in SPLITS}
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1:]:
            shared = distinct[first].filter(pc.is_in(distinct[first], value_set=distinct[second]))
            if len(shared):
                raise MMKDError(f"{where}: src {shared[0].as_py()!r} is in splits {first!r} and {second!r}")
