"""Distil the English teacher into the multilingual student on DeepSpeed (mmkd-method.md).

  one process:        python -m mmkd.train recipe.yaml --max_steps=100
  two ranks on a CPU: OMP_NUM_THREADS=1 deepspeed --num_gpus 2 --module mmkd.train recipe.yaml
  eight GPUs:         deepspeed --num_gpus 8 --module mmkd.train recipe.yaml \\
                          --ds_config=ds_configs/gpu_bf16_zero2.json
  continue a run:     the same command with --resume
  also:               mmkd train recipe.yaml --key=value ...   (one process)

The recipe is a TrainConfig (mmkd/train_config.py): JSON/YAML file, then --key=value overrides.
Batch sizes, lr, optimizer, scheduler, precision and ZeRO stage come from its ds_config JSON.
"""

from __future__ import annotations

import copy
import math
import random
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import deepspeed.comm as dist
import numpy as np
import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mmkd import checkpointing, master_weights, monitoring
from mmkd.corpus.schema import load_corpus
from mmkd.data import LanguageSampler, MMKDCollator
from mmkd.engine import (
    batch_geometry,
    build_engine,
    build_student,
    compute_dtype,
    emulated_bf16_warning,
    init_distributed,
    load_ds_config,
    parameter_count,
    with_run_values,
)
from mmkd.errors import MMKDError
from mmkd.evaluation.retrieval import DEV_RETRIEVAL_POOL, dev_retrieval
from mmkd.flops import EncoderShape, MicroStepFlops
from mmkd.models.teacher import TeacherOutputs, load_teacher
from mmkd.objectives.combined import TERMS, LossWeights, MMKDLoss, MMKDLossOutput
from mmkd.phases import phase
from mmkd.schedule import RunBudget, schedule_warnings, set_schedule_iteration
from mmkd.step_health import StepHealth
from mmkd.teacher_cache import TeacherCache
from mmkd.teacher_cache.build import teacher_precision
from mmkd.teacher_cache.reader import CachedTeacherCollator
from mmkd.train_config import TrainConfig, config_key_help, load_train_config, save_train_config

if TYPE_CHECKING:
    import datasets
    from deepspeed import DeepSpeedEngine

    from mmkd.models.student import MMKDStudent
    from mmkd.models.teacher import Teacher


class IndexedSplit(Dataset):
    """Rows of a corpus split as collator examples: the row plus its `index` (the teacher-cache key)."""

    def __init__(self, split: datasets.Dataset) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.split[index], "index": index}


def split_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """(recipe file or None, --key=value overrides); drops the launcher's --local_rank=N."""
    args = [arg for arg in argv if not arg.startswith(("--local_rank", "--local-rank"))]
    if args and not args[0].startswith("--"):
        return args[0], args[1:]
    return None, args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on `device`, copied non-blocking (asynchronous from the DataLoader's pinned memory)."""
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value
            for key, value in batch.items()}


def teacher_outputs(batch: dict[str, Any], cache: TeacherCache | None, teacher: Teacher, device: torch.device
                    ) -> TeacherOutputs:
    """TeacherOutputs (float32) on `device` for the x of a batch: the float16 states the DataLoader
    looked up (CachedTeacherCollator), else a lookup in `cache` here (a CPU batch: dev evaluation),
    else the live teacher on `device` (under autocast on a GPU; a teacher with a prompt reads batch["src"])."""
    if "teacher_token_states" in batch:
        found = TeacherOutputs(batch["teacher_token_states"], batch["teacher_sentence_embedding"],
                               batch["teacher_attention_mask"])
    elif cache is not None:
        found = cache.lookup(batch)
    else:
        with teacher_precision(device):
            found = teacher.encode(batch["teacher_input_ids"].to(device), batch["teacher_attention_mask"].to(device),
                                   batch["src"])
    return TeacherOutputs(found.token_states.to(device, non_blocking=True).float(),
                          found.sentence_embedding.to(device, non_blocking=True).float(),
                          found.attention_mask.to(device, non_blocking=True))


