"""Markers for tests of optional extras: they skip, saying which extra, where it is not installed."""

import pytest

from side_bench.scoring.knn import faiss_available

needs_faiss = pytest.mark.skipif(not faiss_available(),
                                 reason="faiss is an optional extra: pip install 'side-bench[faiss]' (dev has it)")
FAISS = pytest.param("faiss", marks=needs_faiss)  # a "faiss" parameter that skips without faiss
