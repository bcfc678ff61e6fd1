"""Benchmark StrucA implementations: time of forward + backward and peak extra memory, over N.

    .venv/bin/python scripts/bench_struca.py                          # N = 1k .. 32k, d_S = d_T = 384
    .venv/bin/python scripts/bench_struca.py --n 1024 4096 --d-s 768 --form pearson --csv bench.csv

Implementations: "reference" (struca_loss impl="reference", materialises N x N), "chunked"
(impl="chunked", row blocks), "compiled" (torch.compile of the reference), "triton" (the fused kernel,
CUDA only: skipped with a note on CPU). Time: median of --repeats runs of forward + backward after one
warm-up run (which includes torch.compile / Triton compilation and autotuning). Peak extra memory:
on CUDA torch.cuda.max_memory_allocated above what was allocated before the run; on CPU the torch
profiler's allocator events (profile_memory=True: every allocation and free of the CPU allocator,
in time order), peak of their running sum. Inputs (and nothing else) are allocated before.
Cases whose N x N implementations would not fit in --memory-gib are skipped with the estimate.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmkd.objectives.structure import struca_loss, struca_reference  # noqa: E402

# Peak extra bytes of the reference per (i, j) pair, fp32, forward + backward, measured with this
# script's CPU accounting (kl: 37 at N = 1024, 35.5 at 2048; pearson: 28, 26.5), rounded up. The
# compiled reference is estimated the same way (conservatively: fusion only lowers it).
REFERENCE_BYTES_PER_PAIR = 40
QUADRATIC = ("reference", "compiled")
GIB = 2.0 ** 30


def _implementations(form: str, tau: float) -> dict[str, Callable]:
    compiled = torch.compile(struca_reference, dynamic=False)
    return {
        "reference": lambda s, t: struca_loss(s, t, tau=tau, form=form, impl="reference"),
        "chunked": lambda s, t: struca_loss(s, t, tau=tau, form=form, impl="chunked"),
        "compiled": lambda s, t: compiled(s, t, tau=tau, form=form),
        "triton": lambda s, t: struca_loss(s, t, tau=tau, form=form, impl="triton"),
    }


def _step(fn: Callable, student: torch.Tensor, teacher: torch.Tensor) -> None:
    student.grad = None
    fn(student, teacher).backward()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_extra_bytes(fn: Callable, student: torch.Tensor, teacher: torch.Tensor) -> int:
    """Peak bytes allocated above the starting point during one forward + backward."""
    student.grad = None
    if student.is_cuda:
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _step(fn, student, teacher)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(fn, student, teacher)
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def _time_ms(fn: Callable, student: torch.Tensor, teacher: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(student.device)
        start = time.perf_counter()
        _step(fn, student, teacher)
        _sync(student.device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--d-s", type=int, default=384, help="student hidden size")
    parser.add_argument("--d-t", type=int, default=384, help="teacher hidden size")
    parser.add_argument("--form", choices=["kl", "pearson"], default="kl")
    parser.add_argument("--tau", type=float, default=0.1)
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--impls", nargs="+", default=["reference", "chunked", "compiled", "triton"],
                        choices=["reference", "chunked", "compiled", "triton"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-gib", type=float, default=24.0,
                        help="skip N x N implementations whose estimated peak exceeds this")
    parser.add_argument("--csv", help="append one row per case to this CSV file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    implementations = _implementations(args.form, args.tau)
    print(f"# device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"{torch.get_num_threads()} threads) torch={torch.__version__} d_S={args.d_s} d_T={args.d_t} "
          f"form={args.form} dtype={args.dtype} repeats={args.repeats} memory: "
          f"{'torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'torch profiler allocator events'}")
    print(f"{'N':>6} {'impl':<10} {'fwd+bwd ms':>11} {'peak extra MiB':>15}  note")
    rows = []
    for n in args.n:
        gen = torch.Generator().manual_seed(n)
        teacher = torch.randn(n, args.d_t, generator=gen).to(device=device, dtype=dtype)
        student = torch.randn(n, args.d_s, generator=gen).to(device=device, dtype=dtype)
        student.requires_grad_(True)
        for name in args.impls:
            ms = peak = None
            estimate = REFERENCE_BYTES_PER_PAIR * n * n / GIB
            if name == "triton" and device.type != "cuda":
                note = "skipped: needs CUDA (the interpreter is a correctness tool, not a benchmark)"
            elif name in QUADRATIC and estimate > args.memory_gib:
                note = f"skipped: needs ~{estimate:.1f} GiB"
            else:
                _step(implementations[name], student, teacher)  # warm-up: compilation, autotuning
                peak = _peak_extra_bytes(implementations[name], student, teacher) / 2 ** 20
                ms = _time_ms(implementations[name], student, teacher, args.repeats)
                note = ""
            print(f"{n:>6} {name:<10} {'' if ms is None else f'{ms:.1f}':>11} "
                  f"{'' if peak is None else f'{peak:.1f}':>15}  {note}", flush=True)
            rows.append({"date": datetime.date.today().isoformat(), "device": str(device),
                         "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                         "torch": torch.__version__, "n": n, "d_s": args.d_s, "d_t": args.d_t, "form": args.form,
                         "dtype": args.dtype, "impl": name, "ms": ms, "peak_mib": peak, "note": note})
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
