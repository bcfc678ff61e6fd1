"""The optimizer's fp32 master weights start from the fp32 student, not from its bf16/fp16 copy.

Under bf16 or fp16, deepspeed.initialize casts the module to the compute dtype first and then builds
the fp32 master weights from that cast module: they would start as the rounded student (a bf16
weight keeps 8 of fp32's 24 significant bits). `load_fp32_student` writes the student's fp32
weights, read again from its directory, into the master weights of ZeRO-1/2 and of DeepSpeed's bf16
optimizer (ZeRO-0) through DeepSpeed's tensor-fragment API, so the first optimizer step updates the
fp32 student and the export's "fp32 master weights" (mmkd/checkpointing.py) are exactly those.
Not under ZeRO-3: DeepSpeed's `set_full_hp_param` there cannot fill a padded last partition, so
ZeRO-3 master weights stay as DeepSpeed builds them from the partitioned student; and not where the
optimizer exposes no fp32 fragments (bf16 without ZeRO on a CPU keeps no fp32 copy at all). The
README's "Checkpoints, resuming, the export" states what each case exports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepspeed.utils import safe_set_full_fp32_param

from mmkd.models.student import load_student

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine


def load_fp32_student(engine: DeepSpeedEngine, student_path: str, teacher_hidden_size: int,
                      teacher_sentence_size: int | None = None) -> int:
    """Set the fp32 master copy of every student parameter of `engine` to the student at `student_path`
    as loaded in fp32 (load_student); returns how many parameters were set (0 when the engine trains
    in fp32, or under ZeRO-3 or fp16 without ZeRO: module docstring). Every rank calls it."""
    if not (engine.bfloat16_enabled() or engine.fp16_enabled()):
        return 0
    masters = [(name, param) for name, param in engine.module.student.named_parameters()
               if param.requires_grad and getattr(param, "_hp_mapping", None) is not None]
    if not masters:
        return 0
    fp32 = dict(load_student(student_path, teacher_hidden_size=teacher_hidden_size,
                             teacher_sentence_size=teacher_sentence_size).named_parameters())
    for name, param in masters:
        safe_set_full_fp32_param(param, fp32[name].detach().float().to(engine.device))
    return len(masters)
