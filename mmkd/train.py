"""Distil the English teacher into the multilingual student on DeepSpeed (mmkd-method.md).

  one process:        python -m mmkd.train recipe.yaml --max_steps=100
  two ranks on a CPU: OMP_NUM_THREADS=1 deepspeed --num_gpus 2 --module mmkd.train recipe.yaml
  eight GPUs:         deepspeed --num_gpus 8 --module mmkd.train recipe.yaml \\
                          --ds_config=ds_configs/gpu_bf16_zero2.json
  continue a run:     the same command with --resume
  also:               mmkd train recipe.yaml --key=value ...   (one process)

Every form runs `mmkd train` (mmkd/cli.py: the launcher's --local_rank, errors, exit codes). The recipe is
a TrainConfig (mmkd/train_config.py): JSON/YAML file, then --key=value overrides. Batch sizes, lr,
optimizer, scheduler, precision and ZeRO stage come from its ds_config JSON.

A run is a `Distillation`: `setup` (data, teacher, student, engine, loop state, micro-batches), `train`
(the loop: step, count, log, evaluate_dev, save_checkpoint) and `finish` (the export); `mmkd profile`
and scripts/bench_step.py time its `step` after the same `setup`.
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

from mmkd import checkpointing, cli, master_weights, monitoring
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
from mmkd.loop_state import LoopState
from mmkd.models.teacher import TeacherOutputs, load_teacher
from mmkd.objectives.combined import TERMS, LossWeights, MMKDLoss, MMKDLossOutput
from mmkd.phases import phase
from mmkd.schedule import RunBudget, schedule_warnings, set_schedule_iteration
from mmkd.step_health import StepHealth
from mmkd.teacher_cache import TeacherCache
from mmkd.teacher_cache.build import teacher_precision
from mmkd.teacher_cache.reader import CachedTeacherCollator
from mmkd.train_config import TrainConfig, save_train_config

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


class MicroBatches:
    """This rank's collated training micro-batches, epoch after epoch, from a data position on.

    `epoch` and `consumed` (global samples of that epoch handed out, all ranks) say where the next
    micro-batch comes from; they advance as batches are handed out, so the position read between
    two optimizer steps is exactly where the data stands (the loop state a checkpoint records).
    """

    def __init__(self, dataset: IndexedSplit, sampler: LanguageSampler,
                 collator: MMKDCollator | CachedTeacherCollator, micro: int, world: int,
                 num_workers: int, epoch: int = 0, consumed: int = 0) -> None:
        self.dataset, self.sampler, self.collator = dataset, sampler, collator
        self.micro, self.world, self.num_workers = micro, world, num_workers
        self.epoch, self.consumed = epoch, consumed
        self.batches = self.from_position()

    def __iter__(self) -> MicroBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self.batches)

    def from_position(self) -> Iterator[dict[str, Any]]:
        while True:
            self.sampler.set_epoch(self.epoch, self.consumed)
            self.collator.set_epoch(self.epoch)
            loader = DataLoader(self.dataset, batch_size=self.micro, sampler=self.sampler, collate_fn=self.collator,
                                drop_last=True, num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                                generator=torch.Generator())  # not the global RNG
            for batch in loader:
                self.consumed += self.micro * self.world
                yield batch
            self.epoch += 1
            self.consumed = 0


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

    def micro_batches(self, num_workers: int, epoch: int = 0, consumed: int = 0) -> MicroBatches:
        """This rank's training micro-batches from data position (epoch, consumed) on."""
        return MicroBatches(IndexedSplit(self.corpus["train"]), self.sampler, self.train_collator, self.micro,
                            self.world, num_workers, epoch, consumed)


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
                    struct_sent_mode=cfg.struct_sent_mode,
                    struct_bank=struct_bank(cache, cfg.struct_bank_size, cfg.seed),
                    struct_sent_detach_x=cfg.struct_sent_detach_x)
    terms = [name for name in TERMS if cfg.weights[name] > 0]
    flops = MicroStepFlops(EncoderShape.of(student.mlm.config), teacher.hidden_size, loss, world,
                           EncoderShape.of(teacher.model.config) if cfg.live_teacher else None,
                           d_sentence=teacher.sentence_size)
    train_collator = collator if cache is None else CachedTeacherCollator(collator, cache)
    return Setup(ds_config, rank, world, corpus, teacher, cache, dev_cache, sampler, micro, accumulation,
                 steps_per_epoch, total_steps, student, loss, collator, train_collator, terms, flops)


