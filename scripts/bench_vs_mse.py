"""MMKD against sentence-transformers' multilingual MSE distillation at equal budget, in one table.

    python scripts/bench_vs_mse.py --run runs/main --minutes 10 --steps 2000 --mse-batch 16 --out runs/bench_vs_mse
    python scripts/bench_vs_mse.py --run runs/main --minutes 0 --steps 800 --out runs/bench_vs_mse/steps800

The first gives both arms the same training-loop time on this machine (run it on a quiet machine);
the second the same steps, so the same pairs, whatever the load (each arm's loop seconds are reported).

`--run` holds what `mmkd pipeline` builds before training: corpus/, student/, teacher_cache_train/,
teacher_cache_dev/. Both arms start from the same student (init-student's vocabulary, layers and
fitted P_s) and train on the same pairs, the recipe's language-sampled draw of the train split
(alpha, seed), for the same training-loop time on this machine:
  mmkd  `mmkd train RECIPE` with the recipe's objectives, for --steps (default the recipe's max_steps) or --minutes
        of loop time, whichever runs out first (the learning-rate schedule follows that budget, mmkd.schedule);
        its export/sentence_transformers is scored;
  mse   Reimers & Gurevych (2020) with sentence-transformers itself (mmkd.evaluation.mse_baseline): its
        MSELoss regresses the student's embedding of x and of y onto the teacher's of x (read from the
        run's teacher cache, as MMKD's SentA reads it), its trainer, the recipe's pairs per step (or
        --mse-batch: each method at its own best batch, the warm-up then spanning the same pairs), steps,
        time bound and warmup-decay schedule (the same budget as the mmkd arm; the recipe as --mmkd-args
        change it, `ds` changes included).
Then, for those two, the English teacher on both sides and the student before training: top-1
retrieval both ways on the test split and on the out-of-domain set (--ood, default Django's catalogs;
languages the source lacks are left out of its means), per language and high/low-resource means, and
the zero-shot catalog transfer check (`mmkd eval catalog`; fine-tuned on English, mean accuracy over
the other languages). Writes OUT/results.json and OUT/table.md and prints the table. A finished arm
(OUT/<arm>/summary.json) is reused, so a rerun only evaluates; delete it to train again. So are the
retrieval results (OUT/retrieval.json) and each model's transfer check (OUT/transfer/<model>.seed<k>.json).
The transfer check fine-tunes with --transfer-seeds seeds (from --seed; its mean accuracy moves by up to
6 points from one fine-tuning seed to another), and the table gives their mean and range.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mmkd import checkpoint_dir
from mmkd.corpus.schema import column, load_corpus
from mmkd.data.sampling import LanguageSampler
from mmkd.ds_config import check_batch_sizes
from mmkd.engine import load_ds_config
from mmkd.errors import MMKDError
from mmkd.evaluation.downstream.catalog_task import catalog_transfer
from mmkd.evaluation.mse_baseline import MSEBaselineConfig, train_mse_baseline
from mmkd.evaluation.retrieval import DIRECTIONS, MEAN_GROUPS, direction_means, evaluate_retrieval, means_cell
from mmkd.models.sentence_transformer import save_sentence_transformer
from mmkd.models.student import load_student
from mmkd.teacher_cache import TeacherCache
from mmkd.train_config import TrainConfig, load_train_config

REPO = Path(__file__).resolve().parents[1]
MODELS = ("teacher", "before", "mse", "mmkd")  # the table's rows, in order
RUN_PARTS = ("corpus", "student", "teacher_cache_train", "teacher_cache_dev")  # what --run must hold


def recipe_ds_config(cfg: TrainConfig) -> dict:
    """The DeepSpeed JSON a TrainConfig trains with: its ds_config with its `ds` changes (as `mmkd train` loads it)."""
    return load_ds_config(cfg.ds_config, cfg.ds)


def global_batch(cfg: TrainConfig) -> int:
    """Pairs per optimizer step on one rank (micro-batch x accumulation) of the TrainConfig's DeepSpeed JSON."""
    micro, accumulation = check_batch_sizes(recipe_ds_config(cfg), cfg.ds_config, world_size=1)
    return micro * accumulation


