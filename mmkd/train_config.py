"""The training recipe: one dataclass of defaults, a JSON/YAML file of deltas, then `--key=value`.

Order (nanoGPT's configurator, without `exec`): the defaults below, then the recipe file, then the
command-line overrides (`--key=value` or `--key value`); every value is type-checked and unknown keys
are refused with the close matches. Batch sizes, learning rate, optimizer, scheduler, precision and
ZeRO stage are NOT here: they live in the DeepSpeed JSON named by `ds_config`, their only owner; `ds`
records changes to values of that JSON (`--ds.optimizer.params.lr=1e-4`), applied when it is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmkd.errors import MMKDError
from mmkd.objectives.combined import TERMS, LossWeights
from mmkd.objectives.structure import FORMS, IMPLS, SENTENCE_MODES
from mmkd.shipped_configs import resolve_config


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
    ds_config: str = "cpu_bf16_zero2"  # DeepSpeed JSON, a path or shipped name: batch, lr, optimizer, ZeRO
    ds: dict[str, Any] = field(default_factory=dict)  # changes to ds_config values: --ds.optimizer.params.lr=1e-4
    output_dir: str = "runs/mmkd"  # checkpoints/, tensorboard/, export/, train_config.json
    # --- objectives (mmkd-method.md; the arguments of mmkd.objectives.combined.MMKDLoss, by the same names) ---
    weights: dict[str, float] = field(default_factory=lambda: dataclasses.asdict(LossWeights()))  # --weights.tlm=0.1
    tau_w: float = 0.05  # XWCL temperature
    struct_tau: float = 0.1  # StrucA temperature
    struct_form: str = "kl"  # StrucA form: "kl" | "pearson"
    struct_sent_mode: str = "monolingual"  # sentence StrucA: "monolingual" (the method's) | "cross_lingual"
    struct_bank_size: int = 0  # cross_lingual sentence StrucA: teacher embeddings of this many train sentences
    # (from teacher_cache, drawn once from seed) as extra negatives of each y; 0 = the batch's x only
    struct_sent_detach_x: bool = False  # cross_lingual sentence StrucA moves y only; SentA alone trains x
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
    resume: bool = False  # continue exactly from the newest complete checkpoint in output_dir
    resume_from: str | None = None  # continue from this checkpoint of output_dir/checkpoints (step<N>)
    keep_checkpoints: int = 3  # complete checkpoints kept, the newest; older ones are deleted; 0 = keep all
    overwrite: bool = False  # start over in a non-empty output_dir, deleting its checkpoints, export, logs
    export: bool = True  # write the HF and sentence-transformers model directories at the end
    peak_tflops: float = 0.0  # per-device peak for MFU; 0 = by GPU name (monitoring.GPU_PEAK_TFLOPS), CPU measured
    progress_bar: bool = True  # tqdm bar on rank 0
    num_workers: int = 0  # DataLoader worker processes collating training batches
    # stop after this many optimizer steps in a row with a non-finite loss or a skipped update; above the
    # 18 an fp16 loss scale needs to fall from 2**16 to 1 (16 halvings after a hysteresis of 2)
    max_skipped_steps: int = 25

    def validate(self) -> None:
        """Raise MMKDError on values no run can use (paths are checked where they are opened)."""
        checks = {
            "corpus": bool(self.corpus),
            "student": bool(self.student),
            "teacher_cache": self.live_teacher or bool(self.teacher_cache),
            "struct_form": self.struct_form in FORMS,
            "struct_sent_mode": self.struct_sent_mode in SENTENCE_MODES,
            "struct_sent_detach_x": not self.struct_sent_detach_x or self.struct_sent_mode == "cross_lingual",
            "struct_bank_size": self.struct_bank_size == 0 or (
                self.struct_bank_size > 0 and self.struct_sent_mode == "cross_lingual" and not self.live_teacher),
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
            "keep_checkpoints": self.keep_checkpoints >= 0,
            "peak_tflops": self.peak_tflops >= 0,
            "num_workers": self.num_workers >= 0,
            **training_value_checks(self),
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            hints = {
                "corpus": "set corpus=<corpus directory>",
                "student": "set student=<student directory from `mmkd init-student`>",
                "teacher_cache": "set teacher_cache=<dir from `mmkd cache-teacher`> or live_teacher=true",
                "struct_sent_detach_x": "it applies to struct_sent_mode=cross_lingual",
                "struct_bank_size": ">= 0; above 0 it needs struct_sent_mode=cross_lingual and a teacher_cache "
                                    "(live_teacher=false)",
                **TRAINING_VALUE_HINTS,
            }
            details = "; ".join(f"{key}={getattr(self, key)!r} ({hints.get(key, 'out of range')})" for key in bad)
            raise MMKDError(f"train config: bad value: {details}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TRAINING_VALUE_HINTS = {
    "tau_w": "a temperature must be finite and > 0",
    "struct_tau": "a temperature must be finite and > 0",
    "weights": "weights must be finite and >= 0, at least one > 0",
    "max_skipped_steps": "must be >= 1",
}


def training_value_checks(cfg: TrainConfig) -> dict[str, bool]:
    """{key: ok} for values that can only fail at a training step: a temperature <= 0 or not finite
    (the logits divided by it are infinite), a weight that is not finite (every step overflows), a
    limit of skipped steps below 1. Merged into TrainConfig.validate."""
    return {
        "tau_w": math.isfinite(cfg.tau_w) and cfg.tau_w > 0,
        "struct_tau": math.isfinite(cfg.struct_tau) and cfg.struct_tau > 0,
        "weights": all(math.isfinite(w) and w >= 0 for w in cfg.weights.values())
        and any(w > 0 for w in cfg.weights.values()),
        "max_skipped_steps": cfg.max_skipped_steps >= 1,
    }


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)
BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
DEEPSPEED_OWNED = {
    "lr", "learning_rate", "batch_size", "micro_batch_size", "train_batch_size",
    "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer", "scheduler",
    "fp16", "bf16", "precision", "dtype", "zero_stage", "zero_optimization", "gradient_clipping",
    "weight_decay", "warmup_steps", "warmup_num_steps",
}


def load_train_config(path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the recipe file (.json, .yaml, .yml) at `path` (or a shipped recipe's name), then
    the overrides: `--key=value` or `--key value`.

    `--flag` alone sets a bool key to true; dashes in keys read as underscores (`--live-teacher`);
    `weights` entries are set one by one with `--weights.tlm=0.5` (or all at once, `--weights={tlm: 0.5}`);
    `--ds.<dotted path>=value` changes a value of the DeepSpeed JSON (recorded in `ds`).
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_check_mapping(_read_recipe(path), source=path))
    for item in joined_overrides(overrides or []):
        key, value = _parse_override(item)
        if key.startswith(("weights.", "ds.")):
            name, entry = key.split(".", 1)
            entries = dict(values.get(name, getattr(TrainConfig(), name)))
            entries[entry] = value
            values[name] = entries
        else:
            values[key] = value
        values = _check_mapping(values, source=f"override {item!r}")
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def joined_overrides(args: list[str]) -> list[str]:
    """`--key value` pairs joined into `--key=value`; `--key=value` and a bool `--flag` alone are kept.
    A word not starting with "--" after a key that takes a value (or after a bool key, when it reads as
    a bool) is that key's value; any other stray word is refused."""
    joined: list[str] = []
    for arg in args:
        previous = joined[-1] if joined else ""
        if arg.startswith("--") or not previous.startswith("--") or "=" in previous:
            if not arg.startswith("--"):
                raise MMKDError(f"override {arg!r}: expected --key=value or --key value")
            joined.append(arg)
            continue
        key = previous[2:].replace("-", "_")
        if FIELD_TYPES.get(key) is bool and arg.lower() not in BOOL_WORDS:
            raise MMKDError(f"override {arg!r}: expected --key=value or --key value ({previous} is a flag)")
        joined[-1] = f"{previous}={arg}"
    return joined


