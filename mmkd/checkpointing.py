"""Checkpoints that resume exactly, and the final export of the trained student.

A checkpoint is a folder `output_dir/checkpoints/step<N>/` (mmkd/checkpoint_dir.py: it appears
under that name only when complete) holding DeepSpeed's files (module, optimizer, scheduler),
`rng_rank<r>.safetensors` per rank (python, numpy, torch and accelerator RNG states: dropout
differs per rank, so every rank restores its own) and `mmkd_checkpoint.json`, written last: the
data position and step ("loop"), the world size, batch geometry, ZeRO stage, precision, the train
config and every file's size. mmkd's own state is JSON and safetensors, which loading cannot turn
into code; DeepSpeed's files are pickles that its loader unpickles: a checkpoint folder is trusted
input.

The export (`output_dir/export/`, written into `export.partial/` and renamed when complete) takes
the fp32 weights: under ZeRO they are gathered from the checkpoint's optimizer shards
(zero_to_fp32), so they are the master weights, not the bf16 copies the engine computes with (under
bf16/fp16 ZeRO-1/2 the master weights start from the fp32 student: mmkd/master_weights.py). It writes
  hf/                     the student directory (MMKDStudent.save: the HF masked LM, tokenizer,
                          projection heads), loadable with AutoModelForMaskedLM (or a task class,
                          e.g. AutoModelForSequenceClassification, to fine-tune);
  sentence_transformers/  Transformer + mean Pooling + Dense(P_s) [+ Normalize when the teacher
                          normalises] (mmkd.models.sentence_transformer): the sentence embedding
                          that `mmkd eval retrieval` scores, loadable with SentenceTransformer(path);
  embedding_check.json    the engine's embeddings of a few sentences (the encoder's mean-pooled last
                          layer, and the sentence embedding) and the largest difference each
                          exported model gives on them.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import deepspeed.comm as dist
import numpy as np
import torch
from deepspeed.accelerator import get_accelerator

from mmkd import checkpoint_dir
from mmkd.errors import MMKDError
from mmkd.loop_state import LoopState
from mmkd.models.pooling import mean_pool
from mmkd.models.sentence_transformer import save_sentence_transformer
from mmkd.models.student import MMKDStudent, load_student
from mmkd.models.teacher import Teacher
from mmkd.train_config import TrainConfig, save_train_config

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

CHECKPOINTS = "checkpoints"
EXPORT = "export"
HF_DIR = "hf"
ST_DIR = "sentence_transformers"
CHECK_FILE = "embedding_check.json"
TENSORBOARD = "tensorboard"
TRAIN_CONFIG = "train_config.json"
MODULE_PREFIX = "student."  # DistillationModule's name for the student in its state dict
RUN_KEYS = ("world_size", "micro_batch", "accumulation", "zero_stage", "precision")  # must match to resume
RUN_CONTROL_KEYS = ("resume", "resume_from", "overwrite")  # train config keys that may differ on a resume


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def check_output_dir(cfg: TrainConfig) -> None:
    """Refuse to start a run in an `output_dir` that already holds files, unless the run resumes
    (`resume`, `resume_from`) or starts over (`overwrite`). Touches nothing: every rank may call it."""
    resume = cfg.resume or cfg.resume_from is not None
    if resume and cfg.overwrite:
        raise MMKDError("train config: resume and overwrite exclude each other; continue the run in "
                        f"{cfg.output_dir} with --resume, or start it over with --overwrite")
    out = Path(cfg.output_dir)
    entries = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    if entries and not resume and not cfg.overwrite:
        raise MMKDError(f"{out}: holds a run already ({', '.join(entries[:5])}); continue it with --resume, "
                        "start it over with --overwrite (deletes its checkpoints, export and TensorBoard logs), "
                        "or choose another output_dir")


def clear_output_dir(output_dir: str | Path) -> None:
    """Delete what a run writes into `output_dir` (checkpoints, export, TensorBoard logs, train config);
    other files stay. Rank 0, before anything of the new run is written."""
    out = Path(output_dir)
    for name in (CHECKPOINTS, EXPORT, EXPORT + checkpoint_dir.PARTIAL, TENSORBOARD):
        checkpoint_dir.remove(out / name)
    (out / TRAIN_CONFIG).unlink(missing_ok=True)


def rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng_rank{rank}.safetensors"


def save_rng_states(path: Path) -> None:
    """Write this process's python, numpy, torch (and accelerator) RNG states to `path` (safetensors:
    the states as integer tensors, their scalars as JSON metadata)."""
    from safetensors.torch import save_file

    version, python_keys, gauss_next = random.getstate()
    bit_generator, numpy_keys, position, has_gauss, cached_gaussian = np.random.get_state()
    tensors = {"python": torch.tensor(python_keys, dtype=torch.int64),
               "numpy": torch.from_numpy(numpy_keys.astype(np.int64)),
               "torch": torch.get_rng_state()}
    if get_accelerator().device_name() != "cpu":
        tensors["accelerator"] = get_accelerator().get_rng_state().cpu()
    scalars = {"python_version": version, "python_gauss_next": gauss_next, "numpy_bit_generator": bit_generator,
               "numpy_position": int(position), "numpy_has_gauss": int(has_gauss),
               "numpy_cached_gaussian": float(cached_gaussian)}
    save_file(tensors, str(path), metadata={"mmkd_rng": json.dumps(scalars)})


def load_rng_states(path: Path) -> None:
    """Restore the RNG states `save_rng_states` wrote; MMKDError naming `path` if it is not such a file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            scalars = json.loads(handle.metadata()["mmkd_rng"])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        python_keys, numpy_keys = tuple(int(k) for k in tensors["python"].tolist()), tensors["numpy"]
        random.setstate((scalars["python_version"], python_keys, scalars["python_gauss_next"]))
        np.random.set_state((scalars["numpy_bit_generator"], numpy_keys.numpy().astype(np.uint32),
                             scalars["numpy_position"], scalars["numpy_has_gauss"], scalars["numpy_cached_gaussian"]))
        torch.set_rng_state(tensors["torch"])
    except (OSError, SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise MMKDError(f"{path}: not an RNG state file written by mmkd.train ({type(err).__name__}: {err}); "
                        "resume from another checkpoint with --resume_from=step<N>") from err
    if "accelerator" in tensors:
        get_accelerator().set_rng_state(tensors["accelerator"])


def run_facts(engine: DeepSpeedEngine, cfg: TrainConfig, loop: LoopState) -> dict[str, Any]:
    """What a checkpoint records besides its files: the loop state and what a resume must match."""
    precision = "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else "fp32"
    return {"step": loop.step, "loop": loop.to_manifest(), "world_size": dist.get_world_size(),
            "micro_batch": engine.train_micro_batch_size_per_gpu(),
            "accumulation": engine.gradient_accumulation_steps(),
            "zero_stage": engine.zero_optimization_stage(), "precision": precision, "train_config": cfg.to_dict()}


def save_checkpoint(engine: DeepSpeedEngine, cfg: TrainConfig, loop: LoopState) -> str:
    """Write checkpoint `step<global_steps>` on every rank, publish it (rank 0) and rotate old ones
    away (keep_checkpoints); returns its tag. A failed write (disk full) raises MMKDError naming the file."""
    root, rank = checkpoint_root(cfg.output_dir), dist.get_rank()
    tag = checkpoint_dir.tag_of(engine.global_steps)
    staging = checkpoint_dir.staging_dir(root, tag)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        checkpoint_dir.remove(staging)  # an earlier save of this step, interrupted
    dist.barrier()
    advice = "then rerun with --resume (it continues from the newest complete checkpoint)"
    with checkpoint_dir.writing_into(staging, f"checkpoint {tag}", advice):
        engine.save_checkpoint(str(root), tag=staging.name, save_latest=False)
        save_rng_states(rng_file(staging, rank))
        checkpoint_dir.fsync_tree(staging)
    dist.barrier()
    if rank == 0:
        with checkpoint_dir.writing_into(staging, f"checkpoint {tag}", advice):
            checkpoint_dir.publish(root, tag, run_facts(engine, cfg, loop))
        checkpoint_dir.prune(root, tag, cfg.keep_checkpoints)
    dist.barrier()
    return tag


def load_checkpoint(engine: DeepSpeedEngine, cfg: TrainConfig) -> tuple[LoopState, str]:
    """Restore the newest complete checkpoint (or `cfg.resume_from`) into `engine` and this rank's
    RNG states; returns (loop state, tag). Names on rank 0 the newer folders it skipped and why.

    Call it last, right before the loop: RNG states are restored here. Raises MMKDError when no
    checkpoint is complete, or the chosen one was written by a run of another shape (ranks, batch,
    ZeRO stage, precision).
    """
    root = checkpoint_root(cfg.output_dir)
    folder, skipped = checkpoint_dir.choose(root, cfg.resume_from)
    facts = checkpoint_dir.read_manifest(folder)
    loop = LoopState.from_manifest(facts["loop"])
    here = run_facts(engine, cfg, loop)
    different = [f"{key} {facts[key]} there, {here[key]} here" for key in RUN_KEYS if facts[key] != here[key]]
    if different:
        raise MMKDError(f"{folder}: written by a run of another shape ({'; '.join(different)}); resume with the "
                        "same number of ranks and the same DeepSpeed JSON")
    if dist.get_rank() == 0:
        for line in skipped:
            print(f"mmkd train: resume: skipped {line}", flush=True)
        newer = [name for name in checkpoint_dir.complete_checkpoints(root)
                 if checkpoint_dir.step_of(name) > facts["step"]]
        changed = [f"{key} {facts['train_config'].get(key)!r} -> {value!r}" for key, value in cfg.to_dict().items()
                   if key not in RUN_CONTROL_KEYS and facts["train_config"].get(key) != value]
        print(f"mmkd train: resuming from {folder} (step {facts['step']})" +
              (f"; train config changed: {', '.join(changed)}" if changed else "") +
              (f"; the newer {', '.join(newer)} will be removed at the next checkpoint" if newer else ""), flush=True)
    try:
        path, _ = engine.load_checkpoint(str(root), tag=folder.name)
    except Exception as err:  # DeepSpeed's loader raises anything from pickle, torch or its own asserts
        raise MMKDError(f"{folder}: DeepSpeed could not load it ({type(err).__name__}: {err}); resume from an "
                        "older checkpoint with --resume_from=step<N>") from err
    if path is None:
        raise MMKDError(f"{folder}: DeepSpeed found no checkpoint files in it")
    load_rng_states(rng_file(folder, dist.get_rank()))
    return loop, folder.name


def fp32_student_state(engine: DeepSpeedEngine, tag: str, output_dir: str | Path) -> dict[str, torch.Tensor]:
    """The student's fp32 weights (rank 0): from the ZeRO checkpoint `tag`, else the module itself."""
    if engine.zero_optimization_stage() > 0:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_root(output_dir)), tag=tag)
    else:
        state = engine.module.state_dict()
    return {name[len(MODULE_PREFIX):]: tensor.float() for name, tensor in state.items()
            if name.startswith(MODULE_PREFIX)}


