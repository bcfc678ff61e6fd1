"""One markdown table of several `mmkd eval retrieval` runs (scripts/ablation.sh): a row per run.

  python scripts/ablation_table.py OUT/sentence_only OUT/full OUT/no_tlm ...   (each holds eval/retrieval.json)
  python scripts/ablation_table.py --eval eval_ood OUT/...                      (each holds eval_ood/retrieval.json)

Rows are named by each directory's name; columns are per-language x->y / y->x top-1 (%) and the
high-/low-resource means, of each report's last model (mmkd.evaluation.retrieval.comparison_table).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmkd.evaluation.retrieval import comparison_table, read_report


def main(argv: list[str]) -> int:
    evaluation, runs = ("eval", argv) if argv[:1] != ["--eval"] else (argv[1] if len(argv) > 1 else "", argv[2:])
    if not runs or not evaluation:
        print(__doc__, file=sys.stderr)
        return 2
    print(comparison_table({Path(run).name: read_report(Path(run) / evaluation) for run in runs}), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
