"""The results of a downstream run: `<task>.json` (everything) and `<task>.md` (one table)."""

from __future__ import annotations

import json
from pathlib import Path


def markdown_table(results: dict) -> str:
    """One row per metric, one column per language, then the average."""
    languages = list(results["languages"])
    lines = [f"{results['task']}: {results['model']} ({results['train_examples']} English training examples, "
             f"{results['settings']['epochs']} epochs)", "",
             "| metric | " + " | ".join(languages) + " | avg |",
             "|---" * (len(languages) + 2) + "|"]
    for metric, average in results["average"].items():
        cells = [f"{results['languages'][lang][metric]:.1f}" for lang in languages]
        lines.append(f"| {metric} | " + " | ".join(cells) + f" | {average:.1f} |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, out: str | Path) -> list[Path]:
    """Write `<task>.json` and `<task>.md` under `out` (created); returns their paths."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{results['task']}.json", directory / f"{results['task']}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown_table(results), encoding="utf-8")
    return [json_path, md_path]
