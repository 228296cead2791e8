"""The fused torch k-NN pass gives exactly what search and base_hits give, and agrees with faiss."""

import pytest
import torch
from optional_packages import needs_faiss

from side_bench.scoring.knn import ExactIndex

CASES = [("l2", [(0.85, 0.9), (0.9, 0.95), (0.95, 1.0)]), ("cosine", [(0.9, 0.95), (0.95, 0.99), (0.99, 1.0)])]


def data():
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(700, 48, generator=generator)
    near = (base[:40] + 0.02 * torch.randn(40, 48, generator=generator)).clamp(0, 1)
    return base, torch.cat([near, torch.rand(60, 48, generator=generator)])


@pytest.mark.parametrize("similarity, bands", CASES)
def test_fused_search_equals_the_two_calls(similarity, bands):
    base, queries = data()
    index = ExactIndex(base, similarity, "torch", chunk_bytes=4 * 700 * 33)  # several chunks
    (sims, idx), masks = index.search_with_hits(queries, 3, bands)
    sims2, idx2 = index.search(queries, 3)
    assert torch.equal(sims, sims2) and torch.equal(idx, idx2)
    assert all(torch.equal(a, b) for a, b in zip(masks, index.base_hits(queries, bands), strict=True))
    assert sum(int(m.sum()) for m in masks) > 0


@needs_faiss
@pytest.mark.parametrize("similarity, bands", CASES)
def test_faiss_agrees_with_the_torch_search(similarity, bands):
    base, queries = data()
    (sims, idx), masks = ExactIndex(base, similarity, "torch", chunk_bytes=4 * 700 * 33).search_with_hits(
        queries, 3, bands)
    assert sum(int(m.sum()) for m in masks) > 0
    faiss_index = ExactIndex(base, similarity, "faiss")
    faiss_sims, faiss_idx = faiss_index.search(queries, 3)
    assert torch.equal(idx, faiss_idx)
    torch.testing.assert_close(sims, faiss_sims, atol=1e-4, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(masks, faiss_index.base_hits(queries, bands), strict=True))
