"""Conditions: the conditioning signal an attack uses (method.md section 2).

A condition decides two things: the labels the target model is trained with (none for an
unconditional target), and the labelled images an extractor may learn a classifier from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from safetensors.torch import load_file, save

from side_bench.diffusion import ddim_sample, derive_seed
from side_bench.errors import BenchError
from side_bench.hookspecs import LabelledImages, Labels, hookimpl
from side_bench.scoring import to_unit
from side_bench.store import atomic_write
from side_bench.suite import canonical_hash


def require_target(condition: str, target, trained_with: str, num_classes: int | None = None) -> None:
    """Refuse a target trained for another condition (a loaded checkpoint can be)."""
    if target.trained_with != trained_with or (num_classes is not None and target.num_classes != num_classes):
        classes = f" with {num_classes} classes" if num_classes else ""
        raise BenchError(
            f"condition {condition!r} needs a target trained with {trained_with!r} labels{classes}; "
            f"this target was trained with {target.trained_with!r} ({target.num_classes} classes)"
        )


class NoCondition:
    """``none``: an unconditional target and no labels for the extractor."""

    def training_labels(self, data, seed):
        return None

    def training_key(self):
        return None

    def check_target(self, target) -> None:
        return None  # plain sampling works on any target (labels are drawn for a conditional one)

    def attack_labels(self, target, data, ctx):
        return None


@dataclass
class LabelSettings:
    # true: the target is a class-conditional UNet trained with these labels; false: the
    # target stays unconditional and the labels only train the extractor's classifier
    # (Carlini et al.'s Cond attack guides an unconditional model).
    conditional_target: bool = True


class LabelCondition:
    """Shared by informative, random and unique labels: they differ only in the labels."""

    kind = ""
    Settings = LabelSettings

    def __init__(self, settings):
        self.settings = settings

    def make_labels(self, data, seed) -> Labels:
        raise NotImplementedError

    def training_labels(self, data, seed):
        return self.make_labels(data, seed) if self.settings.conditional_target else None

    def training_key(self):
        return {"labels": self.kind, **asdict(self.settings)} if self.settings.conditional_target else None

    def check_target(self, target) -> None:
        if self.settings.conditional_target:
            require_target(self.kind, target, self.kind)
        else:
            require_target(self.kind, target, "none")

    def attack_labels(self, target, data, ctx):
        labels = self.make_labels(data, ctx.seed)
        return LabelledImages(images=data.train, labels=labels.labels, num_classes=labels.num_classes,
                              identity={"labels": self.kind, **asdict(self.settings), "data": data.identity})


class Informative(LabelCondition):
    """``informative``: the data set's own labels (digit class, identity)."""

    kind = "informative"

    def make_labels(self, data, seed):
        if data.train_labels is None or not data.num_classes:
            raise BenchError(f"condition 'informative': dataset {data.identity.get('dataset')!r} has no labels")
        return Labels(data.train_labels, data.num_classes, self.kind)


@dataclass
class RandomSettings(LabelSettings):
    classes: int = 0  # 0: as many as the data set's true classes

    def validate(self, where):
        if self.classes < 0:
            raise BenchError(f"{where}: classes: expected a non-negative integer")


class RandomLabels(LabelCondition):
    """``random``: C random labels per training image, fixed by the seed (Gu et al. 2023)."""

    kind = "random"
    Settings = RandomSettings

    def make_labels(self, data, seed):
        classes = self.settings.classes or data.num_classes or 10
        generator = torch.Generator().manual_seed(derive_seed(seed, "random-labels", classes))
        return Labels(torch.randint(classes, (len(data.train),), generator=generator), classes, self.kind)


class UniqueLabels(LabelCondition):
    """``unique``: one label per training image (Gu et al. 2023; beyond the SIDE paper)."""

    kind = "unique"

    def make_labels(self, data, seed):
        return Labels(torch.arange(len(data.train)), len(data.train), self.kind)


# --------------------------------------------------------------------------------------------
# SIDE's surrogate condition
# --------------------------------------------------------------------------------------------


