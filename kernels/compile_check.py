"""Ahead-of-time compile of every StrucA kernel variant for sm_80 and sm_90, no GPU needed.

The Triton interpreter cannot see register or shared-memory limits, spills, or tl.dot shape rules;
compiling for a GPUTarget does. For each arch x kernel (fwd, bwd) x form x storage dtype x
autotune config, `triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`
lowers the kernel to PTX and cubin (with the ptxas bundled in the triton wheel); registers and spills
come from running that ptxas with -v on the PTX (CompiledKernel's n_regs / n_spills need a device),
dynamic shared memory from the compiled metadata. A variant fails on a compile error, shared memory
above the arch's per-block limit, or any spill.

    python -m mmkd.kernels.compile_check [--arch 80 90] [--kernels ...] [--forms ...] [--dtypes ...]
                                         [--configs all|first]

Exit status 1 if any variant fails; one line per variant on stdout. TRITON_INTERPRET must be unset.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mmkd.objectives.structure import PEARSON_EPS

# Per-block shared memory limits (opt-in maximum): A100 163 KiB, H100 227 KiB.
SHARED_LIMIT = {80: 166912, 90: 232448}
# Storage variants a GPU run can hit: (pointer type, tile dtype, fp32 dot precision). fp32 tiles use
# "ieee" dots unless torch.backends.cuda.matmul.allow_tf32 is set (then "tf32").
DTYPE_VARIANTS = {"fp32": ("fp32", tl.float32, "ieee"), "fp32-tf32": ("fp32", tl.float32, "tf32"),
                  "fp16": ("fp16", tl.float16, "ieee"), "bf16": ("bf16", tl.bfloat16, "ieee")}
# Divisibility-by-16 hints triton specialises on at launch. The launchers guarantee these (16-byte
# aligned buffers, feature sizes and row strides padded to multiples of 16: struca_triton._aligned_rows),
# so this is the one specialisation ever compiled; N is arbitrary.
ALIGNED_ARGS = ("u_ptr", "v_ptr", "valid_ptr", "loss_ptr", "stats_ptr", "coef_ptr", "scale_ptr", "du_ptr",
                "D_S", "D_T", "stride_u", "stride_v", "stride_du")


@dataclass
class Result:
    """One compiled variant: resources, or the error that stopped it."""

    name: str
    registers: int = -1
    spill_stores: int = -1
    spill_loads: int = -1
    shared: int = -1
    error: str = ""

    def failure(self, arch: int) -> str:
        if self.error:
            return self.error
        if self.shared > SHARED_LIMIT[arch]:
            return f"shared memory {self.shared} B > {SHARED_LIMIT[arch]} B"
        if self.spill_stores or self.spill_loads:
            return f"register spills ({self.spill_stores} B stored, {self.spill_loads} B loaded)"
        return ""


def _signature(fn, dtype: str) -> dict[str, str]:
    """Non-constexpr argument types: tiles in `dtype`, valid uint8, statistics and outputs fp32."""
    types = {"u_ptr": f"*{dtype}", "v_ptr": f"*{dtype}", "valid_ptr": "*u8", "inv_tau": "fp32"}
    return {name: types.get(name, "*fp32" if name.endswith("_ptr") else "i32")
            for i, name in enumerate(fn.arg_names) if i not in fn.constexprs}


def _ptxas_resources(ptx: str, arch: int) -> tuple[int, int, int]:
    """(registers, spill store bytes, spill load bytes) from the wheel's ptxas -v on `ptx`."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        log = subprocess.run([get_ptxas(arch).path, "-v", "--regAllocOptLevel=2",
                              f"--gpu-name={sm_arch_from_capability(arch)}", src, "-o", src + ".o"],
                             check=True, capture_output=True, text=True).stderr
    registers = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return registers, int(spills.group(1)), int(spills.group(2))


def compile_variant(kernel, arch: int, form: str, dtype_variant: str, config) -> Result:
    """Compile one autotuned kernel (`_struca_fwd_kernel` or `_struca_bwd_kernel`) for one config."""
    from mmkd.kernels import struca_triton as st

    fn = kernel.fn
    dtype, dot, precision = DTYPE_VARIANTS[dtype_variant]
    constexprs = {"FORM": st.FORM_IDS[form], "PEARSON_EPS": PEARSON_EPS, "DOT_DTYPE": dot, "ACC_DTYPE": tl.float32,
                  "PRECISION": precision, **config.kwargs}
    constexprs = {name: value for name, value in constexprs.items() if name in fn.arg_names}  # bwd: no PEARSON_EPS
    signature = _signature(fn, dtype)
    signature.update({name: "constexpr" for name in constexprs})
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in ALIGNED_ARGS if name in signature}
    meta = ",".join(f"{k}={v}" for k, v in config.kwargs.items())
    result = Result(f"sm_{arch} {fn.__name__} {form} {dtype_variant} {meta} "
                    f"warps={config.num_warps} stages={config.num_stages}")
    try:
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                                  target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": config.num_warps, "num_stages": config.num_stages,
                                           "maxnreg": config.maxnreg})
        result.shared = compiled.metadata.shared
        result.registers, result.spill_stores, result.spill_loads = _ptxas_resources(compiled.asm["ptx"], arch)
    except Exception as exc:  # a failed variant is reported with the rest, not raised
        result.error = f"{type(exc).__name__}: {' | '.join(str(exc).strip().splitlines()[-3:])}"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], choices=sorted(SHARED_LIMIT))
    parser.add_argument("--kernels", nargs="+", default=["fwd", "bwd"], choices=["fwd", "bwd"])
    parser.add_argument("--forms", nargs="+", default=["kl", "pearson"], choices=["kl", "pearson"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPE_VARIANTS), choices=list(DTYPE_VARIANTS))
    parser.add_argument("--configs", choices=["all", "first"], default="all",
                        help="every autotune config of a variant, or only the first (a quick check)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("unset TRITON_INTERPRET: the interpreter replaces the kernels that are compiled here")
    from mmkd.kernels import struca_triton as st

    kernels = {"fwd": st._struca_fwd_kernel, "bwd": st._struca_bwd_kernel}
    failures = 0
    for arch in args.arch:
        for name in args.kernels:
            for form in args.forms:
                for dtype_variant in args.dtypes:
                    _, dot, precision = DTYPE_VARIANTS[dtype_variant]
                    configs = st.GPU_CONFIGS[(name, st.dot_family(dot, precision))]
                    for config in configs[:1] if args.configs == "first" else configs:
                        result = compile_variant(kernels[name], arch, form, dtype_variant, config)
                        failure = result.failure(arch)
                        failures += bool(failure)
                        print(f"{'FAIL' if failure else 'ok  '} {result.name}: regs={result.registers} "
                              f"spill_st={result.spill_stores} spill_ld={result.spill_loads} "
                              f"shared={result.shared}" + (f"  <- {failure}" if failure else ""), flush=True)
    print(f"{failures} failing variant(s)")
    return int(failures > 0)


if __name__ == "__main__":
    sys.exit(main())
