"""`mmkd pipeline`: the main job on the offline defaults, stage by stage.

Each stage is the `mmkd` subcommand a user would run by hand; the pipeline prints it before running
it and skips a stage whose output is already complete, so a stopped pipeline picks up where it was.
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
from mmkd.teacher_cache.identity import FORMAT_VERSION

EXAMPLES = """examples:
  mmkd pipeline                          # built-in corpus, default languages, into runs/main
  mmkd pipeline --train-steps 100        # a shorter training run
  mmkd pipeline --out runs/big --langs de,fr,es,ru,zh_CN,ar,hi,eu,xh
"""


@dataclass(frozen=True)
class Stage:
    """One step: the argv of an `mmkd` subcommand and how to tell its output is complete."""

    name: str
    argv: list[str]
    done: Callable[[], bool]


def stages(args: argparse.Namespace) -> list[Stage]:
    from mmkd.evaluation.retrieval import REPORT_FILES

    out = Path(args.out)
    corpus, student, train, evaluation = out / "corpus", out / "student", out / "train", out / "eval"
    caches = {split: out / f"teacher_cache_{split}" for split in ("train", "dev")}
    train_argv = ["train", args.recipe, f"--corpus={corpus}", f"--student={student}",
                  f"--teacher_cache={caches['train']}", f"--dev_teacher_cache={caches['dev']}",
                  f"--output_dir={train}", f"--max_length={args.max_length}", f"--seed={args.seed}"]
    if args.train_steps is not None:
        train_argv.append(f"--max_steps={args.train_steps}")
    if args.train_minutes is not None:
        train_argv.append(f"--max_time_minutes={args.train_minutes}")
    if (train / "checkpoints").is_dir():
        train_argv.append("--resume")  # a stopped pipeline continues its training run
    return [
        Stage("corpus", ["corpus", "build", "--langs", args.langs, "--seed", str(args.seed),
                         "--out", str(corpus)],
              lambda: (corpus / "report.json").is_file()),
        Stage("student", ["init-student", "--corpus", str(corpus), "--out", str(student),
                          "--vocab-size", str(args.vocab_size), "--seed", str(args.seed)],
              lambda: (student / "mmkd_student.json").is_file()),
        *(Stage(f"teacher cache ({split})", ["cache-teacher", "--corpus", str(corpus), "--split", split,
                                             "--max-length", str(args.max_length), "--out", str(path)],
                lambda path=path: cache_is_current(path))
          for split, path in caches.items()),
        Stage("train", train_argv, lambda: (train / "export" / "sentence_transformers").is_dir()),
        Stage("evaluate", ["eval", "retrieval", "--corpus", str(corpus), "--out", str(evaluation),
                           "--models", f"teacher,student_before={student},student_after={train / 'export' / 'hf'}",
                           "--max-length", str(args.max_length), "--seed", str(args.seed)],
              lambda: (evaluation / REPORT_FILES["json"]).is_file()),
    ]


def configure(parser: argparse.ArgumentParser) -> None:
    """Fill in the `pipeline` parser (see mmkd/cli.py)."""
    parser.description = ("Run every stage of MMKD on the offline defaults (the machine's gettext catalogs, "
                          "the packaged all-MiniLM-L6-v2 teacher), skipping stages already complete.")
    parser.epilog = EXAMPLES
    parser.add_argument("--out", default="runs/main", help="run directory (default runs/main)")
    parser.add_argument("--langs", default=",".join(DEFAULT_LANGS),
                        help=f"languages of the built-in corpus (default {','.join(DEFAULT_LANGS)})")
    parser.add_argument("--vocab-size", type=int, default=32000, help="student vocabulary size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="recipes/cpu_main.yaml", help="training recipe (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=64,
                        help="tokens per encoding, for the teacher cache and training alike (default 64)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="optimizer steps of training, which the learning-rate schedule spans (default: the "
                             "recipe's max_steps)")
    parser.add_argument("--train-minutes", type=float, default=None,
                        help="bound on the training loop's time (default: the recipe's max_time_minutes)")
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

    evaluation = Path(args.out) / "eval"
    print(f"[pipeline] finished. Student exported to {Path(args.out) / 'train' / 'export'} (Hugging Face and "
          f"sentence-transformers directories). Watch or review training with:\n"
          f"  .venv/bin/tensorboard --logdir {Path(args.out) / 'train' / 'tensorboard'}\n"
          f"Translation retrieval on the test split (top-1 %, teacher on both sides / student before / after):\n"
          f"{(evaluation / REPORT_FILES['markdown']).read_text(encoding='utf-8')}"
          f"Chart: {evaluation / REPORT_FILES['png']}", flush=True)
    return 0


def cache_is_current(path: Path) -> bool:
    """Whether `path` holds a complete teacher cache in this version's format (an older one is rebuilt)."""
    manifest = path / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT_VERSION
