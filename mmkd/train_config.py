"""The training recipe: one dataclass of defaults, a JSON/YAML file of deltas, then `--key=value`.

Order (nanoGPT's configurator, without `exec`): the defaults below, then the recipe file, then the
command-line overrides; every value is type-checked and unknown keys are refused with the close
matches. Batch sizes, learning rate, optimizer, scheduler, precision and ZeRO stage are NOT here:
they live in the DeepSpeed JSON named by `ds_config`, their only owner.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmkd.errors import MMKDError
from mmkd.objectives.combined import TERM_WEIGHTS
from mmkd.objectives.structure import FORMS, IMPLS


@dataclass
class TrainConfig:
    # --- inputs and outputs ---
    corpus: str = ""  # corpus directory (`mmkd corpus ...`): splits train and dev
    student: str = ""  # student directory (`mmkd init-student`): HF model, tokenizer, heads
    teacher: str | None = None  # teacher name or path; None = the packaged all-MiniLM-L6-v2
    teacher_layer: int = -1  # teacher layer whose token states are distilled
    teacher_cache: str | None = None  # `mmkd cache-teacher --split train` output; unless live_teacher
    dev_teacher_cache: str | None = None  # the same for --split dev; None = teacher runs at evaluation
    live_teacher: bool = False  # run the teacher in the loop instead of reading the cache
    ds_config: str = "ds_configs/cpu_bf16_zero2.json"  # batch, lr, optimizer, precision, ZeRO
    output_dir: str = "runs/mmkd"  # checkpoints/, tensorboard/, export/, train_config.json
    # --- objectives (mmkd-method.md; the arguments of mmkd.objectives.combined.MMKDLoss) ---
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TERM_WEIGHTS, 1.0))
    tau_w: float = 0.05  # XWCL temperature
    struct_tau: float = 0.1  # StrucA temperature
    struct_form: str = "kl"  # StrucA form: "kl" | "pearson"
    struct_impl: str = "auto"  # StrucA implementation: "reference" | "chunked" | "triton" | "auto"
    gather_negatives: bool = False  # XWCL negatives from every data-parallel rank
    gather_sentence_rows: bool = False  # sentence StrucA over the global batch
    gather_token_rows: bool = False  # token StrucA over every rank's matched tokens (False: per rank)
    # --- batches ---
    max_length: int = 128  # tokens per encoding (student x, y, TLM pair; teacher x)
    mlm_probability: float = 0.15
    alpha: float = 0.7  # language sampling: p_l proportional to n_l ** alpha
    length_group_window: int = 64  # global micro-batches sorted together by length (LanguageSampler); 0 = off
    # --- loop ---
    seed: int = 1234
    epochs: int = 1  # passes over the sampler's epoch; ignored when max_steps > 0
    max_steps: int = 0  # optimizer steps; 0 = epochs x steps per epoch
    max_time_minutes: float = 0.0  # loop time after which to stop (checkpoint, export); 0 = no bound
    log_interval: int = 10  # steps between scalar writes
    eval_interval: int = 500  # steps between dev evaluations; 0 = only at the end
    eval_batches: int = 20  # dev micro-batches per language per evaluation; 0 = the whole dev split
    eval_retrieval: bool = True  # dev evaluation also logs top-1 translation retrieval (pool of 200 per language)
    save_interval: int = 1000  # steps between checkpoints (one is always written at the end)
    resume: bool = False  # continue exactly from the latest checkpoint in output_dir
    export: bool = True  # write the HF and sentence-transformers model directories at the end
    peak_tflops: float = 0.0  # per-device peak for MFU; 0 = by GPU name (monitoring.GPU_PEAK_TFLOPS), CPU measured
    progress_bar: bool = True  # tqdm bar on rank 0
    num_workers: int = 0  # DataLoader worker processes collating training batches

    def validate(self) -> None:
        """Raise MMKDError on values no run can use (paths are checked where they are opened)."""
        checks = {
            "corpus": bool(self.corpus),
            "student": bool(self.student),
            "teacher_cache": self.live_teacher or bool(self.teacher_cache),
            "struct_form": self.struct_form in FORMS,
            "struct_impl": self.struct_impl in IMPLS,
            "max_length": self.max_length >= 8,
            "mlm_probability": 0.0 < self.mlm_probability < 1.0,
            "alpha": 0.0 <= self.alpha <= 1.0,
            "length_group_window": self.length_group_window >= 0,
            "epochs": self.epochs >= 1,
            "max_steps": self.max_steps >= 0,
            "max_time_minutes": self.max_time_minutes >= 0,
            "log_interval": self.log_interval >= 1,
            "eval_interval": self.eval_interval >= 0,
            "eval_batches": self.eval_batches >= 0,
            "save_interval": self.save_interval >= 1,
            "peak_tflops": self.peak_tflops >= 0,
            "num_workers": self.num_workers >= 0,
            "weights": all(w >= 0 for w in self.weights.values()) and any(w > 0 for w in self.weights.values()),
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            hints = {
                "corpus": "set corpus=<corpus directory>",
                "student": "set student=<student directory from `mmkd init-student`>",
                "teacher_cache": "set teacher_cache=<dir from `mmkd cache-teacher`> or live_teacher=true",
                "weights": "weights must be >= 0, at least one > 0",
            }
            details = "; ".join(f"{key}={getattr(self, key)!r} ({hints.get(key, 'out of range')})" for key in bad)
            raise MMKDError(f"train config: bad value: {details}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)
DEEPSPEED_OWNED = {
    "lr", "learning_rate", "batch_size", "micro_batch_size", "train_batch_size",
    "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer", "scheduler",
    "fp16", "bf16", "precision", "dtype", "zero_stage", "zero_optimization", "gradient_clipping",
    "weight_decay", "warmup_steps", "warmup_num_steps",
}


def load_train_config(path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the recipe file (.json, .yaml, .yml) at `path`, then `--key=value` overrides.

    `--flag` alone sets a bool key to true; dashes in keys read as underscores (`--live-teacher`);
    `weights` entries are set one by one with `--weights.tlm=0.5`.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_check_mapping(_read_recipe(path), source=path))
    for item in overrides or []:
        key, value = _parse_override(item)
        if key.startswith("weights."):
            weights = dict(values.get("weights", TrainConfig().weights))
            weights[key.split(".", 1)[1]] = value
            values["weights"] = weights
        else:
            values[key] = value
        values = _check_mapping(values, source=f"override {item!r}")
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def save_train_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")


def _read_recipe(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise MMKDError(f"{path}: train config file not found")
    text = file.read_text()
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif file.suffix == ".json":
            data = json.loads(text)
        else:
            raise MMKDError(f"{path}: train config must be .json, .yaml or .yml")
    except (json.JSONDecodeError, ValueError) as err:
        raise MMKDError(f"{path}: cannot parse: {err}") from err
    if not isinstance(data, dict):
        raise MMKDError(f"{path}: train config must be a mapping of key: value")
    return data


def _check_mapping(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Refuse unknown keys (naming close matches) and values of the wrong type; coerce int -> float."""
    checked = {}
    for key, value in values.items():
        if key not in FIELD_TYPES:
            raise _unknown_key(key, source)
        checked[key] = _check_type(key, value, FIELD_TYPES[key], source)
    return checked


