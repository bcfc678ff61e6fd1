"""The DeepSpeed JSON files and training recipes that ship with mmkd, found by name from any directory.

An install holds the repository's `ds_configs/` and `recipes/` inside the package (`mmkd/ds_configs`,
`mmkd/recipes`: pyproject.toml's package-dir mapping); a source checkout has them at its root.
`resolve_config` takes what a user wrote: a file on disk always wins; otherwise a bare name
(`cpu_bf16_zero2`, `cpu_main.yaml`) or a path inside the shipped directory's name
(`ds_configs/cpu_bf16_zero2.json`, as recipes write it) is the shipped file of that name.
"""

from __future__ import annotations

from pathlib import Path

from mmkd.errors import MMKDError

SHIPPED_SUFFIXES = {"ds_configs": (".json",), "recipes": (".yaml", ".yml", ".json")}
KIND_NAMES = {"ds_configs": "DeepSpeed config", "recipes": "train config file"}


def shipped_dir(kind: str) -> Path:
    """Directory of the shipped files of `kind` ("ds_configs" or "recipes"): the installed package's
    copy, else the source checkout's top-level directory."""
    package = Path(__file__).resolve().parent
    installed = package / kind
    return installed if installed.is_dir() else package.parent / kind


def shipped_names(kind: str) -> list[str]:
    """File names of the shipped files of `kind`, sorted."""
    return sorted(path.name for path in shipped_dir(kind).iterdir() if path.suffix in SHIPPED_SUFFIXES[kind])


def resolve_config(name_or_path: str | Path, kind: str) -> Path:
    """The file `name_or_path` names: itself when it exists, else the shipped file of `kind` it names
    (the suffix may be left out). Raises MMKDError naming the value and the shipped names otherwise."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute() and path.parent in (Path("."), Path(kind)):
        names = [path.name] if path.suffix else [path.name + suffix for suffix in SHIPPED_SUFFIXES[kind]]
        for name in names:
            candidate = shipped_dir(kind) / name
            if candidate.is_file():
                return candidate
    raise MMKDError(f"{name_or_path}: {KIND_NAMES[kind]} not found: no such file, and no shipped one of that "
                    f"name ({', '.join(shipped_names(kind))})")
