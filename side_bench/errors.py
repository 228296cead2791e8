"""Errors a user can fix. The CLI prints them on one line and exits with code 2."""


class BenchError(Exception):
    """Bad input: a suite file, a setting, a plugin name, an image folder, an array.

    The message names the file, key or plugin and says what was expected.
    """


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace folded, at most ``limit`` characters)."""
    return " ".join(str(error).split())[:limit] or type(error).__name__


def resolve_device(device: str, where: str, *, allow_auto: bool = False):
    """A torch.device from "cpu", "cuda", "cuda:N" (and "auto": CUDA when visible), or
    BenchError naming ``where``; asking for CUDA where torch sees none is an error."""
    import torch  # here, so that importing the errors costs nothing

    if allow_auto and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        choices = "'auto', 'cpu' or 'cuda'" if allow_auto else "'cpu' or 'cuda'"
        raise BenchError(f"{where}: expected {choices}, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"{where}: no CUDA device is visible to torch")
    return torch.device(device)


def use_deterministic_kernels(device) -> None:
    """Ask torch for deterministic kernels on CUDA, where it otherwise picks kernels by speed
    and some reduce with atomics in any order: on an H200, two runs of the quickstart with one
    seed differed (Gu ratio 140 vs 142 of 256 at scale 64). CPU kernels are deterministic at a
    fixed thread count already. ``warn_only``: an op with no deterministic CUDA kernel warns,
    naming itself, rather than stopping the run."""
    import os

    import torch

    if torch.device(device).type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it when it makes its handle
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    # The fused attention kernels' backward is not deterministic (torch warned of the
    # memory-efficient one in the UNets' attention while training on the H200); the math
    # kernel is, and at our image sizes costs nothing noticeable.
    for backend in ("enable_flash_sdp", "enable_mem_efficient_sdp", "enable_cudnn_sdp"):
        if hasattr(torch.backends.cuda, backend):
            getattr(torch.backends.cuda, backend)(False)


def lazy_module_attributes(module_name: str, names: dict[str, str], namespace: dict):
    """``(__getattr__, __dir__)`` for a module whose public ``names`` (name -> defining module)
    are imported on first use, so that importing it costs nothing (no torch, no pandas)."""
    import importlib

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