def mse_batch_and_warmup(cfg: TrainConfig, mse_batch: int) -> tuple[int, int]:
    """The MSE arm's pairs per step (mse_batch, or the recipe's when 0) and warm-up steps: the recipe's warm-up
    over the same number of pairs (rounded), so that a smaller batch warms up over as many pairs as MMKD does."""
    recipe_batch = global_batch(cfg)
    batch = mse_batch or recipe_batch
    warmup = recipe_ds_config(cfg).get("scheduler", {}).get("params", {}).get("warmup_num_steps", 0)
    return batch, round(warmup * recipe_batch / batch)


def recipe_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe with the run's inputs and --mmkd-args, as the mmkd arm resolves it: what both arms share
    (alpha, max_length, the DeepSpeed JSON with its `ds` changes: batch, warm-up) and the teacher."""
    run = Path(args.run)
    return load_train_config(args.recipe, [f"--corpus={run / 'corpus'}", f"--student={run / 'student'}",
                                           f"--teacher_cache={run / 'teacher_cache_train'}",
                                           *shlex.split(args.mmkd_args)])


def max_steps(args: argparse.Namespace) -> int:
    """The step bound of both arms: --steps, else the recipe's max_steps."""
    return args.steps or recipe_config(args).max_steps


def run_mmkd(args: argparse.Namespace, out: Path) -> dict:
    """Train the recipe for args.minutes of loop time (0: no bound) and at most max_steps(args) steps into
    out/; {"steps", "pairs", "seconds": training-loop seconds as the run measured them, "model", ...}."""
    run = Path(args.run)
    command = [sys.executable, "-m", "mmkd", "train", args.recipe, f"--corpus={run / 'corpus'}",
               f"--student={run / 'student'}", f"--teacher_cache={run / 'teacher_cache_train'}",
               f"--dev_teacher_cache={run / 'teacher_cache_dev'}", f"--output_dir={out}",
               f"--max_time_minutes={args.minutes}", f"--max_steps={max_steps(args)}", "--eval_interval=0",
               "--save_interval=1000000", f"--seed={args.seed}", "--progress_bar=false", *shlex.split(args.mmkd_args)]
    print("[bench] mmkd: $ " + " ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"mmkd train failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-3000:]}")
    steps = int(re.search(r"mmkd train: (\d+) of \d+ steps", result.stdout).group(1))
    cfg = load_train_config(str(out / "export" / "train_config.json"))
    last = checkpoint_dir.complete_checkpoints(out / "checkpoints")[0]  # written at the end of every run
    seconds = checkpoint_dir.read_manifest(out / "checkpoints" / last)["loop"]["train_seconds"]
    return {"steps": steps, "batch": global_batch(cfg), "pairs": steps * global_batch(cfg), "seconds": seconds,
            "process_seconds": time.perf_counter() - start, "model": str(out / "export" / "sentence_transformers"),
            "hf_model": str(out / "export" / "hf")}


