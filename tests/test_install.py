"""The package as a user installs it: a wheel (built from the repository's files alone) holds every
module, the kernels as mmkd.kernels, the DeepSpeed configs and recipes; installed into a fresh venv
that sees this environment's packages, it trains with a shipped recipe from an empty directory.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mmkd.shipped_configs import resolve_config, shipped_dir
from tiny_setup import build_tiny, subprocess_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ("pyproject.toml", "requirements.txt", "README.md", "LICENSE")
PACKAGE_DIRS = {"mmkd": "mmkd", "kernels": "mmkd/kernels", "ds_configs": "mmkd/ds_configs", "recipes": "mmkd/recipes"}


def expected_wheel_files() -> set[str]:
    """Every module and shipped config of the repository, at its path inside the wheel."""
    files = set()
    for directory, installed in PACKAGE_DIRS.items():
        for path in (REPO / directory).rglob("*"):
            if path.suffix in (".py", ".json", ".yaml") and "__pycache__" not in path.parts:
                files.add(f"{installed}/{path.relative_to(REPO / directory).as_posix()}")
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built, without network or build isolation, from a copy of the package's files."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        shutil.copy2(REPO / name, source / name)
    for directory in PACKAGE_DIRS:
        shutil.copytree(REPO / directory, source / directory, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "-w", str(root / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (found,) = (root / "dist").glob("mmkd-*.whl")
    return found


def test_wheel_holds_every_module_kernels_under_mmkd_and_the_shipped_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert expected_wheel_files() <= names
    assert not any(name.startswith("kernels/") for name in names)  # no top-level `kernels` package
    metadata = next(zipfile.ZipFile(wheel).read(name).decode() for name in names if name.endswith("/METADATA"))
    assert "Requires-Python: >=3.11" in metadata
    assert 'Requires-Dist: triton>=3.9; extra == "gpu"' in metadata
    assert not any(line.startswith("Requires-Dist: triton") and "extra" not in line for line in metadata.splitlines())


def test_installed_wheel_trains_with_a_shipped_recipe_from_an_empty_directory(wheel, tmp_path, teacher_dir):
    tiny = build_tiny(tmp_path / "tiny", teacher_dir)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())
    # this environment's packages (torch, deepspeed, ...) behind the venv's own: nothing is downloaded
    (venv_site / "host_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {key: value for key, value in subprocess_env().items() if key != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    located = subprocess.run([str(python), "-c", "import mmkd, mmkd.kernels; print(mmkd.__file__); "
                              "print(mmkd.kernels.__file__)"], cwd=empty, env=env, capture_output=True, text=True)
    assert located.returncode == 0, located.stderr
    assert all(Path(line).is_relative_to(venv_site) for line in located.stdout.split())
    command = [str(venv / "bin" / "mmkd"), "train", "cpu_main", f"--corpus={tiny / 'corpus'}",
               f"--student={tiny / 'student'}", f"--teacher={tiny / 'teacher'}",
               f"--teacher_cache={tiny / 'cache_train'}", "--max_length=32", "--max_steps=2", "--eval_interval=0",
               "--eval_batches=1", "--eval_retrieval=false", "--export=false", "--progress_bar=false",
               "--output_dir", "run", "--ds.train_micro_batch_size_per_gpu", "4", "--ds.optimizer.params.lr=3e-4"]
    result = subprocess.run(command, cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    saved = json.loads((empty / "run" / "train_config.json").read_text())
    assert saved["ds_config"] == "cpu_fp32_zero2_micro64"  # the shipped recipe's, found in the wheel
    # the --ds. overrides are recorded and reach DeepSpeed (its config resolves the micro-batch)
    assert saved["ds"] == {"train_micro_batch_size_per_gpu": 4, "optimizer.params.lr": 3e-4}
    assert "micro-batch 4 x accumulation 1" in result.stdout
    assert list((empty / "run" / "checkpoints").iterdir())


def test_names_resolve_to_shipped_files_and_files_on_disk_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = shipped_dir("ds_configs") / "cpu_bf16_zero2.json"
    assert resolve_config("cpu_bf16_zero2", "ds_configs") == shipped
    assert resolve_config("ds_configs/cpu_bf16_zero2.json", "ds_configs") == shipped
    assert resolve_config("cpu_main", "recipes") == shipped_dir("recipes") / "cpu_main.yaml"
    (tmp_path / "ds_configs").mkdir()
    (tmp_path / "ds_configs" / "cpu_bf16_zero2.json").write_text("{}")
    assert resolve_config("ds_configs/cpu_bf16_zero2.json", "ds_configs") == Path("ds_configs/cpu_bf16_zero2.json")
    from mmkd.errors import MMKDError

    with pytest.raises(MMKDError, match=r"nosuch: DeepSpeed config not found.*cpu_bf16_zero2\.json"):
        resolve_config("nosuch", "ds_configs")
