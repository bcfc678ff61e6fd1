"""`mmkd pipeline`: the main job on the offline defaults, stage by stage.

The corpus is the built-in one (`corpus build`), or `--corpus`: one corpus directory, used as it is
(no corpus stage), or sources that a `corpus import` stage reads into OUT/corpus. Each stage is the
`mmkd` subcommand a user would run by hand; the pipeline prints it before running
it and skips a stage whose output is already complete, so a stopped pipeline picks up where it was.
The recipe owns what training runs with: the pipeline resolves it as `mmkd train` will (recipe, then
the pipeline's overrides) and gives its max_length to the teacher caches and the evaluations.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmkd.corpus.builtin import DEFAULT_LANGS
from mmkd.corpus.schema import is_corpus_directory
from mmkd.errors import MMKDError
from mmkd.models.vocabulary import DEFAULT_VOCAB_SIZE
from mmkd.teacher_cache.identity import FORMAT_VERSION

EXAMPLES = """examples:
  mmkd pipeline                          # built-in corpus, default languages, into runs/main
  mmkd pipeline --train-steps 100        # a shorter training run
  mmkd pipeline --out runs/big --langs de,fr,es,ru,zh_CN,ar,hi,eu,xh
  mmkd pipeline --corpus runs/corpus-st  # an existing corpus directory (mmkd corpus build/import)
  mmkd pipeline --corpus data/train.tsv data/test.tsv --import-args="--lang de" --out runs/de
  mmkd pipeline --out runs/xlmr --teacher sentence-transformers/LaBSE --student xlm-roberta-base