def run_mse(args: argparse.Namespace, out: Path) -> dict:
    """Train the MSE baseline for args.minutes on the recipe's draw of pairs, towards the teacher's sentence
    embeddings from the run's teacher cache (the targets of MMKD's SentA); {"steps", "pairs", "seconds", "model"}."""
    cfg = recipe_config(args)
    train = load_corpus(Path(args.run) / "corpus")["train"]
    rows = LanguageSampler(column(train, "lang"), cfg.alpha, seed=args.seed).global_indices().tolist()
    src, tgt = column(train, "src"), column(train, "tgt")
    english, translations = [src[i] for i in rows], [tgt[i] for i in rows]
    targets = TeacherCache(Path(args.run) / "teacher_cache_train").sentence_embeddings(rows).float()  # SentA's targets
    init = save_sentence_transformer(load_student(Path(args.run) / "student"), out / "init", cfg.max_length,
                                     normalize=False)
    batch, warmup = mse_batch_and_warmup(cfg, args.mse_batch)
    config = MSEBaselineConfig(total_steps=max_steps(args), budget_seconds=60.0 * args.minutes, batch_size=batch,
                               warmup_steps=warmup,
                               learning_rate=args.mse_lr, max_length=cfg.max_length, seed=args.seed)
    budget = f"{args.minutes} min or {config.total_steps} steps" if args.minutes else f"{config.total_steps} steps"
    print(f"[bench] mse: training for {budget} ({config})", flush=True)
    summary = train_mse_baseline(init, english, translations, targets, out / "model", config)
    return {**summary, "batch": batch, "model": str(out / "model"), "hf_model": str(out / "model")}


def arm(name: str, train_fn, args: argparse.Namespace) -> dict:
    """The arm's summary: reused from OUT/<name>/summary.json when the arm already ran."""
    out = Path(args.out) / name
    file = out / "summary.json"
    if file.is_file():
        print(f"[bench] {name}: already trained, reusing {file}", flush=True)
        return json.loads(file.read_text())
    summary = train_fn(args, out)
    file.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def cached(file: Path, compute):
    """The JSON in `file` when an earlier run wrote it, else compute() written there."""
    if file.is_file():
        print(f"[bench] reusing {file}", flush=True)
        return json.loads(file.read_text())
    value = compute()
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    return value


def over_seeds(runs: list[dict]) -> dict:
    """The catalog transfer checks of one model with several fine-tuning seeds: {"zero_shot_accuracy": their
    mean, "seeds": {seed: zero-shot accuracy}, "runs": the checks}."""
    seeds = {run["settings"]["seed"]: run["zero_shot_accuracy"] for run in runs}
    return {"zero_shot_accuracy": sum(seeds.values()) / len(seeds), "seeds": seeds, "runs": runs}


def transfer_cell(transfer: dict | None) -> str:
    """Mean zero-shot accuracy over the seeds, with their range when there are several."""
    if transfer is None:
        return ""
    seeds = transfer["seeds"].values()
    spread = f" ({min(seeds):.1f}-{max(seeds):.1f})" if len(seeds) > 1 else ""
    return f"{transfer['zero_shot_accuracy']:.1f}{spread}"


def table(results: dict) -> str:
    """Markdown: one row per model; retrieval means (x->y / y->x) in and out of domain, per-language
    test and out-of-domain figures, the catalog transfer, pairs seen and seconds."""
    test, ood = results["retrieval"]["test"], results["retrieval"]["out_of_domain"]
    langs, ood_langs = list(test["languages"]), list(ood["languages"])
    header = (["model", "pairs", "seconds", "test mean", "test high", "test low", "OOD mean", "OOD high", "OOD low",
               "catalog zero-shot acc, mean (range) over seeds"]
              + [f"test {lang}" for lang in langs] + [f"OOD {lang}" for lang in ood_langs])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    for model in MODELS:
        arm_summary = results["arms"].get(model, {})
        test_means, ood_means = direction_means(test, model), direction_means(ood, model)
        per_lang = [means_cell({d: 100 * report["languages"][lang]["models"][model][d] for d in DIRECTIONS})
                    for report, report_langs in ((test, langs), (ood, ood_langs)) for lang in report_langs]
        transfer = results["transfer"].get(model)
        label = f"{model}, {arm_summary['batch']} per step" if "batch" in arm_summary else model
        lines.append("| " + " | ".join([
            label, str(arm_summary.get("pairs", "")), f"{arm_summary['seconds']:.0f}" if arm_summary else "",
            *(means_cell(test_means.get(g)) for g in MEAN_GROUPS),
            *(means_cell(ood_means.get(g)) for g in MEAN_GROUPS),
            transfer_cell(transfer), *per_lang]) + " |")
    return "\n".join(lines) + "\n"


