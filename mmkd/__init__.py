"""MMKD: multi-level distillation of an English teacher's semantic knowledge into a multilingual student."""

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _map_checkout_kernels() -> None:
    """Make the repository's top-level kernels/ importable as `mmkd.kernels` when running from a source
    checkout (PYTHONPATH), the name an install gives it through pyproject.toml's package-dir mapping.
    An installed wheel has mmkd/kernels/ itself and is left alone."""
    package = Path(__file__).resolve().parent
    kernels = package.parent / "kernels"
    if (package / "kernels").is_dir() or not (package.parent / "pyproject.toml").is_file() \
            or not (kernels / "__init__.py").is_file():
        return
    spec = importlib.util.spec_from_file_location(f"{__name__}.kernels", kernels / "__init__.py",
                                                  submodule_search_locations=[str(kernels)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


_map_checkout_kernels()