def struct_bank(cache: TeacherCache | None, size: int, seed: int) -> torch.Tensor | None:
    """The teacher's sentence embeddings (size, d_E) fp32 of `size` distinct English sentences of the train
    split, drawn from `seed`: the same bank on every rank and on resume. None for size 0.
    Raises MMKDError when the split has fewer distinct sentences."""
    if size == 0 or cache is None:
        return None
    _, first_rows = np.unique(cache.index, return_index=True)  # one row per distinct sentence
    if size > len(first_rows):
        raise MMKDError(f"train config: struct_bank_size={size} is more than the {len(first_rows)} distinct "
                        f"English sentences of the train split ({cache.root})")
    drawn = torch.randperm(len(first_rows), generator=torch.Generator().manual_seed(seed))[:size]
    return cache.sentence_embeddings(sorted(first_rows[drawn.numpy()].tolist())).float()


@contextmanager
def rank_zero_first(rank: int) -> Iterator[None]:
    """Rank 0 runs the body first, then the other ranks (all ranks must enter)."""
    if rank != 0:
        dist.barrier()
    yield
    if rank == 0:
        dist.barrier()


def optimizer_step(engine: DeepSpeedEngine, batches: Iterator[dict[str, Any]], cache: TeacherCache | None,
                   teacher: Teacher, accumulation: int) -> list[tuple[dict[str, Any], MMKDLossOutput]]:
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


