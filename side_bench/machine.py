"""What this machine can do, detected at run time: the CPU's model and the instruction-set
flags that decide which precision is fast (native bf16 through AMX or AVX-512 BF16 on x86,
the BF16 extension on Arm; otherwise fp32 stays the fast path), and the GPU's name and
compute capability. Every result row carries it in ``device`` and ``benchmarks/perf.py``
prints it, because throughput measured on one CPU does not hold on another (an AVX2-only
machine of the same size ran the quickstart 2.3x slower and has no native bf16).

Light: no torch at import (the CLI imports this for a run only); nothing of side_bench.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# The flags that change which kernels and precisions are fast; the rest of /proc/cpuinfo's
# list (a hundred or so) says nothing about throughput and would only make rows longer.
SPEED_FLAGS = (
    # x86
    "fma", "f16c", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    # Arm (the "Features" line)
    "asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm",
)
# Native bf16 matrix arithmetic, the fastest first: what makes bf16 faster than fp32 rather
# than emulated (and slower) on a CPU.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")


def parse_cpuinfo(text: str) -> dict:
    """The model name and speed-relevant flags of the first processor in /proc/cpuinfo's text
    (x86's "model name" and "flags", or Arm's "Features", with "CPU part" when no name is given)."""
    model, flags, part = None, set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "cpu part" and part is None:
            part = value.strip()
    if model is None and part is not None:
        model = f"Arm CPU part {part}"
    return {"model": model, "flags": [flag for flag in SPEED_FLAGS if flag in flags]}


def native_bf16(flags: list[str]) -> str | None:
    """The flag that gives native bf16 arithmetic (``amx_bf16``, ``avx512_bf16`` or Arm's
    ``bf16``), or None: bf16 autocast is then emulated, and slower than fp32."""
    return next((flag for flag in NATIVE_BF16_FLAGS if flag in flags), None)


@functools.cache
def cpu() -> dict:
    """This CPU: model, speed-relevant flags, native bf16 (the flag or None), the fast
    precision ("bf16" where native, else "fp32"), the cores this process may use, and torch's
    own reading of its vector unit (``torch.backends.cpu.get_cpu_capability``)."""
    path = Path("/proc/cpuinfo")
    try:
        found = parse_cpuinfo(path.read_text())
    except OSError:  # not Linux: the platform's name, no flags (bf16 then counts as not native)
        found = {"model": None, "flags": []}
    found["model"] = found["model"] or platform.processor() or platform.machine() or "unknown"
    bf16 = native_bf16(found["flags"])
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    import torch

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch before 2.1
        capability = None
    return {**found, "native_bf16": bf16, "fast_precision": "bf16" if bf16 else "fp32", "cores": cores,
            "torch_capability": capability}


@functools.cache
def _cuda(index: int) -> dict:
    import torch

    properties = torch.cuda.get_device_properties(index)
    major, minor = properties.major, properties.minor
    bf16 = major >= 8  # Ampere and later: bf16 tensor cores
    return {"model": properties.name, "compute_capability": f"{major}.{minor}",
            "memory_gib": round(properties.total_memory / 2**30, 1),
            "native_bf16": f"sm_{major}{minor}" if bf16 else None, "fast_precision": "bf16" if bf16 else "fp32"}


def describe(device: str = "cpu") -> dict:
    """What a row's ``device`` holds: the device as asked ("cpu", "cuda:0"), its type, and
    what it can do; on CUDA the GPU's, with the host CPU's model beside it. The torch thread
    count is read now (rows are bit-identical only at one thread count)."""
    import torch

    kind = torch.device(device).type
    host = cpu()
    if kind == "cuda":
        index = torch.device(device).index
        found = _cuda(torch.cuda.current_device() if index is None else index)
        return {"name": str(device), "type": kind, **found, "host_cpu": host["model"]}
    return {"name": str(device), "type": kind, **host, "threads": torch.get_num_threads()}


def fast_precision(device: str = "cpu") -> str:
    """"bf16" where the device computes bf16 natively, else "fp32": the precision a benchmark
    or a default may choose for speed on this machine."""
    return describe(device)["fast_precision"]
