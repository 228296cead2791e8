"""The stack side-bench builds on imports here, as installed by the README's command."""

import pytest


def test_diffusers_unet_imports():
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel  # noqa: F401


def test_faiss_imports_and_searches():
    import numpy as np

    faiss = pytest.importorskip("faiss", reason="faiss is an optional extra: pip install 'side-bench[faiss]'")

    index = faiss.IndexFlatL2(2)
    index.add(np.array([[0, 0], [1, 1]], dtype=np.float32))
    _, nearest = index.search(np.array([[0.9, 0.9]], dtype=np.float32), 1)
    assert nearest[0, 0] == 1
