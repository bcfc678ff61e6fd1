"""Markdown tables of several `mmkd eval retrieval` runs (scripts/ablation.sh): a row per run.

  python scripts/ablation_table.py OUT/sentence_only OUT/full OUT/no_senta ...   (each holds eval/retrieval.json)
  python scripts/ablation_table.py --eval eval_ood OUT/...                        (each holds eval_ood/retrieval.json)
  python scripts/ablation_table.py --summary OUT/...                              (eval/ and, if all have it, eval_ood/)

Rows are named by each directory's name and show each report's last model. The per-language table
has x->y / y->x top-1 (%) per language and the means over all, high- and low-resource languages
(mmkd.evaluation.retrieval.comparison_table); --summary has only those means, "x->y / y->x", on the
test split and out of domain side by side, and the test split's mean `mse_x` (how far the English
embedding is from the teacher's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmkd.errors import MMKDError
from mmkd.evaluation.retrieval import (
    MEAN_GROUPS,
    comparison_table,
    direction_means,
    group_means,
    means_cell,
    read_report,
)


def english_drift(report: dict) -> str:
    """The last model's `mse_x` (its English embedding's distance to the teacher's), mean over the
    report's languages, x 1e4; "" when the report has none (a model outside the teacher's space)."""
    model = list(report["models"])[-1]
    per_language = {lang: result["models"] for lang, result in report["languages"].items()}
    drift = group_means(per_language, {"all": list(per_language)})["all"]["models"][model].get("mse_x")
    return "" if drift is None else f"{1e4 * drift:.1f}"


def summary_table(runs: list[Path]) -> str:
    """Markdown: one row per run, its means (x->y / y->x) over all, high- and low-resource languages of
    RUN/eval and, when every run has one, of RUN/eval_ood, and its English drift on the test split
    (`english_drift`). MMKDError names a run without a report."""
    splits = {"test": "eval"}
    if all((run / "eval_ood").is_dir() for run in runs):
        splits["OOD"] = "eval_ood"
    header = ["config"] + [f"{split} {'mean' if g == 'all' else g}" for split in splits for g in MEAN_GROUPS]
    header.append("test mse_x (1e-4)")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for run in runs:
        reports = {split: read_report(run / evaluation) for split, evaluation in splits.items()}
        cells = [run.name]
        for report in reports.values():
            means = direction_means(report, list(report["models"])[-1])
            cells += [means_cell(means.get(group)) for group in MEAN_GROUPS]
        cells.append(english_drift(reports["test"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/ablation_table.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, one row each, in this order")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--eval", default="eval", help="the report's directory in each run (default eval)")
    which.add_argument("--summary", action="store_true", help="the means of eval/ and eval_ood/ side by side")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Print the table; 1 with the error when a report is missing or unreadable, 2 on bad arguments."""
    args = parse_args(argv)
    try:
        if args.summary:
            print(summary_table(args.runs), end="")
        else:
            print(comparison_table({run.name: read_report(run / args.eval) for run in args.runs}), end="")
    except MMKDError as err:
        print(f"scripts/ablation_table.py: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
