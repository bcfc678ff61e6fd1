"""Time and peak memory of `mmkd corpus import` on a generated TSV of N pairs (default 10M).

    .venv/bin/python scripts/bench_corpus_import.py --pairs 10000000 --work /tmp/bench-corpus

The TSV (src<TAB>tgt<TAB>lang) holds about N / 2 English messages, each translated into de and fr;
every 50th line repeats the line before it (an exact duplicate) and every 40th English message is
the one before it in NFD with a zero-width space (an invisible variant, with translations of its
own), so de-duplication and normalisation have work to do. The import runs as a subprocess; its wall
time, CPU time (user + system: the figure a busy machine inflates least) and peak resident memory
(the child's ru_maxrss) are printed with the corpus's counts, which are checked against what the
generator wrote. One `SUMMARY` line is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

WORDS = ("open close save print the file window archive folder message number current selected new "
         "old could not read write because disk network user account password settings").split()
DUPLICATE_EVERY = 50  # line i % 50 == 49 repeats line i - 1
VARIANT_EVERY = 40  # message m % 40 == 39 is written as an invisible variant of message m - 1


def english(message: int) -> str:
    """A distinct 7-9 word English sentence for each message number."""
    words = [WORDS[(message >> shift) % len(WORDS)] for shift in (0, 5, 10, 15, 20)]
    return f"{words[0].capitalize()} {' '.join(words[1:])} item {message} now"


def invisible_variant(text: str) -> str:
    """NFD with a zero-width space after the first word: equal to `text` once normalised."""
    first, rest = text.split(" ", 1)
    return unicodedata.normalize("NFD", f"{first}\u200b {rest}")


def generate(path: Path, pairs: int) -> dict[str, int]:
    """Write the TSV; returns what the import must find: pairs kept, duplicates, merged messages."""
    written = duplicates = variants = 0
    with open(path, "w", encoding="utf-8") as out:
        previous = ""
        message = 0
        while written < pairs:
            src = english(message)
            if message % VARIANT_EVERY == VARIANT_EVERY - 1:
                src = invisible_variant(english(message - 1))
                variants += 1
            for lang, prefix in (("de", "Übersetzung"), ("fr", "Traduction")):
                if written == pairs:
                    break
                if written % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and previous:
                    out.write(previous)
                    duplicates += 1
                    written += 1
                    if written == pairs:
                        break
                previous = f"{src}\t{prefix} {english(message).lower()}\t{lang}\n"
                out.write(previous)
                written += 1
            message += 1
    return {"pairs": written, "duplicates": duplicates, "variant_messages": variants}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--work", default="/tmp/bench-corpus-import", help="scratch directory (emptied)")
    parser.add_argument("--keep", action="store_true", help="keep the TSV and corpus")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tsv, corpus = work / "pairs.tsv", work / "corpus"

    start = time.perf_counter()
    expected = generate(tsv, args.pairs)
    print(f"generated {expected['pairs']:,} pairs ({tsv.stat().st_size / 2**20:,.0f} MiB) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)

    command = [sys.executable, "-m", "mmkd", "corpus", "import", str(tsv), "--out", str(corpus)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds, peak_mib = child.ru_utime + child.ru_stime, child.ru_maxrss / 1024  # Linux: KiB

    report = json.loads((corpus / "report.json").read_text(encoding="utf-8"))
    checks, merged = report["checks"], report["normalisation"]["merged_messages"]
    kept = sum(row["total"] for row in report["counts"].values())
    splits = {split: sum(row[split] for row in report["counts"].values()) for split in ("train", "dev", "test")}
    assert checks["duplicate"] == expected["duplicates"], (checks, expected)
    assert kept == expected["pairs"] - expected["duplicates"], (kept, expected)
    assert merged == expected["variant_messages"], (merged, expected)
    print(f"import: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU, peak RSS {peak_mib:,.0f} MiB; "
          f"kept {kept:,} pairs {splits}, "
          f"duplicates {checks['duplicate']:,}, merged messages {merged:,} (as generated)")
    print(f"SUMMARY pairs={expected['pairs']} seconds={seconds:.1f} cpu_seconds={cpu_seconds:.1f} "
          f"peak_rss_mib={peak_mib:.0f} "
          f"pairs_per_second={expected['pairs'] / seconds:.0f}")
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
