"""Readers of user corpora: TSV, JSONL, Moses file pairs, `datasets` (hub name or save_to_disk dir).

Each input becomes one or more `Stream`s: a named sequence of items, one per input line or row
(a TSV header excepted), each a `Record` (a pair as read, not yet checked) or a `BadLine` (where,
kind, message). A parallel alignment file (one Pharaoh line per item) is zipped to a stream by
`with_parallel_alignments`. A stream names a split when its file's name starts with train, dev,
valid, validation or test (train.tsv, dev.de.jsonl, test.en) or its `datasets` split is so named.

Layouts (a file may be gzip-compressed: pairs.tsv.gz):
- TSV: `src<TAB>tgt[<TAB>lang[<TAB>alignment]]`, no quoting, the lang column a language code
  (language_codes.py); or a first line naming those columns (e.g. `src<TAB>tgt<TAB>alignment`),
  which then fixes the column order.
- parallel sentences (sentence-transformers' format), read as TSV when the languages are given:
  `en<TAB>tr_1<TAB>...<TAB>tr_k`, English then one translation per language, in the given order;
  one item per translation.
- JSONL: one object per line with the fields of `Columns` ({"src", "tgt", "lang", "alignment"}),
  or {"translation": {"en": ..., "xx": ...}} with one target language.
- Moses: PREFIX.en with one or more PREFIX.xx; the language is the file suffix.
- datasets: rows as in JSONL; `Translation` features give the "translation" layout.
Alignments are Pharaoh strings ("0-0 1-2") or lists of [i, j]; an empty string means no links,
a missing field or null means unknown.
"""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import datasets

from mmkd.corpus.alignment import AlignmentFormatError, parse_pharaoh
from mmkd.corpus.language_codes import is_language_code
from mmkd.corpus.schema import load_saved_dataset
from mmkd.errors import MMKDError

FORMATS = ("auto", "tsv", "jsonl", "moses", "datasets")
SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "test": "test"}
TSV_COLUMNS = ("src", "tgt", "lang", "alignment")
NOT_UTF8 = "not valid UTF-8"
SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes at the top


@dataclass(frozen=True)
class Columns:
    """Field names of a JSONL record or `datasets` row; `translation` holds {lang: text} layouts."""

    src: str = "src"
    tgt: str = "tgt"
    lang: str = "lang"
    alignment: str = "alignment"
    translation: str = "translation"


@dataclass(frozen=True)
class Record:
    """One pair as read: lang None = not given; alignment as given (None, Pharaoh str or links)."""

    where: str
    src: str
    tgt: str
    lang: str | None
    alignment: object = None


@dataclass(frozen=True)
class BadLine:
    """A line or row that is not a pair: `kind` is a short reason (columns, json, field,
    alignment, encoding), `message` the full one."""

    where: str
    kind: str
    message: str


Item = Record | BadLine


@dataclass(frozen=True)
class Stream:
    """A named sequence of items (one per line or row) and the split its name gives, if any."""

    name: str
    split: str | None
    items: Iterable[Item]