"""


@dataclass(frozen=True)
class Stage:
    """One step: the argv of an `mmkd` subcommand and how to tell its output is complete."""

    name: str
    argv: list[str]
    done: Callable[[], bool]


def corpus_stage(args: argparse.Namespace, corpus: Path) -> Stage:
    """The stage that writes `corpus`: `corpus import` of the --corpus sources, else `corpus build`."""
    if args.corpus is None:
        argv = ["corpus", "build", "--langs", args.langs or ",".join(DEFAULT_LANGS)]
    else:
        argv = ["corpus", "import", *args.corpus, *shlex.split(args.import_args or "")]
    return Stage("corpus", [*argv, "--seed", str(args.seed), "--out", str(corpus)],
                 lambda: (corpus / "report.json").is_file())


def stages(args: argparse.Namespace) -> list[Stage]:
    from mmkd.checkpoint_dir import complete_checkpoints
    from mmkd.evaluation.retrieval import REPORT_FILES
    from mmkd.train_config import load_train_config

    if args.corpus is not None and args.langs is not None:
        raise MMKDError("--langs chooses the languages of the built-in corpus; with --corpus, give import "
                        "options in --import-args (e.g. --import-args='--langs de,fr')")
    if args.import_args is not None and args.corpus is None:
        raise MMKDError("--import-args needs --corpus SOURCE... (the sources to import)")
    out = Path(args.out)
    given = args.corpus is not None and len(args.corpus) == 1 and is_corpus_directory(args.corpus[0])
    if given and args.import_args is not None:
        raise MMKDError(f"--corpus {args.corpus[0]} is a corpus directory, used as it is: drop --import-args")
    if args.vocab_size is not None and args.student is not None:
        raise MMKDError(f"--student {args.student} keeps its own vocabulary: drop --vocab-size")
    corpus = Path(args.corpus[0]) if given else out / "corpus"
    student, train = out / "student", out / "train"
    caches = {split: out / f"teacher_cache_{split}" for split in ("train", "dev")}
    teacher = [] if args.teacher is None else ["--teacher", args.teacher]
    student_source = [] if args.student is None else ["--source", args.student, "--keep-vocab"]
    vocab_size = [] if args.vocab_size is None else ["--vocab-size", str(args.vocab_size)]
    train_argv = ["train", args.recipe, *([] if args.teacher is None else [f"--teacher={args.teacher}"]),
                  f"--corpus={corpus}", f"--student={student}",
                  f"--teacher_cache={caches['train']}", f"--dev_teacher_cache={caches['dev']}",
                  f"--output_dir={train}", f"--seed={args.seed}"]
    if args.max_length is not None:
        train_argv.append(f"--max_length={args.max_length}")
    if args.train_steps is not None:
        train_argv.append(f"--max_steps={args.train_steps}")
    if args.train_minutes is not None:
        train_argv.append(f"--max_time_minutes={args.train_minutes}")
    max_length = load_train_config(args.recipe, train_argv[2:]).max_length  # as `mmkd train` will resolve it
    if complete_checkpoints(train / "checkpoints"):
        train_argv.append("--resume")  # a stopped pipeline continues its training run
    elif train.is_dir() and any(train.iterdir()):
        train_argv.append("--overwrite")  # stopped before its first complete checkpoint: nothing to keep
    return [
        *([] if given else [corpus_stage(args, corpus)]),
        Stage("student", ["init-student", "--corpus", str(corpus), "--out", str(student), *teacher, *student_source,
                          *vocab_size, "--seed", str(args.seed)],
              lambda: (student / "mmkd_student.json").is_file()),
        *(Stage(f"teacher cache ({split})", ["cache-teacher", "--corpus", str(corpus), "--split", split, *teacher,
                                             "--max-length", str(max_length), "--out", str(path)],
                lambda path=path: cache_is_current(path, max_length))
          for split, path in caches.items()),
        Stage("train", train_argv, lambda: (train / "export" / "sentence_transformers").is_dir()),
        *(Stage(name, ["eval", "retrieval", "--corpus", str(corpus), "--out", str(directory),
                       "--models", f"teacher,student_before={student},student_after={train / 'export' / 'hf'}",
                       "--max-length", str(max_length), "--seed", str(args.seed), *teacher, *source],
                lambda directory=directory: (directory / REPORT_FILES["json"]).is_file())
          for name, directory, source in evaluations(args, out)),
    ]


def evaluations(args: argparse.Namespace, out: Path) -> list[tuple[str, Path, list[str]]]:
    """(stage name, report directory, extra eval arguments) of the retrieval evaluations: the test split,
    and the out-of-domain set unless --out-of-domain none."""
    runs = [("evaluate", out / "eval", [])]
    if args.out_of_domain != "none":
        runs.append(("evaluate (out of domain)", out / "eval_out_of_domain", ["--out-of-domain", args.out_of_domain]))
    return runs


def configure(parser: argparse.ArgumentParser) -> None:
    """Fill in the `pipeline` parser (see mmkd/cli.py)."""
    parser.description = ("Run every stage of MMKD on the offline defaults (the machine's gettext catalogs, "
                          "the packaged all-MiniLM-L6-v2 teacher) or on a corpus of your own (--corpus), "
                          "skipping stages already complete.")
    parser.epilog = EXAMPLES
    parser.add_argument("--out", default="runs/main", help="run directory (default runs/main)")
    parser.add_argument("--langs", default=None,
                        help=f"languages of the built-in corpus (default {','.join(DEFAULT_LANGS)})")
    parser.add_argument("--corpus", nargs="+", default=None, metavar="SOURCE",
                        help="a corpus directory (mmkd corpus build/import) to use as it is, or sources to "
                             "import into OUT/corpus with mmkd corpus import (files, directories, dataset "
                             "names); default: build the built-in gettext corpus")
    parser.add_argument("--import-args", default=None, metavar="'OPTIONS'",
                        help="options of mmkd corpus import for the --corpus sources, in one string "
                             "(--import-args='--lang de --on-error skip')")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help=f"WordPiece vocabulary size of the new student (default: init-student's, "
                             f"{DEFAULT_VOCAB_SIZE}); not with --student, which keeps its own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="cpu_main",
                        help="training recipe, a file or a shipped name (default: %(default)s, recipes/cpu_main.yaml)")
    parser.add_argument("--teacher", default=None,
                        help="teacher, any sentence-transformers or Hugging Face model (path or hub name); default: "
                             "the packaged all-MiniLM-L6-v2")
    parser.add_argument("--student", default=None,
                        help="an existing multilingual masked LM (path or hub name) to distil into, kept with its own "
                             "vocabulary (init-student --keep-vocab); default: a new vocabulary on the teacher's "
                             "layers")
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per encoding, for training, the teacher caches and the evaluations alike "
                             "(default: the recipe's max_length)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="optimizer steps of training, which the learning-rate schedule spans (default: the "
                             "recipe's max_steps)")
    parser.add_argument("--train-minutes", type=float, default=None,
                        help="bound on the training loop's time (default: the recipe's max_time_minutes)")
    parser.add_argument("--out-of-domain", default="package:django", metavar="SOURCE",
                        help="also evaluate retrieval on pairs of another source (mmkd eval retrieval "
                             "--out-of-domain; default %(default)s, Django's catalogs), or none")
    parser.add_argument("--baseline", default="runs/bench_vs_mse/table.md",
                        help="table of scripts/bench_vs_mse.py printed at the end when it exists (default %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmkd.cli import main

    for stage in stages(args):
        command = "mmkd " + shlex.join(stage.argv)
        if stage.done():
            print(f"[pipeline] {stage.name}: already complete, skipped ({command})", flush=True)
            continue
        print(f"[pipeline] {stage.name}: $ {command}", flush=True)
        start = time.perf_counter()
        code = main(stage.argv)
        if code:
            print(f"[pipeline] {stage.name} failed (exit {code}); fix the cause and rerun: completed "
                  "stages are kept", flush=True)
            return code
        print(f"[pipeline] {stage.name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    from mmkd.evaluation.retrieval import REPORT_FILES

    print(f"[pipeline] finished. Student exported to {Path(args.out) / 'train' / 'export'} (Hugging Face and "
          f"sentence-transformers directories). Watch or review training with:\n"
          f"  .venv/bin/tensorboard --logdir {Path(args.out) / 'train' / 'tensorboard'}", flush=True)
    for name, directory, _ in evaluations(args, Path(args.out)):
        where = "the test split" if name == "evaluate" else f"the out-of-domain set ({args.out_of_domain})"
        print(f"Translation retrieval on {where} (top-1 %, teacher on both sides / student before / after):\n"
              f"{(directory / REPORT_FILES['markdown']).read_text(encoding='utf-8')}"
              f"Chart: {directory / REPORT_FILES['png']}", flush=True)
    baseline = Path(args.baseline)
    if baseline.is_file():
        print(f"MMKD beside the sentence-transformers MSE recipe at equal training time, from a cached run of "
              f"scripts/bench_vs_mse.py ({baseline}; rerun it to refresh):\n{baseline.read_text(encoding='utf-8')}",
              flush=True)
    return 0


def cache_is_current(path: Path, max_length: int) -> bool:
    """Whether `path` holds a complete teacher cache in this version's format, of `max_length` tokens per
    sentence. An older format is rebuilt in place; a cache of another max_length is not done, and its
    `cache-teacher` stage refuses the directory naming both values (mmkd.teacher_cache.build)."""
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return False
    record = json.loads(manifest.read_text(encoding="utf-8"))
    return record.get("format") == FORMAT_VERSION and record.get("max_length") == max_length