def student_embeddings(student: MMKDStudent, texts: list[str], max_length: int, normalize: bool,
                       device: torch.device) -> dict[str, torch.Tensor]:
    """{"encoder": mean-pooled last-layer states (N, d_S), "sentence": the sentence embedding (N, d_E),
    MMKDStudent.project_sentence of the former}, float32 on the CPU, in eval mode, no grad. The pool is
    taken in fp32 from the engine's states (bf16 ones under bf16).

    Under ZeRO-3 every rank must call it (the forward gathers parameters collectively).
    """
    encoded = student.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    mask = encoded["attention_mask"].to(device)
    with student.evaluating():
        pooled = mean_pool(student.hidden_states(encoded["input_ids"].to(device), mask).float(), mask)
        sentence = student.project_sentence(pooled, normalize).float()
    return {"encoder": pooled.cpu(), "sentence": sentence.cpu()}


def export(engine: DeepSpeedEngine, cfg: TrainConfig, tag: str, teacher: Teacher, texts: list[str]) -> Path:
    """Write output_dir/export (module docstring) from checkpoint `tag`; every rank calls it.

    The files go to `export.partial/`, renamed to `export/` (replacing an older export) once all
    are written: an `export/` folder is complete. A failed write raises MMKDError naming the file.
    """
    final = Path(cfg.output_dir) / EXPORT
    staging = final.with_name(EXPORT + checkpoint_dir.PARTIAL)
    if dist.get_rank() == 0:
        checkpoint_dir.remove(staging)  # an earlier export, interrupted
    dist.barrier()
    advice = f"then rerun with --resume: it loads {tag}, the last checkpoint, and exports again"
    with checkpoint_dir.writing_into(staging, f"the export of {tag}", advice):
        write_export(engine, cfg, tag, teacher, texts, staging)
        if dist.get_rank() == 0:
            checkpoint_dir.fsync_tree(staging)
            checkpoint_dir.remove(final)
            os.replace(staging, final)
    dist.barrier()
    return final


