"""Where a model's files are, and the sha256 that identifies its weights.

Every model (teacher, source encoder, student) is loaded from a local directory: a path is used as
is; a hub name is fetched with `huggingface_hub.snapshot_download` (which, offline, only finds what
is already in the local hub cache). One local directory lets the teacher read its
sentence-transformers config and hash its weights the same way wherever it came from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from huggingface_hub import is_offline_mode, snapshot_download

from mmkd.errors import MMKDError

WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")  # plain and sharded checkpoints
# Formats this package never loads: skipped when fetching a hub snapshot.
OTHER_FRAMEWORK_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "openvino/*", "*.tflite",
                            "coreml/*", "*.mlmodel"]


def model_dir(name_or_path: str | Path, role: str) -> Path:
    """Local directory of the model `name_or_path` (a path, or a hub name); `role` names it in errors."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MMKDError(f"{role} {path}: not a Hugging Face model directory (no config.json)")
        return path
    if looks_like_path(str(name_or_path)):
        raise MMKDError(f"{role} {path}: no such directory")
    try:
        fetched = Path(snapshot_download(str(name_or_path), ignore_patterns=OTHER_FRAMEWORK_PATTERNS))
    except Exception as err:  # the hub client raises many types: every one means "not available"
        where = "offline (HF_HUB_OFFLINE) and not in the hub cache" if is_offline_mode() else str(err)
        raise MMKDError(f"{role} {name_or_path}: no such directory, and no hub model: {where}") from err
    return model_dir(fetched, role)


def looks_like_path(name_or_path: str) -> bool:
    """True for strings that can only be paths: hub names are "name" or "owner/name"."""
    return name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def weight_files(directory: Path) -> list[Path]:
    """The model weight files of a model directory (safetensors preferred), sorted by name."""
    for pattern in WEIGHT_PATTERNS:
        files = sorted(directory.glob(pattern))
        if files:
            return files
    raise MMKDError(f"{directory}: no weights file ({' or '.join(WEIGHT_PATTERNS)})")


def weights_sha256(directory: Path) -> str:
    """Identity of a model's weights: the sha256 of its single weights file; for a sharded checkpoint,
    the sha256 of the lines "file name<TAB>sha256" of its shards."""
    files = weight_files(directory)
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{file.name}\t{file_sha256(file)}\n" for file in files)
    return hashlib.sha256(lines.encode()).hexdigest()
