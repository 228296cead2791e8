"""What verifying a cache entry costs: a 140 MB UNet (google/ddpm-cifar10-32's architecture,
random weights) saved as the bench saves models, its manifest written, then verified and
loaded three times. The numbers are quoted in docs/user-guide.md (Caches).

    python benchmarks/cache_hash.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from diffusers import UNet2DModel

from side_bench.results.cache import entry_problem, write_manifest

CIFAR10_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)


def seconds(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        UNet2DModel(**CIFAR10_UNET).save_pretrained(folder, safe_serialization=True)
        size = (folder / "diffusion_pytorch_model.safetensors").stat().st_size
        print(f"{size / 1e6:.1f} MB; manifest written in {seconds(lambda: write_manifest(folder, 'model')):.3f} s")
        for _ in range(3):
            verify = seconds(lambda: entry_problem(folder))
            load = seconds(lambda: UNet2DModel.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False))
            print(f"verify {verify:.3f} s, from_pretrained {load:.3f} s")
        assert entry_problem(folder) is None
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
