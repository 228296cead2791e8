"""The k-NN of celeba-scales' full scale on synthetic data of its shape: N_G candidates against
182,637 training images of 12,288 pixel features (3x64x64), 8.4 GiB in float32.

    python benchmarks/knn_celeba.py                       # the full shape: needs ~10 GiB free (CPU) or a GPU
    python benchmarks/knn_celeba.py --fraction 0.02       # scaled down (what fits beside other work)
    python benchmarks/knn_celeba.py --device cuda         # benchmarks/gpu_check.sh runs this
    python benchmarks/knn_celeba.py --device cuda --backend auto   # faiss-gpu where installed, else torch

How it fits: the training images are held once, in float32 (the torch backend searches the
base in place; faiss would copy it), and the queries are searched in chunks of 256 MiB of
distances (knn.DEFAULT_CHUNK_BYTES), so the peak is the base plus a few hundred MiB whatever
N_G. fp16 storage would halve the base but not keep distances exact (a copy at 0), so it is
not used. Pixel values are multiples of 1/255, as decoded images are; a tenth of the
candidates are near-copies of training images. Prints seconds, peak RSS (CPU) or peak CUDA
memory, and the bytes of the base, as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

N_TRAIN, DIM, N_G = 182_637, 3 * 64 * 64, 5_120
BANDS = [(0.85, 0.90), (0.90, 0.95), (0.95, 1.0)]


def faiss_gpu() -> bool:
    """faiss is installed with GPU support (faiss-gpu; faiss-cpu has no StandardGpuResources)."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="of the training images (and candidates)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--queries", type=int, default=N_G)
    parser.add_argument("--backend", default="torch", choices=("torch", "faiss", "auto"),
                        help="the fast pass; auto: faiss where it has GPU support and the device is CUDA, else torch")
    args = parser.parse_args(argv)
    from side_bench.scoring.knn import ExactIndex

    backend = args.backend
    if backend == "auto":
        backend = "faiss" if args.device.startswith("cuda") and faiss_gpu() else "torch"

    torch.set_num_threads(1) if args.device == "cpu" else None
    n_train = max(1000, int(N_TRAIN * args.fraction))
    n_queries = max(100, int(args.queries * min(1.0, args.fraction * 10)))
    generator = torch.Generator().manual_seed(0)
    base = torch.empty(n_train, DIM)
    for start in range(0, n_train, 8192):  # filled in blocks: no second full-size temporary
        block = base[start:start + 8192]
        block.copy_(torch.randint(256, block.shape, generator=generator, dtype=torch.uint8)).div_(255)
    copies = n_queries // 10
    queries = torch.randint(256, (n_queries, DIM), generator=generator, dtype=torch.uint8).float().div_(255)
    queries[:copies] = (base[:copies] + 0.003 * torch.randn(copies, DIM, generator=generator)).clamp(0, 1)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    index = ExactIndex(base, "l2", backend, device=device)
    built = time.perf_counter() - start
    (similarity, nearest), masks = index.search_with_hits(queries.to(device), 1, BANDS)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    found = {"shape": f"{n_queries} x {n_train} x {DIM}", "device": str(device), "backend": backend,
             "seconds": round(seconds, 2),
             "index_seconds": round(built, 2), "base_gib": round(base.numel() * 4 / 2**30, 2),
             "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
             "near_copies_found": int((nearest[:copies].cpu() == torch.arange(copies)).sum()), "copies": copies}
    if device.type == "cuda":
        found["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