def config_key_help() -> str:
    """One line per TrainConfig key, "--key  type  (default ...)  comment", from the dataclass and the
    comments beside its fields (the `mmkd train --help` epilog)."""
    source = inspect.getsource(TrainConfig)
    comments = dict(re.findall(r"^\s{4}(\w+): [^\n]*?#\s*(.*)$", source, flags=re.MULTILINE))
    defaults = TrainConfig()
    lines = []
    for spec in dataclasses.fields(TrainConfig):
        kind = getattr(FIELD_TYPES[spec.name], "__name__", None) or str(FIELD_TYPES[spec.name])
        lines.append(f"  --{spec.name:<22} {str(kind).replace('typing.', ''):<16} "
                     f"(default {getattr(defaults, spec.name)!r})  {comments.get(spec.name, '')}".rstrip())
    return "\n".join(lines)


def save_train_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")


def _read_recipe(path: str) -> dict[str, Any]:
    file = resolve_config(path, "recipes")
    text = file.read_text()
    import yaml

    try:
        if file.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif file.suffix == ".json":
            data = json.loads(text)
        else:
            raise MMKDError(f"{path}: train config must be .json, .yaml or .yml")
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise MMKDError(f"{path}:{where} not valid YAML: {err.problem or err.context}; fix the file") from err
    except (json.JSONDecodeError, ValueError, yaml.YAMLError) as err:
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
        return MMKDError(f"{source}: {key!r} is set in the DeepSpeed JSON (train config key ds_config), not here; "
                         f"change it with --ds.<path in the JSON>=value (e.g. --ds.optimizer.params.lr=1e-4)")
    close = difflib.get_close_matches(key, FIELD_TYPES, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(FIELD_TYPES)}"
    return MMKDError(f"{source}: unknown train config key {key!r}{hint}")


def _check_type(key: str, value: Any, annotation: Any, source: str) -> Any:
    if key == "ds":
        if not isinstance(value, dict) or not all(isinstance(path, str) for path in value):
            raise MMKDError(f"{source}: ds must be a mapping of dotted DeepSpeed JSON path -> value")
        return dict(value)
    if key == "weights":
        if not isinstance(value, dict):
            raise MMKDError(f"{source}: weights must be a mapping of objective -> weight")
        unknown = sorted(set(value) - set(TERMS))
        if unknown:
            raise MMKDError(f"{source}: unknown objective in weights: {unknown}; known: {list(TERMS)}")
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
    if key.startswith("ds."):
        if not sep or key == "ds.":
            raise MMKDError(f"override {item!r}: expected --ds.<path in the DeepSpeed JSON>=value")
        return key, yaml_value(raw)
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


def yaml_value(raw: str) -> Any:
    """A command-line value read as YAML (JSON included): 1e-4 -> float, true -> bool, {tlm: 0.1} -> dict,
    anything else a string. MMKDError when it does not parse."""
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise MMKDError(f"value {raw!r}: cannot parse: {err}") from err
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _parse_value(key: str, raw: str, annotation: Any, item: str) -> Any:
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if type(None) in allowed and raw.lower() in ("none", "null"):
        return None
    base = next(t for t in allowed if t is not type(None))
    try:
        if base is bool:
            return BOOL_WORDS[raw.lower()]
        if typing.get_origin(base) is dict:
            return yaml_value(raw)
        return base(raw)
    except (KeyError, ValueError) as err:
        raise MMKDError(f"override {item!r}: {key} must be {base.__name__}, got {raw!r}") from err
