"""The DeepSpeed engine: one module (student, projection heads, the parameter-free loss) wrapped once.

The teacher is never part of it: it is built outside any zero.Init and only runs under no_grad.
Everything DeepSpeed owns (batch sizes, lr, optimizer, scheduler, precision, ZeRO stage) comes from
the DeepSpeed JSON; this module only fills in what belongs to the run (the TensorBoard directory,
the scheduler's `total_num_steps: "auto"`) and picks the optimizer:
- the JSON's "optimizer" block names a DeepSpeed/torch type ("AdamW" with "torch_adam": true is the
  one that compiles nothing on a CPU): DeepSpeed builds it;
- no "optimizer" block: a client torch.optim.AdamW (torch defaults), whose lr the scheduler block
  must then set (WarmupDecayLR: warmup_max_lr);
- "type": "apex_fused_lamb" / "apex_fused_adam": NVIDIA apex's FusedLAMB / FusedAdam, imported at
  run time (apex is never a dependency); the block is removed before DeepSpeed sees the config.
  Under ZeRO-1/2 the optimizer only sees flat partitions, so LAMB's per-layer trust ratios become
  per-partition ones: DeepSpeed calls it untested and wants "zero_allow_untested_optimizer": true.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import deepspeed
import deepspeed.comm as dist
import torch
from deepspeed.accelerator import get_accelerator
from torch import nn

from mmkd.ds_config import check_batch_sizes, check_known_keys, one_line, resolve_auto
from mmkd.errors import MMKDError
from mmkd.models.student import MMKDStudent, load_student
from mmkd.objectives.combined import MMKDLoss, MMKDLossOutput
from mmkd.shipped_configs import resolve_config, shipped_names

if TYPE_CHECKING:
    from mmkd.models.teacher import TeacherOutputs

CPU_CONFIG = "cpu_bf16_zero2"  # a shipped DeepSpeed JSON (ds_configs/)
APEX_OPTIMIZERS = {"apex_fused_lamb": "FusedLAMB", "apex_fused_adam": "FusedAdam"}
APEX_HINT = (
    "NVIDIA apex is not installed; mmkd never depends on it. Build it on a CUDA machine with "
    "`git clone https://github.com/NVIDIA/apex && cd apex && pip install -v --no-build-isolation "
    "--config-settings '--build-option=--cpp_ext' --config-settings '--build-option=--cuda_ext' ./` "
    "(the PyPI package called 'apex' is an unrelated project: do not pip install apex), or pick a "
    "DeepSpeed optimizer type (AdamW, Lamb) in the DeepSpeed JSON"
)
SINGLE_PROCESS_ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}


class DistillationModule(nn.Module):
    """The module DeepSpeed wraps: `student` (MMKDStudent, heads included) and `loss` (MMKDLoss)."""

    def __init__(self, student: MMKDStudent, loss: MMKDLoss) -> None:
        super().__init__()
        self.student = student
        self.loss = loss

    def forward(self, batch: dict[str, Any], teacher_outputs: TeacherOutputs) -> MMKDLossOutput:
        """MMKDLossOutput of the student on `batch` against the teacher's outputs for its x."""
        return self.loss(self.student, batch, teacher_outputs)


def init_distributed() -> tuple[int, int]:
    """Join (or, run as a plain process, create) the process group; returns (rank, world size).

    Without a launcher the environment gets RANK=0, LOCAL_RANK=0, WORLD_SIZE=1, MASTER_ADDR=127.0.0.1
    and a free MASTER_PORT, so `python -m mmkd.train` works like one launched rank. On a CPU the shm
    communication op (it serves only inference all-reduce) is switched off first: DeepSpeed's comm
    backend would JIT-compile it here, for a minute or more on every fresh machine.
    """
    if get_accelerator().device_name() == "cpu":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if "WORLD_SIZE" not in os.environ:
        for key, value in SINGLE_PROCESS_ENV.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name())
    return dist.get_rank(), dist.get_world_size()


def free_port() -> int:
    """A TCP port no process listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_ds_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The DeepSpeed JSON at `path` with `overrides` (train config key `ds`: dotted path -> value)
    applied, checked before anything is built (mmkd.ds_config): fp16 on a machine without a GPU,
    bf16 on a device without it, keys DeepSpeed does not know, "auto" values (resolved or refused),
    an lr that can only train nothing. `path` may name a shipped config (mmkd.shipped_configs).
    Raises MMKDError naming the file."""
    file = resolve_config(path, "ds_configs")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise MMKDError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise MMKDError(f"{path}: a DeepSpeed config is a JSON object")
    config = with_ds_overrides(config, overrides or {}, str(path))
    if config.get("fp16", {}).get("enabled") and get_accelerator().device_name() == "cpu":
        raise MMKDError(f"{path}: fp16 needs a GPU; use {CPU_CONFIG} (bf16)")
    if config.get("bf16", {}).get("enabled") and not get_accelerator().is_bf16_supported():
        raise MMKDError(f"{path}: bf16 is not supported on this {get_accelerator().device_name()} device; use "
                        "ds_configs/gpu_fp16_zero1.json (fp16) or a JSON without the bf16 block (fp32)")
    config = resolve_auto(config, path)
    check_known_keys(config, path)
    check_learning_rates(config, path)
    return config