def split_from_name(name: str) -> str | None:
    """'train' / 'dev' / 'test' from the first dot-separated part of a file or split name."""
    return SPLIT_NAMES.get(Path(name).name.split(".")[0].lower())


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, text without its line break) per line; None where not UTF-8."""
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as fp:
        for number, raw in enumerate(fp, 1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                yield number, raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError:
                yield number, None


def is_tsv_header(fields: Sequence[str]) -> bool:
    """A first line naming distinct schema columns, src and tgt among them."""
    return set(fields) <= set(TSV_COLUMNS) and {"src", "tgt"} <= set(fields) and len(set(fields)) == len(fields)


def tab_separated_lines(path: str | Path) -> Iterator[tuple[str, int, list[str]] | BadLine]:
    """(where, line number, fields) per line, or a BadLine where the line is not UTF-8."""
    for number, line in numbered_lines(path):
        where = f"{path}:{number}"
        yield BadLine(where, "encoding", NOT_UTF8) if line is None else (where, number, line.split("\t"))


def read_tsv(path: str | Path, langs: Sequence[str] | None = None) -> Iterator[Item]:
    """Items of a TSV file (see the module docstring for the layout); `langs` given: the parallel
    sentences layout, column i + 1 a translation into langs[i]."""
    if langs:
        yield from read_parallel_sentences(path, langs)
        return
    header: list[str] | None = None
    for line in tab_separated_lines(path):
        if isinstance(line, BadLine):
            yield line
            continue
        where, number, fields = line
        if number == 1 and is_tsv_header(fields):
            header = fields
            continue
        if header is not None and len(fields) != len(header):
            yield BadLine(where, "columns", f"expected {len(header)} tab-separated columns "
                          f"({', '.join(header)}, as in the header), got {len(fields)}")
            continue
        if header is None and not 2 <= len(fields) <= len(TSV_COLUMNS):
            yield BadLine(where, "columns", f"expected 2 to 4 tab-separated columns "
                          f"(src, tgt[, lang[, alignment]]), got {len(fields)}")
            continue
        values = dict(zip(header or TSV_COLUMNS, fields))
        lang = values.get("lang") or None
        if lang is not None and not is_language_code(lang.strip()):
            yield BadLine(where, "lang", f"the lang column holds {lang[:40]!r}, not a language code; if the "
                          f"columns after the English are translations (parallel sentences), name their "
                          f"languages in order with --langs (e.g. --langs de,fr)")
            continue
        yield Record(where, values["src"], values["tgt"], lang and lang.strip(), values.get("alignment"))


def read_parallel_sentences(path: str | Path, langs: Sequence[str]) -> Iterator[Item]:
    """Items of an `en<TAB>tr_1<TAB>...<TAB>tr_k` file: one Record per translation column."""
    for line in tab_separated_lines(path):
        if isinstance(line, BadLine):
            yield line
            continue
        where, _, fields = line
        if len(fields) != 1 + len(langs):
            yield BadLine(where, "columns", f"expected {1 + len(langs)} tab-separated columns (English, then "
                          f"{', '.join(langs)} as given by --langs), got {len(fields)}")
            continue
        for lang, tgt in zip(langs, fields[1:]):
            yield Record(where, fields[0], tgt, lang)


def record_from_mapping(row: Mapping, columns: Columns, src_lang: str, where: str) -> Item:
    """A Record from a JSON object or `datasets` row, or a BadLine saying what is missing."""
    translation = row.get(columns.translation)
    if columns.src not in row and isinstance(translation, Mapping):
        targets = [lang for lang in translation if lang != src_lang]
        if src_lang not in translation or len(targets) != 1:
            return BadLine(where, "field", f"{columns.translation!r} must hold {src_lang!r} and one "
                           f"target language, got keys {sorted(translation)}")
        src, tgt, lang = translation[src_lang], translation[targets[0]], targets[0]
    else:
        missing = [name for name in (columns.src, columns.tgt) if name not in row]
        if missing:
            return BadLine(where, "field", f"missing field {missing[0]!r} (fields: {sorted(row)})")
        src, tgt, lang = row[columns.src], row[columns.tgt], row.get(columns.lang)
    if not isinstance(src, str) or not isinstance(tgt, str) or not isinstance(lang, (str, type(None))):
        return BadLine(where, "field", f"src, tgt and lang must be strings, got {type(src).__name__}, "
                       f"{type(tgt).__name__}, {type(lang).__name__}")
    return Record(where, src, tgt, lang or None, row.get(columns.alignment))


def read_jsonl(path: str | Path, columns: Columns, src_lang: str) -> Iterator[Item]:
    """Items of a JSON-lines file, one object per line."""
    for number, line in numbered_lines(path):
        where = f"{path}:{number}"
        if line is None:
            yield BadLine(where, "encoding", NOT_UTF8)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield BadLine(where, "json", f"not valid JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(row, dict):
            yield BadLine(where, "json", f"expected a JSON object, got {type(row).__name__}")
            continue
        yield record_from_mapping(row, columns, src_lang, where)


def read_moses_pair(src_path: Path, tgt_path: Path, lang: str) -> Iterator[Item]:
    """Items of a Moses file pair, line i of one with line i of the other; raises MMKDError (a
    structural fault, never skipped) where one file ends before the other."""
    for (n, src), (m, tgt) in itertools.zip_longest(
        numbered_lines(src_path), numbered_lines(tgt_path), fillvalue=(None, None)
    ):
        if n is None or m is None:
            longer, shorter, number = (tgt_path, src_path, m) if n is None else (src_path, tgt_path, n)
            raise MMKDError(f"{longer}:{number}: no partner line: {shorter} has only {number - 1} lines "
                            f"(a Moses file pair must have equal line counts)")
        if src is None or tgt is None:
            yield BadLine(f"{src_path if src is None else tgt_path}:{n}", "encoding", NOT_UTF8)
            continue
        yield Record(f"{tgt_path}:{n}", src, tgt, lang)


def moses_streams(paths: Sequence[Path], src_lang: str) -> list[Stream]:
    """One stream per (prefix, target language): PREFIX.<src_lang> with each other PREFIX.xx given."""
    groups: dict[Path, dict[str, Path]] = {}
    for path in paths:
        lang = path.suffix[1:]
        if not lang:
            raise MMKDError(f"{path}: Moses files are named PREFIX.LANG (train.en, train.de)")
        groups.setdefault(path.with_suffix(""), {})[lang] = path
    streams = []
    for prefix, files in groups.items():
        if src_lang not in files or len(files) < 2:
            raise MMKDError(f"{prefix}.*: a Moses corpus needs {prefix}.{src_lang} and at least one "
                            f"translation file, got {[str(p) for p in files.values()]}")
        for lang, path in files.items():
            if lang != src_lang:
                streams.append(Stream(f"{files[src_lang]} + {path}", split_from_name(prefix.name),
                                      read_moses_pair(files[src_lang], path, lang)))
    return streams


@dataclass(frozen=True)
class DatasetOptions:
    """How to read a `datasets` source: configurations (each read in turn, None = the default),
    splits (None = all), data files and revision as `datasets.load_dataset` takes them, the most
    rows read per split (None = all), and streaming (rows are fetched as they are read)."""

    configs: Sequence[str | None] = (None,)
    splits: Sequence[str] | None = None
    data_files: Sequence[str] | None = None
    revision: str | None = None
    max_rows: int | None = None
    streaming: bool = False

    def __post_init__(self) -> None:
        if self.max_rows is not None and self.max_rows < 1:
            raise MMKDError(f"max_rows must be >= 1, got {self.max_rows}")


def read_dataset(name: str, dataset: datasets.Dataset | datasets.IterableDataset, columns: Columns,
                 src_lang: str) -> Iterator[Item]:
    """Items of a `datasets.Dataset` or `IterableDataset`, read in batches; where = '<name> row <i>'."""
    index = 0
    for batch in dataset.iter(batch_size=1000):
        for values in zip(*batch.values()):
            yield record_from_mapping(dict(zip(batch, values)), columns, src_lang, f"{name} row {index}")
            index += 1


def load_dataset_splits(spec: str, config: str | None, options: DatasetOptions) -> dict[str | None, object]:
    """{split: Dataset or IterableDataset} of a save_to_disk directory or of anything
    `datasets.load_dataset` loads (a dataset name, a folder of data files); split None = unsplit."""
    if any((Path(spec) / marker).is_file() for marker in SAVE_TO_DISK_MARKERS):
        loaded = load_saved_dataset(spec)
        splits = {None: loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
        if options.streaming:
            splits = {split: dataset.to_iterable_dataset() for split, dataset in splits.items()}
    else:
        try:
            loaded = datasets.load_dataset(spec, config, data_files=options.data_files and list(options.data_files),
                                           revision=options.revision, streaming=options.streaming)
        except Exception as err:  # the library raises many types (not found, offline, bad config)
            raise MMKDError(f"{spec}: not a save_to_disk directory, and datasets cannot load it "
                            f"({type(err).__name__}: {err})") from err
        splits = {None: loaded} if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)) else dict(loaded)
    if options.splits is not None:
        missing = [split for split in options.splits if split not in splits]
        if missing:
            raise MMKDError(f"{spec}: has no split {missing[0]!r} (its splits: {sorted(map(str, splits))})")
        splits = {split: splits[split] for split in options.splits}
    if options.max_rows is not None:
        splits = {split: dataset.take(options.max_rows) if isinstance(dataset, datasets.IterableDataset)
                  else dataset.select(range(min(options.max_rows, len(dataset))))
                  for split, dataset in splits.items()}
    return splits


def dataset_streams(spec: str, columns: Columns, src_lang: str, options: DatasetOptions) -> list[Stream]:
    """One stream per (configuration, split) of a `datasets` source (see load_dataset_splits)."""
    streams = []
    for config in options.configs:
        for split, dataset in load_dataset_splits(spec, config, options).items():
            name = spec + ("" if config is None else f":{config}") + ("" if split is None else f"[{split}]")
            names = dataset.column_names  # None for some streamed sources: rows are checked as read
            if names is not None and not ({columns.src, columns.tgt} <= set(names) or columns.translation in names):
                raise MMKDError(f"{name}: needs columns {columns.src!r} and {columns.tgt!r}, or "
                                f"{columns.translation!r}; has {sorted(names)} (see the column options)")
            if split is not None and split not in SPLIT_NAMES:
                raise MMKDError(f"{name}: split {split!r} is none of {sorted(SPLIT_NAMES)}; choose the "
                                f"splits to read with --split")
            streams.append(Stream(name, None if split is None else SPLIT_NAMES[split],
                                  read_dataset(name, dataset, columns, src_lang)))
    return streams


def detect_format(path: str) -> str:
    """'tsv' / 'jsonl' by extension (after an optional .gz), 'datasets' for a directory or a name that
    is no file, else 'moses'."""
    suffix = Path(path.removesuffix(".gz")).suffix.lower()
    if suffix == ".tsv":
        return "tsv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if Path(path).is_dir() or not Path(path).exists():
        return "datasets"
    return "moses"


def open_streams(
    inputs: Sequence[str],
    fmt: str = "auto",
    columns: Columns = Columns(),
    src_lang: str = "en",
    langs: Sequence[str] | None = None,
    dataset_options: DatasetOptions = DatasetOptions(),
) -> list[Stream]:
    """Streams of all inputs, each in its own format (`fmt`, or by `detect_format`), in input order;
    Moses files are grouped by prefix at the place of the first one. `langs`: the translation
    columns of parallel-sentences TSV files."""
    if not inputs:
        raise MMKDError("no input given")
    if fmt not in FORMATS:
        raise MMKDError(f"format {fmt!r} is none of {FORMATS}")
    formats = [detect_format(path) if fmt == "auto" else fmt for path in inputs]
    for path, path_fmt in zip(inputs, formats):
        if path_fmt != "datasets" and not Path(path).is_file():
            raise MMKDError(f"{path}: no such file")
    moses = [Path(path) for path, path_fmt in zip(inputs, formats) if path_fmt == "moses"]
    streams: list[Stream] = []
    for path, path_fmt in zip(inputs, formats):
        if path_fmt == "tsv":
            streams.append(Stream(path, split_from_name(path), read_tsv(path, langs)))
        elif path_fmt == "jsonl":
            streams.append(Stream(path, split_from_name(path), read_jsonl(path, columns, src_lang)))
        elif path_fmt == "datasets":
            streams += dataset_streams(path, columns, src_lang, dataset_options)
        elif Path(path) == moses[0]:
            streams += moses_streams(moses, src_lang)
    return streams


def with_parallel_alignments(stream: Stream, path: str | Path) -> Stream:
    """The stream with line i of the Pharaoh file `path` as the alignment of item i. A line count
    that differs from the stream's item count raises MMKDError; a bad line becomes a BadLine."""

    def items() -> Iterator[Item]:
        lines = numbered_lines(path)
        count = 0
        for item in stream.items:
            number, text = next(lines, (None, None))
            if number is None:
                raise MMKDError(f"{path}: has {count} lines, but {stream.name} has more pairs "
                                f"(the next is {item.where}); alignment files have one line per pair")
            count = number
            where = f"{path}:{number}"
            if isinstance(item, BadLine):
                yield item
            elif text is None:
                yield BadLine(where, "encoding", NOT_UTF8)
            elif item.alignment is not None:
                yield BadLine(item.where, "alignment", f"has its own alignment, and {where} gives another")
            else:
                try:
                    yield replace(item, alignment=parse_pharaoh(text))
                except AlignmentFormatError as err:
                    yield BadLine(where, "alignment", str(err))
        if next(lines, None) is not None:
            raise MMKDError(f"{path}:{count + 1}: more alignment lines than the {count} pairs of {stream.name}")

    return Stream(stream.name, stream.split, items())