def micro_batches(dataset: IndexedSplit, sampler: LanguageSampler, collator: MMKDCollator | CachedTeacherCollator,
                  micro: int, world: int, loop: dict[str, int], num_workers: int) -> Iterator[dict[str, Any]]:
    """Collated training micro-batches from loop["epoch"], loop["consumed"] on, epoch after epoch.

    loop["consumed"] (global samples of the epoch, all ranks) and loop["epoch"] advance as batches
    are handed out, so a checkpoint taken between steps records exactly where the data stands.
    """
    while True:
        sampler.set_epoch(loop["epoch"], loop["consumed"])
        collator.set_epoch(loop["epoch"])
        loader = DataLoader(dataset, batch_size=micro, sampler=sampler, collate_fn=collator, drop_last=True,
                            num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                            generator=torch.Generator())  # not the global RNG
        for batch in loader:
            loop["consumed"] += micro * world
            yield batch
        loop["epoch"] += 1
        loop["consumed"] = 0


def dev_plan(langs: list[str], micro: int, per_language: int, rank: int, world: int
             ) -> list[tuple[str, list[int], float]]:
    """This rank's dev batches: (language, rows, weight), one language per batch.

    Each language's rows, in order, cut into micro-batches (the first `per_language`; 0 = all);
    the list is dealt round-robin over the ranks and padded with weight-0 repeats so every rank runs
    the same number of forward passes (ZeRO-3 and the gathering losses need that).
    """
    rows_by_lang: dict[str, list[int]] = defaultdict(list)
    for row, lang in enumerate(langs):
        rows_by_lang[lang].append(row)
    batches = []
    for lang in sorted(rows_by_lang):
        rows = rows_by_lang[lang]
        chunks = [rows[start:start + micro] for start in range(0, len(rows), micro)]
        batches += [(lang, chunk, 1.0) for chunk in chunks[:per_language or None]]
    if not batches:
        return []
    mine = batches[rank::world]
    count = math.ceil(len(batches) / world)
    return mine + [(batches[0][0], batches[0][1], 0.0)] * (count - len(mine))


def evaluate(engine: DeepSpeedEngine, dev: IndexedSplit, plan: list[tuple[str, list[int], float]],
             collator: MMKDCollator, cache: TeacherCache | None, teacher: Teacher, terms: list[str],
             languages: list[str], progress: bool = False) -> dict[str, float]:
    """Dev loss, each term and each language's total, averaged over the dev batches of all ranks;
    `progress` shows a bar over this rank's dev batches."""
    # rows: languages; columns: weighted total, weighted terms..., weight
    stats = torch.zeros(len(languages), len(terms) + 2, dtype=torch.float64, device=engine.device)
    engine.eval()
    with torch.no_grad():
        for lang, rows, weight in tqdm(plan, desc="dev evaluation", unit="batch", disable=not progress, leave=False,
                                       dynamic_ncols=True):
            batch = collator([dev[row] for row in rows])
            out = engine(to_device(batch, engine.device), teacher_outputs(batch, cache, teacher, engine.device))
            values = [out.total] + [out.terms[name] for name in terms]
            stats[languages.index(lang), :-1] += weight * torch.stack([v.double() for v in values])
            stats[languages.index(lang), -1] += weight
    engine.train()
    dist.all_reduce(stats)
    overall = stats.sum(dim=0)
    results = {"loss": float(overall[0] / overall[-1])}
    results.update({name: float(overall[1 + i] / overall[-1]) for i, name in enumerate(terms)})
    results.update({f"lang/{lang}": float(stats[i, 0] / stats[i, -1])
                    for i, lang in enumerate(languages) if stats[i, -1] > 0})
    return results


