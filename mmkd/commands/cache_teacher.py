"""`mmkd cache-teacher`: run the frozen teacher once over a corpus split and cache its outputs.

examples:
  mmkd cache-teacher --corpus corpus/ --split train --out cache/train
  deepspeed --num_gpus 2 --module mmkd.teacher_cache --corpus corpus/ --split train --out cache/train
      (one process per rank, each computing every 2nd shard; OMP_NUM_THREADS=1 on CPU hosts)
  mmkd cache-teacher --verify --out cache/train
      (check every file's sha256; opening a cache for training checks sizes only)
Rerun the same command after an interruption: complete shards whose checksums pass are kept, the
others rebuilt.
"""

from __future__ import annotations

import argparse

from mmkd.corpus.schema import SPLITS, load_corpus
from mmkd.errors import MMKDError
from mmkd.models.teacher import load_teacher
from mmkd.teacher_cache import BuildSummary, TeacherCache, build_teacher_cache
from mmkd.train_config import TrainConfig


def configure(parser: argparse.ArgumentParser) -> None:
    """Fill in the `cache-teacher` parser (see mmkd/cli.py)."""
    parser.description = __doc__
    parser.add_argument("--corpus", help="corpus directory (as written by `mmkd corpus`); needed to build")
    parser.add_argument("--split", default="train", choices=SPLITS, help="split to cache (default: train)")
    parser.add_argument("--teacher", default=None,
                        help="teacher model directory or hub name (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--layer", type=int, default=-1,
                        help="hidden-state layer of the token states (-1 = last, 0 = embeddings)")
    parser.add_argument("--max-length", type=int, default=TrainConfig.max_length,
                        help="teacher tokens per sentence, specials included: the max_length of the recipe that "
                             f"trains with the cache (default {TrainConfig.max_length}, mmkd train's)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per teacher forward pass")
    parser.add_argument("--shard-size", type=int, default=4096, help="distinct sentences per shard")
    parser.add_argument("--out", required=True, help="cache directory (created; an interrupted build resumes)")
    parser.add_argument("--verify", action="store_true",
                        help="check the sha256 of every file of the cache in --out instead of building")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build (or resume) the cache and print its summary on rank 0; or, with --verify, check it."""
    if args.verify:
        checked = TeacherCache(args.out).verify()
        print(f"teacher cache {args.out}: {checked} files, every sha256 as recorded")
        return 0
    if args.corpus is None:
        raise MMKDError("cache-teacher: --corpus DIR is needed to build a cache (or pass --verify)")
    corpus = load_corpus(args.corpus)
    teacher = load_teacher(args.teacher, layer=args.layer)
    summary = build_teacher_cache(
        teacher, corpus[args.split], args.out, max_length=args.max_length, batch_size=args.batch_size,
        shard_size=args.shard_size, split=args.split, corpus_path=str(args.corpus),
    )
    if summary.rank == 0:
        print(format_summary(summary))
    return 0


def format_summary(summary: BuildSummary) -> str:
    """One line: totals of the cache, time, and the shards this rank built or kept."""
    return (f"teacher cache {summary.path}: {summary.examples} examples ({summary.sentences} distinct "
            f"sentences), {summary.tokens} tokens, {summary.bytes / 2**20:.1f} MiB, {summary.seconds:.1f} s; "
            f"built {len(summary.built)} shards, kept {len(summary.kept)}")
