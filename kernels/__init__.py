"""Triton kernels. Import the kernel modules themselves (e.g. `kernels.struca_triton`): importing one
compiles nothing, but `TRITON_INTERPRET=1` must be set before the import to run them on CPU."""
