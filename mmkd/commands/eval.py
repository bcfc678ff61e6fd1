"""`mmkd eval ACTION`: evaluate teacher and students; one action per evaluation.

ACTIONS below owns each action's name, help line and `configure_<action>(parser)` (which sets
`func`); like mmkd/cli.py, heavy modules are imported only in the chosen action's run function.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

RETRIEVAL_EXAMPLES = """examples:
  mmkd eval retrieval --corpus runs/main/corpus --out runs/main/eval \\
      --models teacher,before=runs/main/student,after=runs/main/train/export/hf
  mmkd eval retrieval --corpus C --models runs/x/export/hf --split dev --pool 200 --out DIR
  mmkd eval retrieval --corpus runs/main/corpus --out-of-domain package:django --out runs/main/eval_ood \\
      --models teacher,after=runs/main/train/export/sentence_transformers
  mmkd eval retrieval --corpus C --out DIR \\
      --models mine=runs/x/export/hf,labse=sentence-transformers/LaBSE,mbert=bert-base-multilingual-cased
A model is `teacher` (its sentence embedding on both sides), a student directory (`mmkd init-student`
output, or a training run's export/hf), or any sentence-transformers or Hugging Face model path or hub
name, optionally named `label=path`. A student's embedding is P_s(mean-pooled last layer): the
projection into the teacher's space that SentA trains. Any other model is encoded by
sentence-transformers (its own pipeline and max_seq_length; a plain encoder is mean-pooled); its MSE to
the teacher is not defined ("–").
"""


def configure_retrieval(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Top-1 translation retrieval (x->y and y->x, cosine, within a fixed pool of "
                          "pairs per language) and the MSE of each model's embedding of y to the teacher's of "
                          "x, on a held-out split; writes retrieval.json, retrieval.md and retrieval.png.")
    parser.epilog = RETRIEVAL_EXAMPLES
    parser.add_argument("--corpus", required=True, help="corpus directory (mmkd corpus output)")
    parser.add_argument("--models", required=True,
                        help="comma-separated: teacher, student directories, any sentence-transformers or HF "
                             "model (path or hub name), label=path (see examples)")
    parser.add_argument("--out", required=True, help="directory for retrieval.{json,md,png}")
    parser.add_argument("--split", default="test", help="corpus split (default test)")
    parser.add_argument("--out-of-domain", default=None, metavar="SOURCE",
                        help="score pairs from another source instead of a corpus split: gettext catalogs of a "
                             "locale directory, or package:NAME for those an installed Python package ships "
                             "(package:django); pairs whose English is in the corpus are dropped")
    parser.add_argument("--pool", type=int, default=1000, help="candidate pool per language (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle that picks the pool")
    parser.add_argument("--teacher", default=None,
                        help="teacher name or path (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--low-resource-below", type=int, default=10_000,
                        help="a language with fewer train pairs is low-resource (default 10000)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per sentence: the max_length the students were trained with (default: "
                             "mmkd train's default max_length)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.set_defaults(func=run_retrieval)


def run_retrieval(args: argparse.Namespace) -> int:
    from mmkd.evaluation.retrieval import evaluate_retrieval, markdown_table, parse_models, write_report
    from mmkd.train_config import TrainConfig

    max_length = TrainConfig.max_length if args.max_length is None else args.max_length
    report = evaluate_retrieval(args.corpus, parse_models(args.models), split=args.split, teacher=args.teacher,
                                pool=args.pool, seed=args.seed, batch_size=args.batch_size,
                                max_length=max_length, low_resource_below=args.low_resource_below,
                                device=args.device, out_of_domain=args.out_of_domain, progress=True)
    paths = write_report(report, args.out)
    print(markdown_table(report), end="")
    print(f"written: {', '.join(str(path) for path in paths.values())}")
    return 0


DOWNSTREAM_EXAMPLES = """examples:
  mmkd eval xnli --model runs/main/train/export/hf --out runs/main/eval
  mmkd eval pawsx --model bert-base-multilingual-cased --data-dir data/pawsx --out DIR
  mmkd eval xquad --model M --data-dir data/squad --max-train-examples 2000 --languages en,de,zh --out DIR
The model (an exported student, or any Hugging Face encoder path or hub name) is fine-tuned on English
and tested zero-shot on every language, with XTREME's settings (mmkd/evaluation/downstream/tasks.py).
Data: the `datasets` hub (xnli, paws-x, squad + xquad) or, with --data-dir DIR, the official files:
  xnli   DIR/multinli_1.0/multinli_1.0_train.txt, DIR/XNLI-1.0/xnli.test.tsv
  pawsx  DIR/x-final/en/train.tsv, DIR/x-final/<lang>/test_2k.tsv
  xquad  DIR/train-v1.1.json, DIR/xquad.<lang>.json
"""


def configure_downstream(parser: argparse.ArgumentParser, task: str) -> None:
    """One parser for every downstream task; `task` names its row in the tasks table."""
    parser.description = (f"Fine-tune a model on {task}'s English training data, test it on each language; "
                          f"writes {task}.json and {task}.md.")
    parser.epilog = DOWNSTREAM_EXAMPLES
    parser.add_argument("--model", required=True, help="student directory, or any HF model path or hub name")
    parser.add_argument("--out", required=True, help=f"directory for {task}.{{json,md}}")
    parser.add_argument("--data-dir", default=None, help="the official files (see below); default: the hub")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the task's, 2)")
    parser.add_argument("--languages", default=None, help="comma-separated test languages (default: all)")
    parser.add_argument("--max-train-examples", type=int, default=None, help="first N training examples only")
    parser.add_argument("--max-eval-examples", type=int, default=None,
                        help="first N test examples per language only")
    parser.add_argument("--seed", type=int, default=42, help="seed of the head and the shuffle (default 42)")
    parser.set_defaults(func=run_downstream, task=task)


def run_downstream(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmkd.evaluation.downstream.finetune import RunOptions, evaluate_task
    from mmkd.evaluation.downstream.results import markdown_table, write_results
    from mmkd.evaluation.downstream.tasks import TASKS

    options = RunOptions(epochs=args.epochs, languages=args.languages.split(",") if args.languages else None,
                         max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
                         seed=args.seed, data_dir=Path(args.data_dir) if args.data_dir else None)
    results = evaluate_task(TASKS[args.task], args.model, options)
    paths = write_results(results, args.out)
    print(markdown_table(results), end="")
    print(f"written: {', '.join(str(path) for path in paths)}")
    return 0


CATALOG_EXAMPLES = """examples:
  mmkd eval catalog --corpus runs/main/corpus --model runs/main/train/export/hf --out runs/main/eval
  mmkd eval catalog --corpus runs/main/corpus --model teacher --out DIR     # the English teacher, as a floor
Fine-tunes on English train messages labelled with their catalog (gettext domain) and tests zero-shot on
the translations of the test split's messages, per language (mmkd/evaluation/downstream/catalog_task.py).
"""


def configure_catalog(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Zero-shot transfer offline: fine-tune on English messages labelled with the catalog "
                          "they come from, test on the translations of held-out messages; writes catalog.json, "
                          "catalog.md.")
    parser.epilog = CATALOG_EXAMPLES
    parser.add_argument("--corpus", required=True, help="corpus directory built from the catalogs (mmkd corpus build)")
    parser.add_argument("--model", required=True,
                        help="'teacher', a student directory, or any HF model path or hub name")
    parser.add_argument("--out", required=True, help="directory for catalog.{json,md}")
    parser.add_argument("--locale-dir", default="/usr/share/locale", help="the catalogs of the corpus")
    parser.add_argument("--labels", type=int, default=8, help="catalogs to tell apart (default 8)")
    parser.add_argument("--per-label", type=int, default=250, help="English training messages per catalog")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 3)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the head, sample and shuffle (default 42)")
    parser.set_defaults(func=run_catalog)


def run_catalog(args: argparse.Namespace) -> int:
    from mmkd.evaluation.downstream.catalog_task import catalog_transfer
    from mmkd.evaluation.downstream.results import markdown_table, write_results

    results = catalog_transfer(args.corpus, args.model, locale_dir=args.locale_dir, num_labels=args.labels,
                               per_label=args.per_label, epochs=args.epochs, seed=args.seed)
    print(markdown_table(results), end="")
    single = results["single_label_languages"]
    print(f"zero-shot accuracy (mean over languages other than English): {results['zero_shot_accuracy']:.1f}" +
          (f"; left out, their test messages carry one label: {', '.join(single)}" if single else ""))
    print(f"written: {', '.join(str(path) for path in write_results(results, args.out))}")
    return 0


ACTIONS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {  # name -> (configure, help)
    "retrieval": (configure_retrieval, "top-1 translation retrieval and MSE to the teacher, per language"),
    "xnli": (partial(configure_downstream, task="xnli"), "fine-tune on English NLI, accuracy on 15 languages"),
    "pawsx": (partial(configure_downstream, task="pawsx"), "fine-tune on English PAWS, accuracy on 7 languages"),
    "xquad": (partial(configure_downstream, task="xquad"), "fine-tune on SQuAD v1.1, F1/EM on XQuAD's 11 languages"),
    "catalog": (configure_catalog,
                "offline zero-shot transfer: fine-tune on English messages' catalogs, test on translations"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Fill in the `eval` parser (see mmkd/cli.py): one sub-parser per action in ACTIONS."""
    parser.description = "Evaluate the teacher and students; `mmkd eval ACTION --help` documents each action."
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (configure_action, help_line) in ACTIONS.items():
        configure_action(actions.add_parser(name, help=help_line,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