@dataclass
class Setup:
    """What a run builds before its engine; `train`, `mmkd profile` and scripts/bench_step.py share it."""

    ds_config: dict[str, Any]  # with the run's values (engine.with_run_values)
    rank: int
    world: int
    corpus: DatasetDict  # train and dev with their token columns (mmkd.data.token_columns)
    teacher: Teacher  # on the CPU
    cache: TeacherCache | None  # of train, None = live teacher
    dev_cache: TeacherCache | None  # of dev, None = the teacher runs at evaluation
    sampler: LanguageSampler
    micro: int  # micro-batch per rank
    accumulation: int  # micro-batches per optimizer step
    steps_per_epoch: int
    total_steps: int
    student: MMKDStudent  # partitioned under ZeRO-3
    loss: MMKDLoss
    collator: MMKDCollator
    train_collator: MMKDCollator | CachedTeacherCollator  # with the teacher cache's lookup when there is a cache
    terms: list[str]  # computed MMKDLoss terms (weight > 0)
    flops: MicroStepFlops  # FLOPs of one micro-batch, for train/tflops and MFU


def prepare(cfg: TrainConfig, ds_config: dict[str, Any]) -> Setup:
    """Join the process group, seed, and build data, teacher (outside any zero.Init), student and loss."""
    rank, world = init_distributed()
    micro, accumulation = batch_geometry(ds_config, cfg.ds_config)  # DeepSpeed's batch checks, before any loading
    seed_everything(cfg.seed + rank)
    corpus = load_corpus(cfg.corpus)
    teacher = load_teacher(cfg.teacher, layer=cfg.teacher_layer)
    cache = None if cfg.live_teacher else TeacherCache.open(
        cfg.teacher_cache, teacher=teacher, corpus_split=corpus["train"], max_length=cfg.max_length,
        corpus_dir=cfg.corpus)
    dev_cache = None if cfg.dev_teacher_cache is None else TeacherCache.open(
        cfg.dev_teacher_cache, teacher=teacher, corpus_split=corpus["dev"], max_length=cfg.max_length,
        corpus_dir=cfg.corpus)
    steps_per_epoch = math.ceil(len(corpus["train"]) / world) // (micro * accumulation)
    if steps_per_epoch == 0:
        raise MMKDError(f"{cfg.corpus}: {len(corpus['train'])} training pairs do not fill one step of "
                        f"{micro} x {accumulation} x {world} pairs ({cfg.ds_config})")
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    ds_config = with_run_values(ds_config, tensorboard_dir=f"{cfg.output_dir}/tensorboard", total_steps=total_steps)

    student = build_student(cfg.student, teacher.hidden_size, ds_config, teacher.sentence_size)
    collator = MMKDCollator(student.tokenizer, teacher.tokenizer, cfg.max_length, cfg.mlm_probability, cfg.seed)
    with rank_zero_first(rank):  # rank 0 tokenises and writes the token columns' cache files, the others read them
        corpus = DatasetDict({**corpus, "train": collator.columns.of_split(corpus["train"]),
                              "dev": collator.columns.of_split(corpus["dev"])})
    lengths = collator.columns.pair_lengths(corpus["train"]) if cfg.length_group_window > 0 else None
    sampler = LanguageSampler(corpus["train"]["lang"], cfg.alpha, seed=cfg.seed, rank=rank, world_size=world,
                              lengths=lengths, group_size=micro * world, group_window=cfg.length_group_window)
    loss = MMKDLoss(LossWeights(**cfg.weights), tau_w=cfg.tau_w, struct_tau=cfg.struct_tau,
                    struct_form=cfg.struct_form, struct_impl=cfg.struct_impl, gather_negatives=cfg.gather_negatives,
                    gather_sentence_rows=cfg.gather_sentence_rows, gather_token_rows=cfg.gather_token_rows,
                    struct_sent_mode=cfg.struct_sent_mode)
    terms = [name for name in TERMS if cfg.weights[name] > 0]
    flops = MicroStepFlops(EncoderShape.of(student.mlm.config), teacher.hidden_size, loss, world,
                           EncoderShape.of(teacher.model.config) if cfg.live_teacher else None,
                           d_sentence=teacher.sentence_size)
    train_collator = collator if cache is None else CachedTeacherCollator(collator, cache)
    return Setup(ds_config, rank, world, corpus, teacher, cache, dev_cache, sampler, micro, accumulation,
                 steps_per_epoch, total_steps, student, loss, collator, train_collator, terms, flops)


