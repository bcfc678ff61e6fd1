"""The DeepSpeed JSON checked before anything is built: keys DeepSpeed does not know, "auto" values,
and the refusals DeepSpeed itself would raise later, each as one MMKDError naming the file.

DeepSpeed ignores keys it does not read (a misspelled `zero_optimization` turns ZeRO off), so the
known keys are taken from DeepSpeed's own config model: the JSON is handed to
`deepspeed.runtime.config.DeepSpeedConfig` as a mapping that records which keys DeepSpeed looks up,
and a key it never looks up is unknown. Its sections that are pydantic models (`zero_optimization`,
`bf16`, `fp16`, `tensorboard`, ...) refuse their own unknown fields; the scheduler's params are
checked against the signature of DeepSpeed's scheduler class, the optimizer's type against
DeepSpeed's optimizer names and torch.optim, its params against the signatures of the classes
DeepSpeed may build for that type.

HF-style "auto" values are resolved the way transformers' Trainer resolves them
(`transformers.integrations.deepspeed.HfTrainerDeepSpeedConfig.trainer_config_process`), from what
mmkd owns; where Trainer would read one of its own arguments that mmkd has no key for, the value is
refused by name:
  train_batch_size                  micro x accumulation x world (left to DeepSpeed to compute)
  scheduler.params.total_num_steps  the run's optimizer steps (max_steps, or epochs x steps per epoch)
  scheduler.params.warmup_max_lr    the optimizer's lr
  scheduler.params.warmup_min_lr    0
  train_micro_batch_size_per_gpu, gradient_accumulation_steps, optimizer.params.lr,
  scheduler.params.warmup_num_steps and any other "auto": refused (set a number in the JSON).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import typing
from pathlib import Path
from typing import Any

import torch

from mmkd.errors import MMKDError

AUTO = "auto"
RESOLVED_LATER = {("scheduler", "params", "total_num_steps")}  # engine.with_run_values fills it
# The classes deepspeed.runtime.engine.DeepSpeedEngine._configure_basic_optimizer may build for a
# DeepSpeed optimizer name (which one depends on the device, offload and "torch_adam").
ADAM_CLASSES = ["torch.optim.Adam", "torch.optim.AdamW", "deepspeed.ops.adam.FusedAdam",
                "deepspeed.ops.adam.DeepSpeedCPUAdam"]
DEEPSPEED_OPTIMIZER_CLASSES = {
    "adam": ADAM_CLASSES,
    "adamw": ADAM_CLASSES,
    "adagrad": ["torch.optim.Adagrad", "deepspeed.ops.adagrad.DeepSpeedCPUAdagrad"],
    "lamb": ["deepspeed.ops.lamb.FusedLamb"],
    "lion": ["deepspeed.ops.lion.FusedLion", "deepspeed.ops.lion.DeepSpeedCPULion"],
}
DEEPSPEED_OPTIMIZER_KEYS = ("torch_adam", "adam_w_mode", "fp32_optimizer_states")  # taken out before the class


class ReadRecorder(dict):
    """A dict that records every key looked up in it (get, [], in), shared with its copies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.__dict__["read"] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        self.read.add(key)
        return super().__contains__(key)

    def __iter__(self) -> Any:
        """Defined so that `**mapping` and `dict.update(mapping)` read each value through __getitem__
        (CPython copies a dict subclass directly only when it keeps dict's own __iter__)."""
        return super().__iter__()


