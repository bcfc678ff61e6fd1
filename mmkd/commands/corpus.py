"""`mmkd corpus`: build the built-in corpus, import user corpora, print a corpus's counts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmkd.corpus.bad_input import ON_ERROR
from mmkd.corpus.builtin import DEFAULT_LANGS, DEFAULT_LOCALE_DIR, build_builtin_corpus
from mmkd.corpus.cleaning import CleaningConfig
from mmkd.corpus.importing import import_corpus
from mmkd.corpus.language_codes import parse_language_list
from mmkd.corpus.schema import REPORT_FILE, format_count_table, language_counts, load_corpus, save_corpus
from mmkd.corpus.user_formats import FORMATS, Columns, DatasetOptions
from mmkd.errors import MMKDError

EXAMPLES = """examples:
  mmkd corpus build --out runs/corpus
  mmkd corpus build --langs de,fr,zh_CN --out runs/corpus-3
  mmkd corpus build --min-pairs 2000 --out runs/corpus-big
  mmkd corpus import data/pairs.tsv --lang de --out runs/corpus-tsv
  mmkd corpus import data/train.en data/train.de data/train.fr --out runs/corpus-moses
  mmkd corpus import data/train.jsonl data/dev.jsonl data/test.jsonl --out runs/corpus-json
  mmkd corpus import data/pairs.tsv --lang de --alignments data/pairs.align --out runs/corpus-aligned
  mmkd corpus import parallel-en-de-fr.tsv.gz --langs de,fr --out runs/corpus-st
  mmkd corpus import data/pairs.tsv data/hf-dir opus_books --lang de --dataset-config de-en,en-fr \
      --out runs/corpus-merged
  mmkd corpus import wmt14 --dataset-config de-en --split train,test --max-rows 1000000 --streaming \
      --out runs/corpus-wmt
  mmkd corpus stats runs/corpus
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Fill in the `corpus` parser (see mmkd/cli.py)."""
    parser.description = ("Parallel (English, translation) corpora in one schema: splits train/dev/test "
                          "(disjoint by English message), columns src, tgt, lang, alignment.")
    parser.epilog = EXAMPLES
    actions = parser.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    add_build_parser(actions)
    add_import_parser(actions)
    stats = actions.add_parser("stats", help="print the per-language counts of a corpus directory")
    stats.add_argument("corpus", help="corpus directory")
    stats.set_defaults(func=run_stats)


def add_split_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("split (by English message: a src is in one split for every language)")
    group.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    group.add_argument("--dev-fraction", type=float, default=0.05,
                       help="share of English messages in dev (default 0.05)")
    group.add_argument("--test-fraction", type=float, default=0.10, help="share in test (default 0.10)")


def add_build_parser(actions: argparse._SubParsersAction) -> None:
    defaults = CleaningConfig()
    parser = actions.add_parser(
        "build", help="build the corpus from the machine's gettext catalogs",
        description="Extract (English msgid, translation) pairs from <locale-dir>/<lang>/LC_MESSAGES/*.mo, "
                    "clean them (format specifiers, accelerators, markup, whitespace, untranslated, "
                    "code-like, length and length-ratio filters, duplicates), split them by English "
                    "message and save the corpus with counts.tsv and report.json.")
    parser.add_argument("--out", required=True, help="new corpus directory (must not exist or be empty)")
    parser.add_argument("--langs", default=None,
                        help=f"comma-separated language directories (de,zh_CN,sr@latin) or 'all'; "
                             f"default {','.join(DEFAULT_LANGS)}, or all when --min-pairs is given")
    parser.add_argument("--min-pairs", type=int, default=None,
                        help="keep only languages with at least this many pairs after cleaning")
    parser.add_argument("--locale-dir", default=DEFAULT_LOCALE_DIR, help=f"default {DEFAULT_LOCALE_DIR}")
    group = parser.add_argument_group("cleaning")
    group.add_argument("--min-words", type=int, default=defaults.min_words,
                       help=f"fewest English words (default {defaults.min_words})")
    group.add_argument("--max-words", type=int, default=defaults.max_words,
                       help=f"most English words (default {defaults.max_words})")
    group.add_argument("--min-char-ratio", type=float, default=defaults.min_char_ratio,
                       help=f"lowest len(tgt)/len(src) in characters (default {defaults.min_char_ratio})")
    group.add_argument("--max-char-ratio", type=float, default=defaults.max_char_ratio,
                       help=f"highest len(tgt)/len(src) in characters (default {defaults.max_char_ratio})")
    add_split_options(parser)
    parser.set_defaults(func=run_build)


def add_import_parser(actions: argparse._SubParsersAction) -> None:
    columns = Columns()
    parser = actions.add_parser(
        "import", help="import TSV, JSONL, Moses files or datasets sources into one corpus",
        description="Read user corpora, in any mix of formats, into one corpus in the schema. Formats (by "
                    "extension unless --format; a file may end in .gz): "
                    ".tsv = src<TAB>tgt[<TAB>lang[<TAB>alignment]] or a header line naming those columns, "
                    "or with --langs the sentence-transformers parallel-sentences layout en<TAB>tr1<TAB>tr2...; "
                    ".jsonl = one {src, tgt, lang, alignment} or {translation: {en, xx}} object per line; "
                    "other files = Moses PREFIX.en with PREFIX.xx (one or more, language from the suffix); "
                    "a directory or other name = a datasets save_to_disk directory or what "
                    "datasets.load_dataset loads. Text is normalised (NFC; zero-width, BOM and control "
                    "characters removed; whitespace collapsed). Inputs named train/dev/valid/test keep "
                    "their splits (a message in several keeps the test, then dev, copy; a dev or test split "
                    "that no input gives is carved from train by English message); otherwise pairs are "
                    "split by English message. Empty sides (no letter or digit), over-long pairs, "
                    "duplicates and out-of-range alignment links (the pair is kept without them) are "
                    "counted in report.json and printed.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or dataset names")
    parser.add_argument("--out", required=True, help="new corpus directory (must not exist or be empty)")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="format of every input (default: each by its extension)")
    parser.add_argument("--lang", default=None,
                        help="language of pairs that name none (TSV without lang column, ...)")
    parser.add_argument("--langs", default=None, metavar="L1,L2",
                        help="TSV inputs are parallel sentences: English, then one column per language "
                             "named here, in order (e.g. de,fr)")
    parser.add_argument("--src-lang", default="en",
                        help="code of the English side: Moses suffix, translation key (default en)")
    parser.add_argument("--alignments", action="append", default=[], metavar="FILE",
                        help="Pharaoh file (0-0 1-2, indices into str.split() words), one line per pair; "
                             "repeat it once per input, in input order (Moses: per translation file)")
    parser.add_argument("--on-error", default="fail", choices=ON_ERROR,
                        help="a malformed line (column count, JSON, missing field, Pharaoh token, "
                             "encoding, a lang column that is no language code): fail names its file and "
                             "line and stops (default); skip skips and counts it. Line counts that differ "
                             "between paired files always fail.")
    parser.add_argument("--max-chars", type=int, default=1000,
                        help="drop (and count) pairs with a side longer than this many characters (default 1000)")
    parser.add_argument("--resplit", action="store_true", help="ignore given splits, split by English message")
    group = parser.add_argument_group("JSONL fields / datasets columns")
    for name in ("src", "tgt", "lang", "alignment", "translation"):
        group.add_argument(f"--{name}-column", default=getattr(columns, name), metavar="NAME",
                           help=f"default {getattr(columns, name)!r}")
    group = parser.add_argument_group("datasets sources")
    group.add_argument("--dataset-config", default=None, metavar="C1,C2",
                       help="configurations to read, each in turn (e.g. de-en,en-fr); default: the dataset's own")
    group.add_argument("--split", default=None, metavar="S1,S2",
                       help="splits to read (e.g. train,test; default all)")
    group.add_argument("--data-files", action="append", default=None, metavar="PATTERN",
                       help="data files of the source, as datasets.load_dataset takes them (repeatable)")
    group.add_argument("--revision", default=None, help="git revision (branch, tag, commit) of a Hub dataset")
    group.add_argument("--max-rows", type=int, default=None, metavar="N",
                       help="read at most this many rows (the first) of each split of each configuration")
    group.add_argument("--streaming", action="store_true",
                       help="stream the source (rows fetched as read, nothing downloaded whole first)")
    add_split_options(parser)
    parser.set_defaults(func=run_import)


def check_out_dir(out: str) -> None:
    """Refuse to write into a non-empty directory, before any work is done."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise MMKDError(f"{out}: exists and is not an empty directory; choose a new --out or remove it")