@contextmanager
def rank_zero_first(rank: int) -> Iterator[None]:
    """Rank 0 runs the body first, then the other ranks (all ranks must enter)."""
    if rank != 0:
        dist.barrier()
    yield
    if rank == 0:
        dist.barrier()


def optimizer_step(engine: Any, batches: Iterator[dict[str, Any]], cache: Any, teacher: Any,
                   accumulation: int) -> list[tuple[dict[str, Any], MMKDLossOutput]]:
    """One optimizer step: `accumulation` micro-batches, each forward, backward and engine.step()
    (DeepSpeed updates at the accumulation boundary). Returns each micro-batch (CPU) with its loss
    output. Its parts are the mmkd.phases ranges data, teacher, forward, backward, step."""
    done = []
    for _ in range(accumulation):
        with phase("data"):
            batch = next(batches)  # on the CPU, pinned on a GPU machine
            on_device = to_device(batch, engine.device)
        with phase("teacher"):
            teacher_out = teacher_outputs(on_device, cache, teacher, engine.device)
        with phase("forward"):
            out = engine(on_device, teacher_out)
        with phase("backward"):
            engine.backward(out.total)
        with phase("step"):
            engine.step()
        done.append((batch, out))
    return done


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the recipe; returns {"rank", "steps", "stopped_by", "last": last logged scalars, "export"}."""
    # ---- setup: everything is built before the first step; the teacher outside any zero.Init ----
    checkpointing.check_output_dir(cfg)
    run = prepare(cfg, load_ds_config(cfg.ds_config, cfg.ds))
    rank, world, corpus, teacher, cache = run.rank, run.world, run.corpus, run.teacher, run.cache
    micro, accumulation, total_steps, terms = run.micro, run.accumulation, run.total_steps, run.terms
    if cfg.overwrite and rank == 0:
        checkpointing.clear_output_dir(cfg.output_dir)
    dist.barrier()
    engine = build_engine(run.student, run.loss, run.ds_config, source=cfg.ds_config)
    monitoring.own_monitor(engine)  # one TensorBoard namespace, against optimizer steps
    master_weights.load_fp32_student(engine, cfg.student, teacher.hidden_size, teacher.sentence_size)
    # Seeded again: building the student draws random numbers under ZeRO-3 (zero.Init initialises the values it
    # partitions) and not in the other stages; dropout and masking then start from the same state in every stage.
    seed_everything(cfg.seed + rank)
    dtype = compute_dtype(run.ds_config)
    if cache is None or run.dev_cache is None:
        teacher.model.to(engine.device)  # it runs in the loop or at evaluation
    dev_collator = copy.copy(run.collator)  # its own epoch (0): dev batches are masked the same at every evaluation
    dev_languages = sorted(set(corpus["dev"]["lang"]))
    plan = dev_plan(corpus["dev"]["lang"], micro, cfg.eval_batches, rank, world)
    n_params = parameter_count(engine.module.student)
    peak = monitoring.peak_tflops(cfg.peak_tflops, dtype, engine.device)
    if rank == 0:
        print(f"mmkd train: {world} rank(s), micro-batch {micro} x accumulation {accumulation}, "
              f"{total_steps} steps ({run.steps_per_epoch}/epoch), student {n_params / 1e6:.2f}M params, "
              f"teacher {'live' if cache is None else 'cached'}, compute dtype {str(dtype).removeprefix('torch.')} "
              f"(ZeRO stage {engine.zero_optimization_stage()}), peak {peak:.2f} TFLOP/s per device", flush=True)
        print(f"mmkd train: {global_batch_note(run.ds_config, micro * accumulation * world)}", flush=True)
        for warning in [*schedule_warnings(run.ds_config, total_steps), emulated_bf16_warning(dtype, engine.device)]:
            if warning:
                print(f"mmkd train: warning: {warning}", flush=True)

    loop, tag = {"step": 0, "epoch": 0, "consumed": 0}, None  # tag: the newest checkpoint of this run
    if cfg.resume or cfg.resume_from is not None:
        loop, tag = checkpointing.load_checkpoint(engine, cfg)  # last: it restores the RNG states
    if rank == 0:  # after the resume checks: a refused resume leaves the run's train config as it was
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        save_train_config(cfg, Path(cfg.output_dir) / checkpointing.TRAIN_CONFIG)
        monitoring.write_config_text(engine, {"train_config": cfg.to_dict(), "ds_config": run.ds_config})
    loop.setdefault("changed_steps", loop["step"])  # steps that changed the weights (older checkpoints: all)
    loop.setdefault("train_seconds", 0.0)  # loop time of the runs resumed, for the time-bounded schedule
    engine.train()  # from_pretrained leaves the student in eval mode, dropout off
    batches = micro_batches(IndexedSplit(corpus["train"]), run.sampler, run.train_collator, micro, world, loop,
                            cfg.num_workers)
    throughput = monitoring.Throughput(world, peak)
    bar = monitoring.progress_bar(total_steps, loop["step"], rank == 0 and cfg.progress_bar)
    budget = RunBudget(total_steps, 60 * cfg.max_time_minutes, elapsed_before=loop["train_seconds"])
    health = StepHealth(cfg.max_skipped_steps, changed_before=loop["changed_steps"])
    elapsed = loop["train_seconds"]  # the first step of a run starts where the resumed runs stopped
    lr = engine.get_lr()[0]
    stopped_by, last, logged_at = "max_steps", {}, loop["step"]
    sums = torch.zeros(len(terms) + 1, dtype=torch.float64, device=engine.device)

    # ---- the loop: micro-steps (DeepSpeed accumulates and steps at the boundary), log, eval, save ----
    while loop["step"] < total_steps:
        set_schedule_iteration(engine.lr_scheduler, budget.iteration(loop["step"] + 1, elapsed))
        lr = engine.get_lr()[0]
        nonfinite = torch.zeros((), dtype=torch.float64, device=engine.device)  # no sync per micro-batch
        for batch, out in optimizer_step(engine, batches, cache, teacher, accumulation):
            nonfinite += (~torch.isfinite(out.total.detach())).double()
            sums += torch.stack([out.total.detach().double()] + [out.terms[name].double() for name in terms])
            throughput.add_batch(batch, run.flops(batch))
        loop["step"] += 1
        step = loop["step"]
        elapsed, skipped = agreed(budget.elapsed(), nonfinite + (not engine.was_step_applied()), engine.device)
        loop["train_seconds"] = elapsed
        health.record(step, skipped, lr)
        loop["changed_steps"] = health.changed
        if skipped and rank == 0:
            bar.write(health.message(step))
        time_up = budget.time_up(elapsed)
        final = step == total_steps or time_up
        bar.update(1)

        if step % cfg.log_interval == 0 or final:
            dist.all_reduce(sums)
            means = (sums / (accumulation * world * (step - logged_at))).tolist()
            last = {"step": step, "loss": means[0], **dict(zip(terms, means[1:])), **throughput.rates(),
                    "lr": lr, "skipped_steps": health.skipped}
            grad_norm = engine.get_global_grad_norm()
            if grad_norm is not None:
                last["grad_norm"] = float(grad_norm)
            monitoring.write_scalars(engine, "train", {k: v for k, v in last.items() if k != "step"})
            bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{engine.get_lr()[0]:.2e}",
                            samples_s=f"{last['samples_per_s']:.1f}")
            sums.zero_()
            logged_at = step
        evaluate_now = bool(plan) and ((cfg.eval_interval > 0 and step % cfg.eval_interval == 0) or final)
        save_now = step % cfg.save_interval == 0 or final
        if evaluate_now:
            dev = evaluate(engine, IndexedSplit(corpus["dev"]), plan, dev_collator, run.dev_cache, teacher, terms,
                           dev_languages, progress=rank == 0 and cfg.progress_bar)
            if cfg.eval_retrieval:
                dev.update(dev_retrieval(engine.module.student, corpus["dev"], DEV_RETRIEVAL_POOL, cfg.seed,
                                         cfg.max_length, micro, engine.device))
            monitoring.write_scalars(engine, "dev", dev)
            if rank == 0:
                bar.write(f"step {step}: dev loss {dev['loss']:.4f} " +
                          " ".join(f"{name} {dev[name]:.4f}" for name in terms))
        if save_now:
            tag = checkpointing.save_checkpoint(engine, cfg, loop)
        if time_up:
            stopped_by = "max_time_minutes"
            break
        if evaluate_now or save_now:
            throughput.restart()  # evaluation and checkpoints are not training time
    bar.close()

    export_dir = None
    if cfg.export and tag is not None and health.changed == 0:
        raise MMKDError(f"no optimizer step changed the student ({loop['step']} steps: {health.skipped} skipped, "
                        f"the others at lr 0); not exporting it (checkpoint {tag} is saved)")
    if cfg.export and tag is not None:
        probe = corpus["dev"] if len(corpus["dev"]) else corpus["train"]
        texts = probe["src"][:4] + probe["tgt"][:4]
        export_dir = checkpointing.export(engine, cfg, tag, teacher, texts)
    return {"rank": rank, "steps": loop["step"], "total_steps": total_steps, "stopped_by": stopped_by,
            "progress": budget.progress(loop["step"], elapsed), "lr": lr, "skipped": health.skipped,
            "last": last, "export": export_dir}


def global_batch_note(ds_config: dict[str, Any], global_batch: int) -> str:
    """One line saying what keeps the global batch (pairs per optimizer step, all ranks) as the world size changes."""
    if "train_batch_size" in ds_config:
        return (f"global batch {global_batch} (train_batch_size in the DeepSpeed JSON): kept on any number of ranks "
                f"by adjusting gradient accumulation")
    return (f"global batch {global_batch} = micro-batch x accumulation x ranks: it changes with the number of "
            f"ranks (state train_batch_size in the DeepSpeed JSON to keep it)")


def agreed(elapsed: float, skipped: torch.Tensor, device: torch.device) -> tuple[float, bool]:
    """(rank 0's `elapsed` seconds, whether `skipped` (a count, 0-dim, on `device`) is > 0 on any rank),
    the same on every rank: ranks must stop at the same step and follow the same schedule."""
    value = torch.stack([torch.tensor(elapsed if dist.get_rank() == 0 else 0.0, dtype=torch.float64, device=device),
                         skipped.double()])
    dist.all_reduce(value)
    return float(value[0]), bool(value[1] > 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m mmkd.train` and `deepspeed --module mmkd.train`."""
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(f"{__doc__}\ntrain config keys:\n{config_key_help()}")
        return 0
    path, overrides = split_args(argv)
    try:
        summary = train(load_train_config(path, overrides))
    except MMKDError as err:
        print(f"mmkd train: error: {err}", file=sys.stderr)
        return 2
    if summary["rank"] == 0:
        print(f"mmkd train: {summary['steps']} of {summary['total_steps']} steps, stopped by "
              f"{summary['stopped_by']}; schedule at {summary['progress']:.0%} (lr {summary['lr']:.3g}), "
              f"{summary['skipped']} skipped steps; export: {summary['export'] or 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