def resolve_auto(config: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """`config` with its "auto" values resolved or refused (module docstring); the input is not changed.

    Raises MMKDError naming `source` and the key path of the first "auto" mmkd cannot resolve.
    """
    config = copy.deepcopy(config)
    if config.get("train_batch_size") == AUTO:
        del config["train_batch_size"]  # DeepSpeed computes it from the micro-batch, accumulation and world
    params = (config.get("scheduler") or {}).get("params") or {}
    if params.get("warmup_min_lr") == AUTO:
        params["warmup_min_lr"] = 0.0
    if params.get("warmup_max_lr") == AUTO:
        del params["warmup_max_lr"]  # engine.with_run_values peaks it at the optimizer's lr
    for path in auto_paths(config):
        if path not in RESOLVED_LATER:
            key = ".".join(path)
            raise MMKDError(f"{source}: {key} is \"auto\", which mmkd cannot resolve (HF Trainer fills it from "
                            f"its own arguments, which mmkd does not have); set a number in the DeepSpeed JSON")
    return config


def auto_paths(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of every "auto" value in a nested JSON object."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in auto_paths(item, (*path, str(key)))]
    return [path] if value == AUTO else []


BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


def check_batch_size_types(config: dict[str, Any], source: str | Path) -> None:
    """Raise MMKDError naming `source` and the key when a batch size is given but not an integer ("auto"
    aside): DeepSpeed would fail comparing it ("'>' not supported between 'str' and 'int'")."""
    for key in BATCH_KEYS:
        value = config.get(key)
        if value is not None and value != AUTO and (isinstance(value, bool) or not isinstance(value, int)):
            raise MMKDError(f"{source}: {key} must be an integer number of samples, got {value!r}")


def check_known_keys(config: dict[str, Any], source: str | Path) -> None:
    """Refuse keys DeepSpeed's config model does not read and sections it refuses (module docstring).

    A top-level key is unknown when DeepSpeedConfig never looks it up; a key of a section is unknown
    when DeepSpeed looks up some keys of that section one by one but never this one (sections handed
    whole to a pydantic model are checked by the model). Call it on a JSON without "auto" values
    (resolve_auto); batch sizes are left to check_batch_sizes, which knows the world size. Raises
    MMKDError naming `source`, the key and the closest known keys.
    """
    from deepspeed.runtime.config import DeepSpeedConfig
    from pydantic import ValidationError

    check_batch_size_types(config, source)
    recorder = ReadRecorder({key: ReadRecorder(value) if isinstance(value, dict) else value
                             for key, value in config.items()})
    try:
        DeepSpeedConfig(recorder)
    except AssertionError as err:
        if not is_batch_size_refusal(err):  # batch sizes: checked by check_batch_sizes, knowing the world size
            raise MMKDError(f"{source}: DeepSpeed refuses this config: {one_line(err)}") from err
    except ValidationError as err:
        raise section_error(err, config, source) from err
    except Exception as err:  # DeepSpeedConfigError, ValueError, TypeError: DeepSpeed's refusal of a value
        raise MMKDError(f"{source}: DeepSpeed refuses this config: {one_line(err)}") from err
    known = {key for key in recorder.read if isinstance(key, str)}
    for key, value in recorder.items():
        if key not in known:
            raise unknown_key_error(key, sorted(known), source, "not a top-level key DeepSpeed reads")
        if isinstance(value, ReadRecorder) and value.read and key not in ("scheduler", "optimizer"):
            for inner in value:
                if inner not in value.read:
                    raise unknown_key_error(f"{key}.{inner}", [f"{key}.{name}" for name in sorted(value.read)],
                                            source, f"not a key DeepSpeed reads in {key}")
    check_scheduler(config.get("scheduler"), source)
    check_optimizer(config.get("optimizer"), source)


def section_error(err: Any, config: dict[str, Any], source: str | Path) -> MMKDError:
    """MMKDError for a pydantic ValidationError of one of DeepSpeed's section models: the JSON path
    of the field, and for an unknown field the closest fields of its model."""
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    section = next((name for name, value in config.items() if isinstance(value, dict) and loc and loc[0] in value),
                   None)
    path = loc if not loc or loc[0] in config or section is None else [section, *loc]
    key = ".".join(path)
    model = section_model(err.title, loc[:-1])
    if first["type"] == "extra_forbidden" and model is not None:
        prefix = ".".join(path[:-1])
        fields = sorted(set(model.model_fields) | {info.alias for info in model.model_fields.values() if info.alias})
        return unknown_key_error(key, [f"{prefix}.{name}" for name in fields], source,
                                 f"not a field of DeepSpeed's {model.__name__}")
    return MMKDError(f"{source}: DeepSpeed refuses {key}={first.get('input')!r}: {first['msg']}")


def section_model(title: str, loc: list[str]) -> Any:
    """The DeepSpeed pydantic model named `title`, followed through the fields named in `loc`; None
    when there is none."""
    from deepspeed.runtime.config_utils import DeepSpeedConfigModel

    def subclasses(cls: type) -> list[type]:
        return [cls] + [sub for child in cls.__subclasses__() for sub in subclasses(child)]

    model = next((cls for cls in subclasses(DeepSpeedConfigModel) if cls.__name__ == title), None)
    for name in loc:
        if model is None or name not in model.model_fields:
            return None
        annotation = model.model_fields[name].annotation
        candidates = [annotation, *typing.get_args(annotation)]
        model = next((cls for cls in candidates if isinstance(cls, type) and issubclass(cls, DeepSpeedConfigModel)),
                     None)
    return model


def check_scheduler(block: Any, source: str | Path) -> None:
    """The scheduler type is one of DeepSpeed's and its params are arguments of that class."""
    if block is None:
        return
    from deepspeed.runtime import lr_schedules

    unknown = sorted(set(block) - {"type", "params"})
    if unknown:
        raise unknown_key_error(f"scheduler.{unknown[0]}", ["scheduler.type", "scheduler.params"], source,
                                "a scheduler block has type and params")
    kind = block.get("type")
    if kind not in lr_schedules.VALID_LR_SCHEDULES:
        raise unknown_key_error(f"scheduler.type={kind!r}", lr_schedules.VALID_LR_SCHEDULES, source,
                                "not a DeepSpeed scheduler", value=kind)
    accepted = set(inspect.signature(getattr(lr_schedules, kind)).parameters) - {"self", "optimizer"}
    for key in block.get("params", {}):
        if key not in accepted:
            known = [f"scheduler.params.{name}" for name in sorted(accepted)]
            raise unknown_key_error(f"scheduler.params.{key}", known,
                                    source, f"not an argument of DeepSpeed's {kind}")


def check_optimizer(block: Any, source: str | Path) -> None:
    """The optimizer type is one DeepSpeed builds (its own names, torch.optim classes) or mmkd's apex
    ones, and each of its params is an argument of a class DeepSpeed may build for that type
    (DEEPSPEED_OPTIMIZER_CLASSES) or a key DeepSpeed takes out first (DEEPSPEED_OPTIMIZER_KEYS)."""
    if block is None:
        return
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS

    from mmkd.engine import APEX_OPTIMIZERS

    unknown = sorted(set(block) - {"type", "params", "legacy_fusion"})
    if unknown:
        raise unknown_key_error(f"optimizer.{unknown[0]}", ["optimizer.type", "optimizer.params",
                                                           "optimizer.legacy_fusion"], source,
                                "an optimizer block has type and params")
    kind = str(block.get("type", ""))
    torch_names = [name for name in dir(torch.optim) if isinstance(getattr(torch.optim, name), type)
                   and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)]
    if kind.lower() not in DEEPSPEED_OPTIMIZERS and kind.lower() not in APEX_OPTIMIZERS and kind not in torch_names:
        raise unknown_key_error(f"optimizer.type={kind!r}", [*DEEPSPEED_OPTIMIZERS, *APEX_OPTIMIZERS, *torch_names],
                                source, "not an optimizer DeepSpeed or mmkd builds", value=kind.lower())
    classes = DEEPSPEED_OPTIMIZER_CLASSES.get(kind.lower()) or ([f"torch.optim.{kind}"] if kind in torch_names else [])
    if not classes:
        return  # apex (checked by its own constructor before any work) or a DeepSpeed type without a table entry
    accepted = set(DEEPSPEED_OPTIMIZER_KEYS)
    for path in classes:
        module, name = path.rsplit(".", 1)
        accepted |= set(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    accepted -= {"params", "model_params", "self"}
    for key in block.get("params", {}):
        if key not in accepted:
            known = [f"optimizer.params.{name}" for name in sorted(accepted)]
            raise unknown_key_error(f"optimizer.params.{key}", known,
                                    source, f"not an argument of the optimizers DeepSpeed builds for {kind}")


def unknown_key_error(key: str, known: list[str], source: str | Path, why: str, value: str | None = None
                      ) -> MMKDError:
    """MMKDError "`source`: unknown DeepSpeed key `key` (`why`); did you mean <close matches of `value`
    (default `key`) among `known`>?"."""
    close = difflib.get_close_matches(value if value is not None else key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"
    return MMKDError(f"{source}: unknown DeepSpeed key {key!r} ({why}){hint}")


def check_batch_sizes(config: dict[str, Any], source: str | Path, world_size: int) -> tuple[int, int]:
    """(micro-batch per rank, accumulation steps) as DeepSpeed resolves them for `world_size` ranks.

    Raises MMKDError naming `source` and the values when train_batch_size is not micro x accumulation
    x world, or a value is not positive (DeepSpeed's AssertionError at deepspeed.initialize).
    """
    from deepspeed.runtime.config import DeepSpeedConfig

    check_batch_size_types(config, source)
    try:
        resolved = DeepSpeedConfig(config)
    except AssertionError as err:
        if not is_batch_size_refusal(err):
            raise MMKDError(f"{source}: DeepSpeed refuses this config: {one_line(err)}") from err
        given = {key: config[key] for key in BATCH_KEYS if key in config}
        values = ", ".join(f"{key}={value}" for key, value in given.items())
        if any(isinstance(value, int) and value < 1 for value in given.values()):
            raise MMKDError(f"{source}: batch sizes must be >= 1: {values} ({one_line(err)})") from err
        raise MMKDError(f"{source}: batch sizes do not fit {world_size} rank(s): {values}; train_batch_size must "
                        f"equal train_micro_batch_size_per_gpu x gradient_accumulation_steps x ranks "
                        f"({one_line(err)}); drop train_batch_size to let DeepSpeed compute it") from err
    return resolved.train_micro_batch_size_per_gpu, resolved.gradient_accumulation_steps


def is_batch_size_refusal(err: AssertionError) -> bool:
    """Whether DeepSpeedConfig raised `err` while resolving the batch sizes (not in its later checks)."""
    names = set()
    frame = err.__traceback__
    while frame is not None:
        names.add(frame.tb_frame.f_code.co_name)
        frame = frame.tb_next
    return "_configure_train_batch_size" in names


def one_line(err: BaseException) -> str:
    """The exception's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__