def parse_langs(value: str | None, min_pairs: int | None) -> list[str] | None:
    """--langs 'de,fr' -> ['de', 'fr']; 'all' -> None; unset -> DEFAULT_LANGS, or None with --min-pairs."""
    if value is None:
        return None if min_pairs is not None else list(DEFAULT_LANGS)
    if value == "all":
        return None
    langs = [lang.strip() for lang in value.split(",") if lang.strip()]
    if not langs:
        raise MMKDError(f"--langs {value!r}: no language names")
    return langs


def run_build(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    cleaning = CleaningConfig(args.min_words, args.max_words, args.min_char_ratio, args.max_char_ratio)
    dsd, report = build_builtin_corpus(
        langs=parse_langs(args.langs, args.min_pairs), min_pairs=args.min_pairs, locale_dir=args.locale_dir,
        seed=args.seed, dev_fraction=args.dev_fraction, test_fraction=args.test_fraction, cleaning=cleaning)
    save_corpus(dsd, report, args.out)
    print(format_count_table(report["counts"]))
    print_counters("dropped by cleaning", report["cleaning"]["dropped"])
    for skipped in report["skipped_catalogs"]:
        print(f"skipped catalog {skipped['path']}: {skipped['error']}")
    if report["languages_below_min_pairs"]:
        print_counters(f"languages below {args.min_pairs} pairs", report["languages_below_min_pairs"])
    print(f"corpus written to {args.out}")
    return 0


def comma_list(value: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b']; None stays None."""
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


def run_import(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    columns = Columns(args.src_column, args.tgt_column, args.lang_column, args.alignment_column,
                      args.translation_column)
    dataset_options = DatasetOptions(
        configs=comma_list(args.dataset_config) or [None], splits=comma_list(args.split),
        data_files=args.data_files, revision=args.revision, max_rows=args.max_rows, streaming=args.streaming)
    dsd, report = import_corpus(
        args.inputs, fmt=args.format, lang=args.lang, src_lang=args.src_lang, columns=columns,
        alignments=args.alignments, on_error=args.on_error, max_chars=args.max_chars, seed=args.seed,
        dev_fraction=args.dev_fraction, test_fraction=args.test_fraction, resplit=args.resplit,
        langs=None if args.langs is None else parse_language_list(args.langs, "--langs"),
        dataset_options=dataset_options)
    save_corpus(dsd, report, args.out)
    print(format_count_table(report["counts"]))
    carved = f" ({', '.join(report['carved_from_train'])} carved from train)" if report["carved_from_train"] else ""
    print(f"splits: {report['splits']}{carved}")
    normalisation = report["normalisation"]
    print_counters("normalised pairs", normalisation["changed"])
    print(f"merged by normalisation: {normalisation['merged_pairs']} pairs, "
          f"{normalisation['merged_messages']} English messages")
    print_counters("checks", report["checks"])
    bad_input = report["bad_input"]
    print(f"malformed lines skipped: {bad_input['skipped']}")
    for example in bad_input["examples"]:
        print(f"  {example}")
    print(f"corpus written to {args.out}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    print(format_count_table(language_counts(load_corpus(args.corpus))))
    report_path = Path(args.corpus) / REPORT_FILE
    if report_path.is_file():
        report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
        print(f"source: {report.get('source')}, fingerprint: {report.get('fingerprint')}")
    return 0


def print_counters(title: str, counters: dict[str, int]) -> None:
    print(f"{title}: " + ", ".join(f"{name} {count}" for name, count in counters.items()))