class Distillation:
    """A distillation run, split as torchtune's recipes are: `setup` builds everything before the first
    optimizer step, `train` runs the loop, `finish` exports the student and sums the run up.

    `mmkd train` runs the three (`train` below). `mmkd profile` and scripts/bench_step.py build it with
    `measuring=True`, run `setup` and time `step`: the same data, engine, fp32 master weights, seeds,
    teacher placement and micro-batches as training, without output_dir (no checks, resume, train
    config or TensorBoard text), the start-up lines or dev evaluation.
    """

    # built by setup
    run: Setup
    engine: DeepSpeedEngine  # of DistillationModule
    state: LoopState
    batches: MicroBatches
    tag: str | None  # the newest checkpoint of this run
    dev_batches: list[tuple[str, list[int], float]]  # this rank's dev batches (dev_plan); [] = no evaluation
    dev_collator: MMKDCollator  # a copy with its own epoch (0): dev batches are masked the same every time
    dev_languages: list[str]
    peak: float  # TFLOP/s per device, for MFU
    # kept by train
    budget: RunBudget
    health: StepHealth
    bar: tqdm
    throughput: monitoring.Throughput
    sums: torch.Tensor  # (1 + terms,) float64: total and each computed term, summed since the last log
    logged_at: int  # the step of the last log
    lr: float  # the lr the last step ran at
    last: dict[str, float]  # the last logged train/ scalars, with "step"
    stopped_by: str  # "max_steps" or "max_time_minutes"

    def __init__(self, cfg: TrainConfig, ds_config: dict[str, Any], measuring: bool = False) -> None:
        self.cfg, self.ds_config, self.measuring = cfg, ds_config, measuring

    # ---- setup: everything is built before the first step; the teacher outside any zero.Init ----
    def setup(self, run: Setup | None = None) -> None:
        """Data, teacher, student and loss (`prepare`, or `run` prepared from the same cfg and ds_config),
        the engine in train mode, the loop state (a resumed checkpoint's, else step 0) and the
        micro-batches from its data position. The teacher goes to the engine's device when it runs: in
        the loop (no train cache) or at dev evaluation (no dev cache). Raises MMKDError (bad config,
        output_dir, checkpoint)."""
        cfg = self.cfg
        if not self.measuring:
            checkpointing.check_output_dir(cfg)
        run = self.run = run or prepare(cfg, self.ds_config)
        if cfg.overwrite and run.rank == 0 and not self.measuring:
            checkpointing.clear_output_dir(cfg.output_dir)
        dist.barrier()
        engine = self.engine = build_engine(run.student, run.loss, run.ds_config, source=cfg.ds_config)
        monitoring.own_monitor(engine)  # one TensorBoard namespace, against optimizer steps
        master_weights.load_fp32_student(engine, cfg.student, run.teacher.hidden_size, run.teacher.sentence_size)
        # Seeded again: building the student draws random numbers under ZeRO-3 (zero.Init initialises the values it
        # partitions) and not in the other stages; dropout and masking then start from the same state in every stage.
        seed_everything(cfg.seed + run.rank)
        self.dev_batches = [] if self.measuring else dev_plan(run.corpus["dev"]["lang"], run.micro, cfg.eval_batches,
                                                           run.rank, run.world)
        if run.cache is None or (self.dev_batches and run.dev_cache is None):
            run.teacher.model.to(engine.device)
        self.dev_collator = copy.copy(run.collator)
        self.dev_languages = sorted(set(run.corpus["dev"]["lang"]))
        self.peak = monitoring.peak_tflops(cfg.peak_tflops, compute_dtype(run.ds_config), engine.device)
        self.state, self.tag = LoopState(), None  # tag: the newest checkpoint of this run
        if not self.measuring:
            self.announce()
            if cfg.resume or cfg.resume_from is not None:
                self.state, self.tag = checkpointing.load_checkpoint(engine, cfg)  # last: it restores the RNG states
            self.record_config()  # after the resume checks: a refused resume leaves the run's train config as it was
        engine.train()  # from_pretrained leaves the student in eval mode, dropout off
        self.batches = run.micro_batches(cfg.num_workers, self.state.epoch, self.state.consumed)

    def announce(self) -> None:
        """The start-up lines (rank 0): geometry, steps, sizes, precision, global batch, schedule warnings."""
        run, engine = self.run, self.engine
        if run.rank != 0:
            return
        dtype = compute_dtype(run.ds_config)
        n_params = parameter_count(engine.module.student)
        print(f"mmkd train: {run.world} rank(s), micro-batch {run.micro} x accumulation {run.accumulation}, "
              f"{run.total_steps} steps ({run.steps_per_epoch}/epoch), student {n_params / 1e6:.2f}M params, "
              f"teacher {'live' if run.cache is None else 'cached'}, compute dtype "
              f"{str(dtype).removeprefix('torch.')} (ZeRO stage {engine.zero_optimization_stage()}), "
              f"peak {self.peak:.2f} TFLOP/s per device", flush=True)
        print(f"mmkd train: {global_batch_note(run.ds_config, run.micro * run.accumulation * run.world)}", flush=True)
        warnings = [*schedule_warnings(run.ds_config, run.total_steps), emulated_bf16_warning(dtype, engine.device)]
        for warning in filter(None, warnings):
            print(f"mmkd train: warning: {warning}", flush=True)

    def record_config(self) -> None:
        """Rank 0: output_dir/train_config.json and the TensorBoard text run/config."""
        if self.run.rank == 0:
            Path(self.cfg.output_dir).mkdir(parents=True, exist_ok=True)
            save_train_config(self.cfg, Path(self.cfg.output_dir) / checkpointing.TRAIN_CONFIG)
            monitoring.write_config_text(self.engine, {"train_config": self.cfg.to_dict(),
                                                       "ds_config": self.run.ds_config})

    def step(self) -> list[tuple[dict[str, Any], MMKDLossOutput]]:
        """One optimizer step on the next micro-batches (`optimizer_step`)."""
        return optimizer_step(self.engine, self.batches, self.run.cache, self.run.teacher, self.run.accumulation)

    # ---- the loop: micro-steps (DeepSpeed accumulates and steps at the boundary), log, eval, save ----
    def train(self) -> None:
        """Optimizer steps from the loop state on until total_steps or max_time_minutes; each: set the lr,
        `step`, `count` it, then `log`, `evaluate_dev` and `save_checkpoint` as their intervals say (and
        all three after the last step)."""
        cfg, run, engine, state = self.cfg, self.run, self.engine, self.state
        self.budget = RunBudget(run.total_steps, 60 * cfg.max_time_minutes, elapsed_before=state.train_seconds)
        self.health = StepHealth(cfg.max_skipped_steps, changed_before=state.changed_steps)
        self.bar = monitoring.progress_bar(run.total_steps, state.step, run.rank == 0 and cfg.progress_bar)
        self.throughput = monitoring.Throughput(run.world, self.peak)
        self.sums = torch.zeros(len(run.terms) + 1, dtype=torch.float64, device=engine.device)
        self.logged_at, self.last, self.stopped_by = state.step, {}, "max_steps"
        self.lr = engine.get_lr()[0]
        while state.step < run.total_steps:
            set_schedule_iteration(engine.lr_scheduler, self.budget.iteration(state.step + 1, state.train_seconds))
            self.lr = engine.get_lr()[0]
            self.count(self.step())
            time_up = self.budget.time_up(state.train_seconds)
            final = state.step == run.total_steps or time_up
            self.bar.update(1)
            if state.step % cfg.log_interval == 0 or final:
                self.log()
            evaluate_now = bool(self.dev_batches) and (
                (cfg.eval_interval > 0 and state.step % cfg.eval_interval == 0) or final)
            if evaluate_now:
                self.evaluate_dev()
            save_now = state.step % cfg.save_interval == 0 or final
            if save_now:
                self.save_checkpoint()
            if time_up:
                self.stopped_by = "max_time_minutes"
                break
            if evaluate_now or save_now:
                self.throughput.restart()  # evaluation and checkpoints are not training time
        self.bar.close()

    def count(self, done: list[tuple[dict[str, Any], MMKDLossOutput]]) -> None:
        """Advance the loop state past the optimizer step that made `done` (its micro-batches with their
        loss outputs): step, data position, loop time (rank 0's), and whether any rank skipped it
        (StepHealth raises MMKDError at max_skipped_steps in a row); add its losses and batches to the log."""
        run, engine, state = self.run, self.engine, self.state
        nonfinite = torch.zeros((), dtype=torch.float64, device=engine.device)  # no sync per micro-batch
        for batch, out in done:
            nonfinite += (~torch.isfinite(out.total.detach())).double()
            self.sums += torch.stack([out.total.detach().double()] + [out.terms[name].double() for name in run.terms])
            self.throughput.add_batch(batch, run.flops(batch))
        state.step += 1
        state.epoch, state.consumed = self.batches.epoch, self.batches.consumed
        state.train_seconds, skipped = agreed(self.budget.elapsed(), nonfinite + (not engine.was_step_applied()),
                                              engine.device)
        self.health.record(state.step, skipped, self.lr)
        state.changed_steps = self.health.changed
        if skipped and run.rank == 0:
            self.bar.write(self.health.message(state.step))

    def log(self) -> None:
        """The train/ scalars (mmkd/monitoring.py): loss and terms averaged over the steps since the last
        log and all ranks, throughput, lr, skipped steps, gradient norm; the progress bar's postfix."""
        run, engine, step = self.run, self.engine, self.state.step
        dist.all_reduce(self.sums)
        means = (self.sums / (run.accumulation * run.world * (step - self.logged_at))).tolist()
        self.last = {"step": step, "loss": means[0], **dict(zip(run.terms, means[1:])), **self.throughput.rates(),
                     "lr": self.lr, "skipped_steps": self.health.skipped}
        grad_norm = engine.get_global_grad_norm()
        if grad_norm is not None:
            self.last["grad_norm"] = float(grad_norm)
        monitoring.write_scalars(engine, "train", {k: v for k, v in self.last.items() if k != "step"})
        self.bar.set_postfix(loss=f"{self.last['loss']:.4f}", lr=f"{engine.get_lr()[0]:.2e}",
                             samples_s=f"{self.last['samples_per_s']:.1f}")
        self.sums.zero_()
        self.logged_at = step

    def evaluate_dev(self) -> None:
        """The dev/ scalars: dev loss, terms and languages (`evaluate`), and translation retrieval when
        eval_retrieval; one console line (rank 0)."""
        cfg, run, engine = self.cfg, self.run, self.engine
        dev = evaluate(engine, IndexedSplit(run.corpus["dev"]), self.dev_batches, self.dev_collator, run.dev_cache,
                       run.teacher, run.terms, self.dev_languages,
                       progress=run.rank == 0 and cfg.progress_bar)
        if cfg.eval_retrieval:
            dev.update(dev_retrieval(engine.module.student, run.corpus["dev"], DEV_RETRIEVAL_POOL, cfg.seed,
                                     cfg.max_length, run.micro, engine.device))
        monitoring.write_scalars(engine, "dev", dev)
        if run.rank == 0:
            self.bar.write(f"step {self.state.step}: dev loss {dev['loss']:.4f} " +
                           " ".join(f"{name} {dev[name]:.4f}" for name in run.terms))

    def save_checkpoint(self) -> None:
        """Checkpoint step<N> with the loop state (mmkd/checkpointing.py); every rank."""
        self.tag = checkpointing.save_checkpoint(self.engine, self.cfg, self.state)

    # ---- the end: the export ----
    def finish(self) -> dict[str, Any]:
        """Export the student from the last checkpoint (train config `export`; MMKDError when no step
        changed it); returns {"rank", "steps", "total_steps", "stopped_by", "progress", "lr", "skipped",
        "last": the last logged scalars, "export": its folder or None}."""
        cfg, run, state = self.cfg, self.run, self.state
        export_dir = None
        if cfg.export and self.tag is not None and self.health.changed == 0:
            raise MMKDError(f"no optimizer step changed the student ({state.step} steps: {self.health.skipped} "
                            f"skipped, the others at lr 0); not exporting it (checkpoint {self.tag} is saved)")
        if cfg.export and self.tag is not None:
            probe = run.corpus["dev"] if len(run.corpus["dev"]) else run.corpus["train"]
            texts = probe["src"][:4] + probe["tgt"][:4]
            export_dir = checkpointing.export(self.engine, cfg, self.tag, run.teacher, texts)
        return {"rank": run.rank, "steps": state.step, "total_steps": run.total_steps, "stopped_by": self.stopped_by,
                "progress": self.budget.progress(state.step, state.train_seconds), "lr": self.lr,
                "skipped": self.health.skipped, "last": self.last, "export": export_dir}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the recipe: setup, the loop, the export; returns `Distillation.finish`'s summary."""
    distillation = Distillation(cfg, load_ds_config(cfg.ds_config, cfg.ds))
    distillation.setup()
    distillation.train()
    return distillation.finish()


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
    """`python -m mmkd.train ARGS` and `deepspeed --module mmkd.train ARGS`: `mmkd train ARGS` (mmkd/cli.py)."""
    return cli.main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
