"""Exact nearest-neighbour search of candidates against a training set.

Two passes. The fast one (faiss flat, or a chunked torch matrix product) finds each query's
nearest base vectors and the pairs within a band's range from float32 distances in expanded
form, ||a||^2 + ||b||^2 - 2 a.b. Rounding in that form is relative to the norms, not to the
distance: a bit-identical copy of an image comes out at d ~ 1e-4, not 0, and a Gu ratio or
a band edge could be decided by it. So the second pass recomputes every distance it returns
exactly, from the differences in float64 (k x D per query), re-sorts the neighbours on those
and filters the range pairs on them; the fast pass only proposes, with a margin that covers
its own rounding (``SEARCH_TOLERANCE``). What comes back is what an exhaustive float64 search
would give, ties broken by the lower base index, on either backend.

Both passes are chunked over the queries so memory stays bounded by ``chunk_bytes`` whatever
the number of candidates. Distances are returned as similarities in the caller's convention
(``ExactIndex``), or as normalised l2 distances (``ExactIndex.nearest_distances``).
"""

from __future__ import annotations

import numpy as np
import torch

from side_bench.errors import BenchError

DEFAULT_CHUNK_BYTES = 256 * 2**20
# The fast pass's float32 error, relative to ||a||^2 + ||b||^2 (l2) or absolute (cosine, unit
# vectors): at least the worst-case bound D * 2^-24 of a dot product up to D ~ 1,700 and 8x the
# typical sqrt(D) * 2^-24 at D = 49,152 (128 px RGB). A pair is proposed when its fast score is
# within this of the edge; the exact pass decides.
SEARCH_TOLERANCE = 1e-4
# Neighbours fetched beyond the k asked for, so the exact re-sort can reorder near-ties; a row
# whose k-th exact neighbour is not clear of the last fetched by the tolerance is searched again
# with twice as many, so the result never depends on the fast pass's rounding.
EXTRA_NEIGHBOURS = 8
# float64 operands of the exact pass per block: a few MB, so the differences stay in cache
EXACT_BLOCK_BYTES = 8 * 2**20