def check_learning_rates(ds_config: dict[str, Any], source: str | Path) -> None:
    """Refuse an optimizer lr or scheduler peak (warmup_max_lr) that is not > 0: no step could change
    a weight. Raises MMKDError naming `source` and the key."""
    for key, block in (("optimizer.params.lr", ds_config.get("optimizer")),
                       ("scheduler.params.warmup_max_lr", ds_config.get("scheduler"))):
        value = (block or {}).get("params", {}).get(key.rsplit(".", 1)[1])
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise MMKDError(f"{source}: {key}={value!r} trains nothing; set a learning rate > 0")


def with_ds_overrides(config: dict[str, Any], overrides: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A copy of `config` with each dotted path of `overrides` set to its value. Every key of a path
    must exist in `config` (DeepSpeed ignores unknown keys, so a misspelt path would change nothing):
    MMKDError naming the path and the close matches otherwise."""
    config = copy.deepcopy(config)
    for path, value in overrides.items():
        node, parts = config, path.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                keys = list(node) if isinstance(node, dict) else []
                close = difflib.get_close_matches(part, keys, n=3)
                hint = f"did you mean {', '.join(close)}?" if close else f"its keys: {', '.join(keys) or 'none'}"
                raise MMKDError(f"{source}: ds.{path}: no key {part!r} under {'.'.join(parts[:depth]) or 'the top'} "
                                f"of the DeepSpeed JSON ({hint}); new blocks belong in a JSON file")
            if depth == len(parts) - 1:
                node[part] = value
            node = node[part]
    return config


def batch_geometry(ds_config: dict[str, Any], source: str | Path) -> tuple[int, int]:
    """(micro-batch per rank, gradient accumulation steps), resolved by DeepSpeed's own config class
    for the current world size (call after init_distributed). Raises MMKDError naming `source` and
    the values when the batch sizes do not fit the world size."""
    return check_batch_sizes(ds_config, source, dist.get_world_size())


def with_run_values(ds_config: dict[str, Any], *, tensorboard_dir: str | Path, total_steps: int) -> dict[str, Any]:
    """A copy of `ds_config` with the run's values: scheduler `total_num_steps: "auto"` becomes
    `total_steps`; a warmup scheduler without `warmup_max_lr` peaks at the optimizer's lr (DeepSpeed's
    WarmupDecayLR would otherwise peak at its own default of 1e-3); a tensorboard block without
    `output_path` writes to `tensorboard_dir`."""
    config = copy.deepcopy(ds_config)
    scheduler = config.get("scheduler", {})
    scheduler_params = scheduler.get("params", {})
    if scheduler_params.get("total_num_steps") == "auto":
        scheduler_params["total_num_steps"] = total_steps
    optimizer_lr = config.get("optimizer", {}).get("params", {}).get("lr")
    if scheduler.get("type", "").startswith("Warmup") and "warmup_max_lr" not in scheduler_params \
            and optimizer_lr is not None:
        scheduler_params["warmup_max_lr"] = optimizer_lr
    tensorboard = config.get("tensorboard")
    if tensorboard is not None and not tensorboard.get("output_path"):
        tensorboard["output_path"] = str(tensorboard_dir)
    return config


def zero_stage(ds_config: dict[str, Any]) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def compute_dtype(ds_config: dict[str, Any]) -> torch.dtype:
    """The dtype DeepSpeed runs the module in: bfloat16, float16 or float32."""
    if ds_config.get("bf16", {}).get("enabled"):
        return torch.bfloat16
    if ds_config.get("fp16", {}).get("enabled"):
        return torch.float16
    return torch.float32


def emulated_bf16_warning(dtype: torch.dtype, device: torch.device) -> str | None:
    """A warning when bf16 matrix multiplies run on a CPU without native bf16 (no AVX512-BF16 or AMX:
    oneDNN refuses them and torch falls back to a scalar GEMM, measured ~50x slower than fp32 on an
    AVX2 EPYC); None otherwise. torch.ops.mkldnn._is_mkldnn_bf16_supported is the test torch itself uses."""
    if dtype != torch.bfloat16 or device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    fp32 = ", ".join(Path(name).stem for name in shipped_names("ds_configs") if name.startswith("cpu_fp32"))
    return (f"this CPU has no native bf16 matrix multiply (torch sees {torch.backends.cpu.get_cpu_capability()}): "
            f"bf16 runs many times slower than fp32 here; use an fp32 DeepSpeed config ({fp32})")


def build_student(path: str, teacher_hidden_size: int, ds_config: dict[str, Any],
                  teacher_sentence_size: int | None = None) -> MMKDStudent:
    """Load the student (MMKDStudent with its heads: load_student's sizes, d_T and d_E); under ZeRO-3
    partitioned as it is built.

    Under ZeRO-3 the masked LM is loaded while a transformers HfDeepSpeedConfig of `ds_config` is
    alive: from_pretrained then creates every parameter inside deepspeed.zero.Init, partitioned and
    in the JSON's dtype, and loads each one's slice, so no rank ever holds the full fp32 student
    (0.7 GB at the paper's 179M parameters). The config is dropped right after, so that models loaded
    later (teacher, export) are whole. The projection heads (d_S (d_T + d_E) parameters) are loaded
    whole, cast, then partitioned. HfDeepSpeedConfig needs the accelerate package.
    """
    sizes = {"teacher_hidden_size": teacher_hidden_size, "teacher_sentence_size": teacher_sentence_size}
    if zero_stage(ds_config) != 3:
        return load_student(path, **sizes)
    try:
        from transformers.integrations import HfDeepSpeedConfig
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        zero3_loading = HfDeepSpeedConfig(ds_config)
    except (ImportError, AttributeError) as err:
        raise MMKDError(f"ZeRO-3 builds the student partitioned through transformers' HfDeepSpeedConfig, which needs "
                        f"the accelerate package: pip install accelerate ({err})") from err
    try:
        student = load_student(path, **sizes)
    finally:
        del zero3_loading
        unset_hf_deepspeed_config()
    dtype = compute_dtype(ds_config)
    deepspeed.zero.Init(module=student.heads.to(dtype), config_dict_or_path=ds_config, dtype=dtype)
    return student


def build_optimizer(ds_config: dict[str, Any], parameters: list[nn.Parameter]
                    ) -> tuple[torch.optim.Optimizer | None, dict[str, Any]]:
    """(client optimizer or None, the config DeepSpeed gets): see the module docstring."""
    block = ds_config.get("optimizer")
    if block is None:
        if "scheduler" not in ds_config:
            raise MMKDError("the DeepSpeed JSON has neither an \"optimizer\" nor a \"scheduler\" block: nothing "
                            "sets the learning rate")
        return torch.optim.AdamW(parameters), ds_config
    kind = str(block.get("type", "")).lower()
    if kind not in APEX_OPTIMIZERS:
        return None, ds_config
    if kind == "apex_fused_lamb" and zero_stage(ds_config) > 0 and not ds_config.get("zero_allow_untested_optimizer"):
        raise MMKDError(f"optimizer {kind} under ZeRO needs \"zero_allow_untested_optimizer\": true in the "
                        "DeepSpeed JSON (its trust ratios are then per partition, not per layer)")
    try:
        module = importlib.import_module("apex.optimizers")
        optimizer_class = getattr(module, APEX_OPTIMIZERS[kind])
    except (ImportError, AttributeError) as err:
        raise MMKDError(f"optimizer {kind}: {APEX_HINT} ({err})") from err
    config = {key: value for key, value in ds_config.items() if key != "optimizer"}
    return optimizer_class(parameters, **block.get("params", {})), config


def build_engine(student: MMKDStudent, loss: MMKDLoss, ds_config: dict[str, Any],
                 source: str | Path = "the DeepSpeed config") -> deepspeed.DeepSpeedEngine:
    """deepspeed.initialize on DistillationModule(student, loss); returns the engine.

    Raises MMKDError naming `source` when DeepSpeed refuses the config (ValueError, TypeError or
    DeepSpeedConfigError from deepspeed.initialize, such as an optimizer parameter its optimizer does
    not take), or when the engine's parameters are not in the JSON's precision (compute_dtype).
    """
    from deepspeed.runtime.config import DeepSpeedConfigError

    module = DistillationModule(student, loss)
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer, config = build_optimizer(ds_config, parameters)
    try:
        engine, *_ = deepspeed.initialize(model=module, model_parameters=parameters, optimizer=optimizer,
                                          config=config)
    except (ValueError, TypeError, DeepSpeedConfigError) as err:
        raise MMKDError(f"{source}: DeepSpeed refuses this config: {one_line(err)}") from err
    dtypes = {p.dtype for p in engine.module.student.parameters()}
    if dtypes != {compute_dtype(ds_config)}:
        raise MMKDError(f"{source}: the engine holds the student in {sorted(map(str, dtypes))}, not the JSON's "
                        f"{compute_dtype(ds_config)}; DeepSpeed did not apply the precision")
    return engine


def parameter_count(module: nn.Module) -> int:
    """Number of parameters, counting ZeRO-3-partitioned ones at their full size."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())