def write_export(engine: DeepSpeedEngine, cfg: TrainConfig, tag: str, teacher: Teacher, texts: list[str],
                 out: Path) -> None:
    """Write the export's files (module docstring) from checkpoint `tag` into `out`; every rank calls it."""
    reference = student_embeddings(engine.module.student, texts, cfg.max_length, teacher.normalize, engine.device)
    if dist.get_rank() == 0:
        student = load_student(cfg.student, teacher_hidden_size=teacher.hidden_size,
                               teacher_sentence_size=teacher.sentence_size)
        student.load_state_dict(fp32_student_state(engine, tag, cfg.output_dir))
        student.save(out / HF_DIR)
        save_sentence_transformer(student, out / ST_DIR, cfg.max_length, teacher.normalize)
        save_train_config(cfg, out / "train_config.json")
        differences = exported_differences(out, texts, reference, cfg.max_length)
        check = {"checkpoint": tag, "engine_dtype": str(next(engine.module.parameters()).dtype),
                 "texts": texts, "embeddings": {name: value.tolist() for name, value in reference.items()},
                 "max_abs_difference": differences}
        (out / CHECK_FILE).write_text(json.dumps(check, indent=1) + "\n")
    dist.barrier()


def exported_differences(out: Path, texts: list[str], reference: dict[str, torch.Tensor], max_length: int
                         ) -> dict[str, float]:
    """Largest |embedding - reference| of the exported HF encoder (mean-pooled, against reference["encoder"])
    and of the sentence-transformers model (against reference["sentence"]) on `texts`."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / HF_DIR)
    model = AutoModelForMaskedLM.from_pretrained(out / HF_DIR).base_model.eval()
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hf = mean_pool(model(**encoded).last_hidden_state, encoded["attention_mask"])
    st = SentenceTransformer(str(out / ST_DIR), device="cpu").encode(texts, convert_to_tensor=True)
    return {"transformers": float((hf - reference["encoder"]).abs().max()),
            "sentence_transformers": float((st.cpu() - reference["sentence"]).abs().max())}