def faiss_available() -> bool:
    """faiss is installed (an optional extra: ``pip install 'side-bench[faiss]'``)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ("auto", "faiss", "torch")


def check_backend(backend: str, where: str = "knn backend") -> str:
    """``backend`` if it names a k-NN backend, else BenchError naming ``where``."""
    if backend not in BACKENDS:
        raise BenchError(f"{where}: expected 'auto', 'faiss' or 'torch', got {backend!r}")
    return backend


def resolve_backend(backend: str) -> str:
    """The backend that runs: 'auto' decided, 'faiss' only when faiss is installed.

    The rule for 'auto': faiss where it is faster, torch otherwise; it has been faster nowhere
    measured, so 'auto' is the chunked torch search on every device. On CPU (one thread,
    search + band hits, benchmarks/perf.py's knn): torch 1.11x a bare matmul against faiss's
    1.71x at 2,000 x 10,000 x 512 (issue 21, idle machine); again in issue 30 (faiss-cpu 1.15.1,
    torch 2.13.0, loaded 2-core machine, best of 3): 0.35 s against 0.57 s at that shape, 0.030 s
    against 0.040 s at 1,000 x 4,096 x 192. On CUDA the faiss
    backend would search on the GPU (faiss-gpu) but runs its exact float64 pass on the CPU,
    where torch keeps both passes on the GPU; faiss-gpu has not been measured (its wheel is not
    carried to the GPU machines). faiss also keeps a second copy of the base (9 GB for CelebA at
    64 px). Both give the same neighbours and distances (the exact pass decides), so the rule
    changes speed, never numbers; a cell's config records 'auto' and, only where the resolved
    backend is faiss, faiss's version (run/suite.py ``cell_versions``).
    """
    if check_backend(backend) == "auto":
        return "torch"
    if backend == "faiss" and not faiss_available():
        raise BenchError("knn backend 'faiss' asked for, but faiss is not installed (pip install 'side-bench[faiss]')")
    return backend


_EMPTY_PAIRS = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.float64))


class ExactIndex:
    """An exact index over ``base`` (N, D) for "l2" or "cosine" similarity.

    For "l2", gamma = 1 - ||a - b|| / sqrt(D); for "cosine", the cosine of the angle.
    Vectors are normalised here for cosine, so callers pass raw embeddings. Similarities
    and distances come back in float64, computed from the differences (module docstring).
    """

    def __init__(self, base: torch.Tensor, similarity: str, backend: str = "auto",
                 device: torch.device | str = "cpu", chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        if similarity not in ("l2", "cosine"):
            raise BenchError(f"similarity: expected 'l2' or 'cosine', got {similarity!r}")
        self.similarity = similarity
        self.device = torch.device(device)
        self.backend = resolve_backend(backend)
        self.chunk_bytes = chunk_bytes
        raw = base.detach().float().reshape(len(base), -1)  # a view of the caller's images for pixels
        fast = torch.nn.functional.normalize(raw, dim=1) if similarity == "cosine" else raw
        self.dim = raw.shape[1]
        self.size = raw.shape[0]
        # Chunk so one (chunk x N) block of distances stays within the memory budget.
        self.chunk = max(1, chunk_bytes // (4 * max(1, self.size)))
        if self.backend == "faiss":
            import faiss

            array = np.ascontiguousarray(fast.cpu().numpy(), dtype=np.float32)
            self.index = faiss.IndexFlatL2(self.dim) if similarity == "l2" else faiss.IndexFlatIP(self.dim)
            if self.device.type == "cuda" and hasattr(faiss, "StandardGpuResources"):
                self._gpu_resources = faiss.StandardGpuResources()
                self.index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
            self.index.add(array)
            self.exact_device = torch.device("cpu")
            self.exact_base = raw.cpu()
        else:
            self.base = fast.to(self.device)
            self.base_sq = (self.base * self.base).sum(1)
            self.exact_device = self.device
            # the raw vectors for the exact pass (the same tensor as the fast one for l2)
            self.exact_base = self.base if similarity == "l2" else raw.to(self.device)
        self.base_sq_max = float((fast * fast).sum(1).max()) if self.size else 0.0

    def _prepare(self, queries: torch.Tensor) -> torch.Tensor:
        queries = queries.detach().float().reshape(len(queries), -1)
        if queries.shape[1] != self.dim:
            raise BenchError(
                f"candidates have {queries.shape[1]} features, the training set {self.dim}"
            )
        return queries

    def _fast(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(raw, dim=1) if self.similarity == "cosine" else raw

    # -- the exact pass ---------------------------------------------------------------------

    def _exact_scores(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Exact scores of float64 rows a and b (last axis D): the distance ||a - b|| for l2, the
        cosine for cosine (1 - ||a/|a| - b/|b|||^2 / 2, so that equal vectors give exactly 1)."""
        if self.similarity == "cosine":
            a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
            return 1.0 - 0.5 * torch.linalg.vector_norm(a - b, dim=-1).square()
        return torch.linalg.vector_norm(a - b, dim=-1)

    def _exact_pairs(self, queries: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``_exact_scores`` of the pairs (queries[rows], base[cols]), float64 on the CPU."""
        out = torch.empty(len(rows), dtype=torch.float64)
        step = max(1, EXACT_BLOCK_BYTES // (8 * max(1, self.dim)))
        queries = queries.to(self.exact_device)
        for start in range(0, len(rows), step):
            a = queries[rows[start : start + step].to(self.exact_device)].double()
            b = self.exact_base[cols[start : start + step].to(self.exact_device)].double()
            out[start : start + step] = self._exact_scores(a, b).cpu()
        return out

    def _exact_neighbours(self, queries: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``_exact_scores`` of each query against its neighbours idx (m, kk): (m, kk) float64, CPU."""
        out = torch.empty(idx.shape, dtype=torch.float64)
        step = max(1, EXACT_BLOCK_BYTES // (8 * max(1, self.dim) * max(1, idx.shape[1])))
        queries = queries.to(self.exact_device)
        for start in range(0, len(idx), step):
            a = queries[start : start + step].double()[:, None, :]
            b = self.exact_base[idx[start : start + step].to(self.exact_device)].double()
            out[start : start + step] = self._exact_scores(a, b).cpu()
        return out

    def _similarity(self, exact: torch.Tensor) -> torch.Tensor:
        """Exact scores (``_exact_scores``) -> gamma in [-1, 1], float64."""
        if self.similarity == "l2":
            return 1.0 - exact / np.sqrt(self.dim)
        return exact.clamp(-1.0, 1.0)

    def _margin(self, queries: torch.Tensor) -> torch.Tensor:
        """Per query, how far the fast pass's score may be from the exact one (CPU, float64)."""
        if self.similarity == "cosine":
            return torch.full((len(queries),), SEARCH_TOLERANCE, dtype=torch.float64)
        norms = (queries.double() * queries.double()).sum(1).cpu()
        return SEARCH_TOLERANCE * (norms + self.base_sq_max)

    # -- the fast pass ----------------------------------------------------------------------

    def _torch_partial(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(partial, offset): raw score = partial + offset[:, None], one matrix product.

        For l2, partial = ||b||^2 - 2 a.b (the bias is fused into the product) and offset =
        ||a||^2: a row's order does not depend on its offset, so the nearest neighbours and
        the range proposals need no second pass over the block. For cosine, offset is 0.
        """
        chunk = chunk.to(self.device)
        if self.similarity == "cosine":
            return chunk @ self.base.T, torch.zeros(len(chunk), device=self.device)
        partial = torch.addmm(self.base_sq[None, :], chunk, self.base.T, alpha=-2.0)
        return partial, (chunk * chunk).sum(1)

    def _fast_top(self, fast: torch.Tensor, k: int):
        """The fast pass's top-k of each row: (raw scores, indices), CPU."""
        if self.backend == "faiss":
            raw, idx = self.index.search(np.ascontiguousarray(fast.cpu().numpy()), k)
            return torch.from_numpy(raw), torch.from_numpy(idx).long()
        partial, offset = self._torch_partial(fast)
        top, idx = torch.topk(partial, k, dim=1, largest=self.similarity == "cosine")
        return (top + offset[:, None]).cpu(), idx.cpu().long()

    def _raw_bound(self, lowest: float, margin: torch.Tensor) -> torch.Tensor:
        """Per query, the fast raw score bound that keeps every pair with exact similarity >= lowest."""
        if self.similarity == "l2":
            return ((1.0 - lowest) ** 2) * self.dim + margin
        return lowest - margin

    def _fast_block(self, fast: torch.Tensor, k: int, bound: torch.Tensor | None):
        """Top-k (raw, idx) of a chunk and, with per-row raw ``bound``s, the proposed pairs
        (rows, cols) within them. torch: one matrix product for both; rows whose best score is
        out of range are not scanned again. faiss: a search and a range search."""
        if self.backend == "faiss":
            raw, idx = self._fast_top(fast, k)
            if bound is None:
                return raw, idx, None
            array = np.ascontiguousarray(fast.cpu().numpy())
            # faiss keeps squared distances < radius (l2) or inner products > radius (cosine)
            radius = float(bound.max()) if self.similarity == "l2" else float(bound.min())
            lims, _, cols = self.index.range_search(array, radius)
            rows = torch.from_numpy(np.repeat(np.arange(len(array)), np.diff(lims.astype(np.int64)))).long()
            return raw, idx, (rows, torch.from_numpy(cols).long())
        partial, offset = self._torch_partial(fast)
        largest = self.similarity == "cosine"
        top, idx = torch.topk(partial, k, dim=1, largest=largest)
        raw = top + offset[:, None]
        if bound is None:
            return raw.cpu(), idx.cpu().long(), None
        bound = bound.to(raw.device, raw.dtype)
        best = raw[:, 0]
        rows = (best >= bound if largest else best <= bound).nonzero(as_tuple=True)[0]
        block = partial[rows] + offset[rows, None]
        near = block >= bound[rows, None] if largest else block <= bound[rows, None]
        hit_rows, cols = near.nonzero(as_tuple=True)
        return raw.cpu(), idx.cpu().long(), (rows[hit_rows].cpu(), cols.cpu())

    # -- both passes ------------------------------------------------------------------------

    def _nearest(self, queries: torch.Tensor, fast: torch.Tensor, k: int, margin: torch.Tensor,
                 raw: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact k nearest of each query, from the fast pass's (raw, idx) of some kk >= k.

        Re-sorted on the exact scores, ties to the lower index. A row is settled when its k-th
        exact score beats, by the margin, the last fast score fetched (every base vector not
        fetched is at least that far in the fast pass); the others are fetched again with
        twice as many neighbours until settled or the whole base is fetched.
        """
        n = len(queries)
        scores = torch.empty(n, k, dtype=torch.float64)
        found = torch.empty(n, k, dtype=torch.long)
        pending = torch.arange(n)
        while True:
            kk = idx.shape[1]
            exact = self._exact_neighbours(queries if len(pending) == n else queries[pending], idx)
            by_index = idx.argsort(dim=1)
            idx, exact = idx.gather(1, by_index), exact.gather(1, by_index)
            order = torch.sort(exact if self.similarity == "l2" else -exact, dim=1, stable=True).indices[:, :k]
            best, best_idx = exact.gather(1, order), idx.gather(1, order)
            last = raw.double().max(1).values if self.similarity == "l2" else raw.double().min(1).values
            if kk >= self.size:
                settled = torch.ones(len(pending), dtype=torch.bool)
            elif self.similarity == "l2":  # fast scores are squared distances
                settled = best[:, -1].square() < last - margin[pending]
            else:
                settled = best[:, -1] > last + margin[pending]
            scores[pending[settled]], found[pending[settled]] = best[settled], best_idx[settled]
            pending = pending[~settled]
            if not len(pending):
                return scores, found
            raw, idx = self._fast_top(fast[pending], min(self.size, 2 * kk))

    def _search(self, queries: torch.Tensor, k: int, lowest: float | None):
        """((exact scores, idx) of the k nearest, best first; pairs (rows, cols, exact similarity)
        with similarity >= lowest, or None)."""
        queries = self._prepare(queries)
        k = min(k, self.size)
        kk = min(self.size, k + EXTRA_NEIGHBOURS)
        scores, indices, pair_parts = [], [], []
        for start in range(0, len(queries), self.chunk):
            chunk = queries[start : start + self.chunk]
            fast = self._fast(chunk)
            margin = self._margin(fast)
            bound = self._raw_bound(lowest, margin) if lowest is not None else None
            raw, idx, proposed = self._fast_block(fast, kk, bound)
            best, best_idx = self._nearest(chunk, fast, k, margin, raw, idx)
            scores.append(best)
            indices.append(best_idx)
            if proposed is not None:
                rows, cols = proposed
                sims = self._similarity(self._exact_pairs(chunk, rows, cols))
                keep = sims >= lowest
                pair_parts.append((rows[keep] + start, cols[keep], sims[keep]))
        found = ((torch.cat(scores), torch.cat(indices)) if scores
                 else (torch.empty(0, k, dtype=torch.float64), torch.empty(0, k, dtype=torch.long)))
        if lowest is None:
            return found, None
        if not pair_parts:
            return found, _EMPTY_PAIRS
        return found, tuple(torch.cat(part) for part in zip(*pair_parts, strict=True))

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most similar base vectors per query: (similarities, indices), best first."""
        (sims, indices), _ = self.search_with_pairs(queries, k, None)
        return sims, indices

    def nearest_distances(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """l2 only: the k nearest per query as (||a - b|| / sqrt(D), indices), nearest first.

        The distances themselves, not 1 - similarity, so a small one keeps its digits (a Gu
        ratio of two near-copies divides them)."""
        if self.similarity != "l2":
            raise BenchError("nearest_distances: an l2 index only")
        (exact, indices), _ = self._search(queries, k, None)
        return exact / np.sqrt(self.dim), indices

    def search_with_pairs(self, queries: torch.Tensor, k: int, lowest: float | None):
        """``((sims, idx), pairs)``: the k most similar base vectors per query, best first, and,
        when ``lowest`` is given, every (query row, base index, similarity) with similarity >=
        lowest (a range search; None otherwise). Similarities are float64 and exact.

        With the torch backend both fast passes come from one matrix product per chunk; faiss
        makes a search and a range search. Memory is bounded by the chunk and the pairs found.
        """
        (exact, indices), pairs = self._search(queries, k, lowest)
        return (self._similarity(exact), indices), pairs

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
