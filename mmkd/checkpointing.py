"""Checkpoints that resume exactly, and the final export of the trained student.

A checkpoint is DeepSpeed's (`output_dir/checkpoints/step<N>/`: module, optimizer, scheduler and
its `latest` file) with client_state = {"loop": data position and step, "train_config",
"world_size"} and, per rank, `rng_rank<r>.pt` (python, numpy, torch and accelerator RNG states):
dropout differs per rank, so every rank restores its own.

The export (`output_dir/export/`) takes the fp32 weights: under ZeRO they are gathered from the
checkpoint's optimizer shards (zero_to_fp32), so they are the master weights, not the bf16 copies
the engine computes with. It writes
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
import random
from pathlib import Path
from typing import Any

import deepspeed.comm as dist
import numpy as np
import torch
from deepspeed.accelerator import get_accelerator

from mmkd.errors import MMKDError
from mmkd.models.pooling import mean_pool
from mmkd.models.sentence_transformer import save_sentence_transformer
from mmkd.models.student import MMKDStudent, load_student
from mmkd.models.teacher import Teacher
from mmkd.train_config import TrainConfig, save_train_config

CHECKPOINTS = "checkpoints"
EXPORT = "export"
HF_DIR = "hf"
ST_DIR = "sentence_transformers"
CHECK_FILE = "embedding_check.json"
MODULE_PREFIX = "student."  # DistillationModule's name for the student in its state dict


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if get_accelerator().device_name() != "cpu":
        states["accelerator"] = get_accelerator().get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "accelerator" in states:
        get_accelerator().set_rng_state(states["accelerator"])


def save_checkpoint(engine: Any, cfg: TrainConfig, loop: dict[str, int]) -> str:
    """Write checkpoint `step<global_steps>` on every rank; returns its tag."""
    root = checkpoint_root(cfg.output_dir)
    tag = f"step{engine.global_steps}"
    client_state = {"loop": dict(loop), "train_config": cfg.to_dict(), "world_size": dist.get_world_size()}
    engine.save_checkpoint(str(root), tag=tag, client_state=client_state)
    torch.save(rng_states(), root / tag / f"rng_rank{dist.get_rank()}.pt")
    dist.barrier()
    return tag


def load_checkpoint(engine: Any, cfg: TrainConfig) -> dict[str, int]:
    """Restore the latest checkpoint into `engine` and this rank's RNG states; returns the loop state.

    Call it last, right before the loop: RNG states are restored here.
    """
    root = checkpoint_root(cfg.output_dir)
    if not (root / "latest").is_file():
        raise MMKDError(f"{root}: no checkpoint to resume from (resume=true); run without resume first")
    path, client_state = engine.load_checkpoint(str(root))
    if path is None or not client_state or "loop" not in client_state:
        raise MMKDError(f"{root}: the latest checkpoint could not be loaded or was not written by mmkd.train")
    if client_state["world_size"] != dist.get_world_size():
        raise MMKDError(f"{path}: written by {client_state['world_size']} ranks, this run has "
                        f"{dist.get_world_size()}; resume with the same number of ranks")
    rng_file = Path(path).parent / f"rng_rank{dist.get_rank()}.pt"
    set_rng_states(torch.load(rng_file, weights_only=False))
    return dict(client_state["loop"])


def fp32_student_state(engine: Any, tag: str, output_dir: str | Path) -> dict[str, torch.Tensor]:
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
    """{"encoder": mean-pooled last-layer states (N, d_S), "sentence": the sentence embedding (N, d_T),
    P_s of the former, unit length when `normalize`}, float32 on the CPU, in eval mode, no grad.

    Under ZeRO-3 every rank must call it (the forward gathers parameters collectively).
    """
    encoded = student.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    mask = encoded["attention_mask"].to(device)
    with student.evaluating():
        pooled = mean_pool(student.hidden_states(encoded["input_ids"].to(device), mask).float(), mask)
        sentence = student.heads.sentence(pooled.to(student.heads.sentence.weight.dtype)).float()
    sentence = torch.nn.functional.normalize(sentence, dim=-1) if normalize else sentence
    return {"encoder": pooled.cpu(), "sentence": sentence.cpu()}


def export(engine: Any, cfg: TrainConfig, tag: str, teacher: Teacher, texts: list[str]) -> Path:
    """Write output_dir/export (module docstring) from checkpoint `tag`; every rank calls it."""
    out = Path(cfg.output_dir) / EXPORT
    reference = student_embeddings(engine.module.student, texts, cfg.max_length, teacher.normalize, engine.device)
    if dist.get_rank() == 0:
        student = load_student(cfg.student, teacher_hidden_size=teacher.hidden_size)
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
    return out


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
