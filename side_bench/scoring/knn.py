"""Exact nearest-neighbour search of candidates against a training set.

faiss (flat, exact) when it is installed, else torch; both are chunked over the queries so
memory stays bounded by ``chunk_bytes`` whatever the number of candidates. Distances are
returned as similarities in the caller's convention (see ``similarity_from_raw``).
"""

from __future__ import annotations

import numpy as np
import torch

from side_bench.errors import BenchError

DEFAULT_CHUNK_BYTES = 256 * 2**20


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ("auto", "faiss", "torch")  # auto: faiss when it is installed, else the chunked torch search


def check_backend(backend: str, where: str = "knn backend") -> str:
    """``backend`` if it names a k-NN backend, else BenchError naming ``where``."""
    if backend not in BACKENDS:
        raise BenchError(f"{where}: expected 'auto', 'faiss' or 'torch', got {backend!r}")
    return backend


def resolve_backend(backend: str) -> str:
    """The backend that will run: 'auto' decided, 'faiss' only when faiss is installed."""
    if check_backend(backend) == "auto":
        return "faiss" if faiss_available() else "torch"
    if backend == "faiss" and not faiss_available():
        raise BenchError("knn backend 'faiss' asked for, but faiss is not installed")
    return backend


class ExactIndex:
    """An exact index over ``base`` (N, D) for "l2" or "cosine" similarity.

    For "l2", gamma = 1 - ||a - b|| / sqrt(D); for "cosine", the cosine of the angle.
    Vectors are normalised here for cosine, so callers pass raw embeddings.
    """

    def __init__(self, base: torch.Tensor, similarity: str, backend: str = "auto",
                 device: torch.device | str = "cpu", chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        if similarity not in ("l2", "cosine"):
            raise BenchError(f"similarity: expected 'l2' or 'cosine', got {similarity!r}")
        self.similarity = similarity
        self.backend = resolve_backend(backend)
        self.device = torch.device(device)
        base = base.detach().float().reshape(len(base), -1)
        if similarity == "cosine":
            base = torch.nn.functional.normalize(base, dim=1)
        self.dim = base.shape[1]
        self.size = base.shape[0]
        # Chunk so one (chunk x N) block of distances stays within the memory budget.
        self.chunk = max(1, chunk_bytes // (4 * max(1, self.size)))
        if self.backend == "faiss":
            import faiss

            array = np.ascontiguousarray(base.cpu().numpy(), dtype=np.float32)
            self.index = faiss.IndexFlatL2(self.dim) if similarity == "l2" else faiss.IndexFlatIP(self.dim)
            if self.device.type == "cuda" and hasattr(faiss, "StandardGpuResources"):
                self._gpu_resources = faiss.StandardGpuResources()
                self.index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
            self.index.add(array)
        else:
            self.base = base.to(self.device)
            self.base_sq = (self.base * self.base).sum(1)

    def _prepare(self, queries: torch.Tensor) -> torch.Tensor:
        queries = queries.detach().float().reshape(len(queries), -1)
        if queries.shape[1] != self.dim:
            raise BenchError(
                f"candidates have {queries.shape[1]} features, the training set {self.dim}"
            )
        if self.similarity == "cosine":
            queries = torch.nn.functional.normalize(queries, dim=1)
        return queries

    def _to_similarity(self, raw: torch.Tensor) -> torch.Tensor:
        """faiss/torch raw scores (squared L2 or inner product) -> gamma in [-1, 1]."""
        if self.similarity == "l2":
            return 1.0 - torch.sqrt(raw.clamp_min(0.0) / self.dim)
        return raw.clamp(-1.0, 1.0)

    def _torch_partial(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(partial, offset): raw score = partial + offset[:, None], one matrix product.

        For l2, partial = ||b||^2 - 2 a.b (the bias is fused into the product) and offset =
        ||a||^2: a row's order does not depend on its offset, so the nearest neighbour and
        the range test need no second pass over the block. For cosine, offset is 0.
        """
        chunk = chunk.to(self.device)
        if self.similarity == "cosine":
            return chunk @ self.base.T, torch.zeros(len(chunk), device=self.device)
        partial = torch.addmm(self.base_sq[None, :], chunk, self.base.T, alpha=-2.0)
        return partial, (chunk * chunk).sum(1)

    def _raw_threshold(self, lowest: float) -> float:
        """A raw score bound that keeps every pair with similarity >= lowest (and a few more)."""
        if self.similarity == "l2":
            return ((1.0 - lowest) ** 2) * self.dim * (1 + 1e-6) + 1e-6
        return lowest - 1e-6

    def _torch_block(self, chunk: torch.Tensor, k: int, lowest: float | None):
        """Top-k (raw, idx) of a chunk and, with ``lowest``, the pairs (rows, cols, sims) with
        similarity >= lowest; rows whose best score is out of range are not scanned again."""
        partial, offset = self._torch_partial(chunk)
        largest = self.similarity == "cosine"
        if k == 1:
            top, idx = partial.max(1, keepdim=True) if largest else partial.min(1, keepdim=True)
        else:
            top, idx = torch.topk(partial, k, dim=1, largest=largest)
        raw = top + offset[:, None]
        pairs = None
        if lowest is not None:
            bound = self._raw_threshold(lowest)
            best = raw[:, 0]
            rows = (best >= bound if largest else best <= bound).nonzero(as_tuple=True)[0]
            if len(rows):
                block = partial[rows] + offset[rows, None]
                near = block >= bound if largest else block <= bound
                hit_rows, cols = near.nonzero(as_tuple=True)
                sims = self._to_similarity(block[hit_rows, cols]).cpu()
                keep = sims >= lowest
                pairs = (rows[hit_rows].cpu()[keep], cols.cpu()[keep], sims[keep])
            else:
                pairs = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0))
        return raw.cpu(), idx.cpu().long(), pairs

    def _faiss_pairs(self, chunk: torch.Tensor, lowest: float):
        """faiss range search: the pairs (rows, cols, sims) with similarity >= lowest."""
        array = np.ascontiguousarray(chunk.cpu().numpy())
        if self.similarity == "l2":
            # gamma >= lowest  <=>  squared distance <= ((1 - lowest)^2) * D
            radius = ((1.0 - lowest) ** 2) * self.dim * (1 + 1e-6) + 1e-12
        else:
            radius = lowest - 1e-6  # faiss keeps inner products > radius
        lims, raw, idx = self.index.range_search(array, float(radius))
        rows = torch.from_numpy(np.repeat(np.arange(len(array)), np.diff(lims.astype(np.int64)))).long()
        sims = self._to_similarity(torch.from_numpy(raw))
        keep = sims >= lowest
        return rows[keep], torch.from_numpy(idx).long()[keep], sims[keep]

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most similar base vectors per query: (similarities, indices), best first."""
        (sims, indices), _ = self.search_with_pairs(queries, k, None)
        return sims, indices

    def search_with_pairs(self, queries: torch.Tensor, k: int, lowest: float | None):
        """``((sims, idx), pairs)``: the k most similar base vectors per query, best first, and,
        when ``lowest`` is given, every (query row, base index, similarity) with similarity >=
        lowest (a range search; None otherwise).

        With the torch backend both come from one matrix product per chunk; faiss makes a
        search and a range search. Memory is bounded by the chunk and the pairs found.
        """
        queries = self._prepare(queries)
        k = min(k, self.size)
        sims, indices, pair_parts = [], [], []
        for start in range(0, len(queries), self.chunk):
            chunk = queries[start : start + self.chunk]
            if self.backend == "faiss":
                raw, idx = self.index.search(np.ascontiguousarray(chunk.cpu().numpy()), k)
                raw, idx = torch.from_numpy(raw), torch.from_numpy(idx).long()
                pairs = self._faiss_pairs(chunk, lowest) if lowest is not None else None
            else:
                raw, idx, pairs = self._torch_block(chunk, k, lowest)
            sims.append(self._to_similarity(raw))
            indices.append(idx)
            if pairs is not None:
                pair_parts.append((pairs[0] + start, pairs[1], pairs[2]))
        found = ((torch.cat(sims), torch.cat(indices)) if sims
                 else (torch.empty(0, k), torch.empty(0, k, dtype=torch.long)))
        if lowest is None:
            return found, None
        if not pair_parts:
            return found, (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0))
        return found, tuple(torch.cat(part) for part in zip(*pair_parts, strict=True))

    def search_with_hits(self, queries: torch.Tensor, k: int, bands: list[tuple[float, float]]):
        """``(search(queries, k), base_hits(queries, bands))`` from one pass over the distances."""
        lowest = min((low for low, _ in bands), default=None)
        found, pairs = self.search_with_pairs(queries, k, lowest)
        return found, self._masks(pairs, bands)

    def base_hits(self, queries: torch.Tensor, bands: list[tuple[float, float]]) -> list[torch.Tensor]:
        """For each band, a boolean mask over the base: is some query's similarity in it?

        This is the union that UMS counts. Only pairs at or above the lowest band edge are
        looked at (a range search), chunk by chunk, so memory is bounded by the masks.
        """
        return self.search_with_hits(queries, 1, bands)[1]

    def _masks(self, pairs, bands: list[tuple[float, float]]) -> list[torch.Tensor]:
        masks = [torch.zeros(self.size, dtype=torch.bool) for _ in bands]
        if pairs is not None:
            _, cols, sims = pairs
            for mask, band in zip(masks, bands, strict=True):
                mask[cols[in_band(sims, band)]] = True
        return masks


def in_band(values: torch.Tensor, band: tuple[float, float]) -> torch.Tensor:
    """low <= v < high; a band whose high edge is at the top of the scale (>= 1) is closed."""
    low, high = band
    upper = values <= high if high >= 1.0 else values < high
    return (values >= low) & upper