def _unknown_key(key: str, source: str) -> MMKDError:
    if key in DEEPSPEED_OWNED:
        return MMKDError(f"{source}: {key!r} is set in the DeepSpeed JSON (train config key ds_config), not here")
    close = difflib.get_close_matches(key, FIELD_TYPES, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(FIELD_TYPES)}"
    return MMKDError(f"{source}: unknown train config key {key!r}{hint}")


def _check_type(key: str, value: Any, annotation: Any, source: str) -> Any:
    if key == "weights":
        if not isinstance(value, dict):
            raise MMKDError(f"{source}: weights must be a mapping of objective -> weight")
        unknown = sorted(set(value) - set(TERM_WEIGHTS))
        if unknown:
            raise MMKDError(f"{source}: unknown objective in weights: {unknown}; known: {list(TERM_WEIGHTS)}")
        return {**TrainConfig().weights, **{k: _check_type(f"weights.{k}", v, float, source) for k, v in value.items()}}
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in allowed:
        return None
    base = next(t for t in allowed if t is not type(None))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise MMKDError(f"{source}: {key} must be {base.__name__}, got {type(value).__name__} {value!r}")


def _parse_override(item: str) -> tuple[str, Any]:
    """`--key=value` -> (key, typed value); the value's type is the key's declared type."""
    if not item.startswith("--"):
        raise MMKDError(f"override {item!r}: expected --key=value")
    key, sep, raw = item[2:].partition("=")
    key = key.replace("-", "_")
    if key.startswith("weights."):
        annotation: Any = float
    elif key in FIELD_TYPES:
        annotation = FIELD_TYPES[key]
    else:
        raise _unknown_key(key, f"override {item!r}")
    if not sep:
        if annotation is not bool:
            raise MMKDError(f"override {item!r}: {key} needs a value (--{key}=...)")
        return key, True
    return key, _parse_value(key, raw, annotation, item)


def _parse_value(key: str, raw: str, annotation: Any, item: str) -> Any:
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if type(None) in allowed and raw.lower() in ("none", "null"):
        return None
    base = next(t for t in allowed if t is not type(None))
    try:
        if base is bool:
            return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[raw.lower()]
        if base is dict:
            return json.loads(raw)
        return base(raw)
    except (KeyError, ValueError) as err:
        raise MMKDError(f"override {item!r}: {key} must be {base.__name__}, got {raw!r}") from err