def surrogate_labels(embeddings: np.ndarray, clusters: int, tau: float, seed: int, backend: str = "sklearn"):
    """k-means on unit-normalised embeddings; drop clusters whose mean cosine similarity to
    their centroid is below tau; label every image by its nearest kept centroid.

    Returns (labels in [0, kept), cohesion of every cluster, kept cluster indices).
    """
    vectors = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    clusters = min(clusters, len(vectors))
    random_state = derive_seed(seed, "kmeans") % 2**31
    if backend == "faiss":
        import faiss

        kmeans = faiss.Kmeans(vectors.shape[1], clusters, niter=50, nredo=3, seed=random_state, spherical=True)
        kmeans.train(vectors)
        centroids = kmeans.centroids
        assignment = kmeans.index.search(vectors, 1)[1][:, 0]
    else:
        from sklearn.cluster import KMeans

        kmeans = KMeans(n_clusters=clusters, n_init=3, random_state=random_state).fit(vectors)
        centroids, assignment = kmeans.cluster_centers_.astype(np.float32), kmeans.labels_
    unit_centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    cosine = vectors @ unit_centroids.T
    cohesion = np.array([
        cosine[assignment == c, c].mean() if np.any(assignment == c) else -1.0 for c in range(clusters)
    ])
    kept = np.flatnonzero(cohesion >= tau)
    if len(kept) == 0:
        raise BenchError(f"condition 'surrogate': no cluster has mean cosine similarity >= tau = {tau} "
                         f"(best {cohesion.max():.3f}); lower tau")
    labels = np.argmax(cosine[:, kept], axis=1)
    return labels.astype(np.int64), cohesion, kept


@dataclass
class SurrogateSettings:
    clusters: int = 100  # K (paper: 100)
    tau: float = 0.5  # cohesion threshold (paper: 0.5)
    n_syn: int = 0  # generations to cluster; 0: 50 per cluster
    kmeans: str = "sklearn"  # or "faiss"
    ddim_steps: int = 50
    batch_size: int = 256

    def validate(self, where):
        if self.clusters < 2:
            raise BenchError(f"{where}: clusters: expected at least 2, got {self.clusters}")
        if self.kmeans not in ("sklearn", "faiss"):
            raise BenchError(f"{where}: kmeans: expected 'sklearn' or 'faiss', got {self.kmeans!r}")
        if not -1 <= self.tau <= 1:
            raise BenchError(f"{where}: tau: expected a cosine similarity in [-1, 1], got {self.tau}")
        if self.n_syn < 0:
            raise BenchError(f"{where}: n_syn: expected a non-negative integer")


class Surrogate:
    """``surrogate`` (SIDE): cluster labels from the target model's own generations.

    The pool and its labels are cached by (target, settings, features, seed), so a sweep over
    the extractor's settings samples and clusters once.
    """

    Settings = SurrogateSettings

    def __init__(self, settings: SurrogateSettings):
        self.settings = settings

    def training_labels(self, data, seed):
        return None

    def training_key(self):
        return None

    def check_target(self, target) -> None:
        require_target("surrogate", target, "none")

    def attack_labels(self, target, data, ctx):
        n_syn = self.settings.n_syn or 50 * self.settings.clusters
        identity = {"surrogate": asdict(self.settings), "n_syn": n_syn, "target": target.identity,
                    "features": ctx.features.identity, "seed": ctx.seed}
        path = ctx.cache_dir / "surrogates" / f"{canonical_hash(identity)}.safetensors"
        if path.exists():
            stored = load_file(path)
            images, labels = stored["images"], stored["labels"]
        else:
            images, _ = ddim_sample(target, n_syn, seed=ctx.seed, purpose="surrogate-pool",
                                    num_steps=self.settings.ddim_steps, batch_size=self.settings.batch_size,
                                    device=ctx.device, progress=ctx.progress)
            with torch.inference_mode():
                embeddings = torch.cat([ctx.features.embed(to_unit(images[i : i + 512]).to(ctx.device)).float().cpu()
                                        for i in range(0, len(images), 512)])
            ctx.progress("clustering", 0, 1)
            labels, cohesion, kept = surrogate_labels(embeddings.numpy(), self.settings.clusters, self.settings.tau,
                                                      ctx.seed, self.settings.kmeans)
            ctx.progress("clustering", 1, 1)
            labels = torch.from_numpy(labels)
            atomic_write(path, save({"images": images.contiguous(), "labels": labels}))
            atomic_write(path.with_suffix(".json"), json.dumps({
                **identity, "cohesion": cohesion.round(4).tolist(), "kept": kept.tolist()}, default=str))
        num_classes = int(labels.max()) + 1
        return LabelledImages(images=images, labels=labels, num_classes=num_classes,
                              identity={"surrogate": canonical_hash(identity)})


@hookimpl
def register_conditions(register):
    register("none", NoCondition, aliases=("uncond",))
    register("informative", Informative, aliases=("true-labels",))
    register("random", RandomLabels, aliases=("random-labels",))
    register("unique", UniqueLabels)
    register("surrogate", Surrogate)