def attach_mmkd_args(argv: list[str]) -> list[str]:
    """argv with `--mmkd-args VALUE` written as `--mmkd-args=VALUE`: argparse takes a lone value that starts with
    "--" (`--mmkd-args '--alpha=0.5'`) for an option and stops with "expected one argument"."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--mmkd-args":
            out[i:i + 2] = [f"--mmkd-args={out[i + 1]}"]
            break
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/main", help="run directory with corpus, student, teacher caches")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "cpu_main.yaml"))
    parser.add_argument("--minutes", type=float, default=20.0, help="training-loop minutes per arm (default 20)")
    parser.add_argument("--steps", type=int, default=0,
                        help="step bound of both arms (default: the recipe's max_steps); set it above what either "
                             "arm reaches in --minutes for equal wall-clock (the schedule then follows the time)")
    parser.add_argument("--out", default="runs/bench_vs_mse")
    parser.add_argument("--ood", default="package:django", help="out-of-domain source (eval retrieval --out-of-domain)")
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mse-lr", type=float, default=1e-4, help="peak lr of the MSE baseline (default 1e-4)")
    parser.add_argument("--mse-batch", type=int, default=0,
                        help="pairs per step of the mse arm (default: the recipe's); its warm-up spans the recipe's "
                             "warm-up pairs")
    parser.add_argument("--mmkd-args", default="", metavar="'--key=value ...'",
                        help="recipe overrides, e.g. '--struct_sent_mode=cross_lingual'; the mse arm follows "
                             "those of what both share (--alpha, --max_length, --ds.* batch and warm-up)")
    parser.add_argument("--skip-transfer", action="store_true", help="no catalog transfer check")
    parser.add_argument("--transfer-seeds", type=int, default=3,
                        help="fine-tuning seeds of the catalog transfer check per model, --seed on (default 3)")
    args = parser.parse_args(attach_mmkd_args(sys.argv[1:] if argv is None else argv))
    try:
        cfg = recipe_config(args)
        global_batch(cfg)  # the recipe, --mmkd-args and the DeepSpeed JSON checked before an arm trains
    except MMKDError as err:
        parser.error(str(err))
    if args.mse_batch < 0:
        parser.error(f"--mse-batch must be >= 1 (0: the recipe's), got {args.mse_batch}")
    missing = [name for name in RUN_PARTS if not (Path(args.run) / name).is_dir()]
    if missing:
        parser.error(f"--run {args.run}: no {', '.join(missing)}; `mmkd pipeline --out {args.run}` builds them")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arms = {"mse": arm("mse", run_mse, args), "mmkd": arm("mmkd", run_mmkd, args)}
    corpus = Path(args.run) / "corpus"
    models = {"teacher": "teacher", "before": str(Path(args.run) / "student"),
              **{name: summary["model"] for name, summary in arms.items()}}
    retrieval = cached(out / "retrieval.json", lambda: {
        name: evaluate_retrieval(corpus, models, pool=args.pool, seed=args.seed, max_length=cfg.max_length,
                                 out_of_domain=source)
        for name, source in (("test", None), ("out_of_domain", args.ood))})
    transfer = {} if args.skip_transfer else {
        name: over_seeds([cached(out / "transfer" / f"{name}.seed{seed}.json",
                                 lambda model=model, seed=seed: catalog_transfer(corpus, model, seed=seed))
                          for seed in range(args.seed, args.seed + args.transfer_seeds)])
        for name, model in (("teacher", "teacher"), *((n, s["hf_model"]) for n, s in arms.items()))}
    results = {"arms": arms, "minutes": args.minutes, "recipe": args.recipe, "retrieval": retrieval,
               "transfer": transfer, "command": " ".join(sys.argv)}
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    markdown = table(results)
    (out / "table.md").write_text(markdown)
    print(markdown, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
