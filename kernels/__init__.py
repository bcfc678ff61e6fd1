"""Triton kernels, installed as `mmkd.kernels` (pyproject.toml maps this directory there; in a source
checkout `mmkd/__init__.py` does). Import the kernel modules themselves (`mmkd.kernels.struca_triton`):
importing one compiles nothing, but `TRITON_INTERPRET=1` must be set before the import to run them on CPU."""
