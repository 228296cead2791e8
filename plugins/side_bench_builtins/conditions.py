"""Conditions: the conditioning signal an attack uses (method.md section 2).

A condition decides two things: the labels the target model is trained with (none for an
unconditional target), and the labelled images an extractor may learn a classifier from.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from safetensors.torch import load_file, save

from side_bench.plugin_api import (
    BenchError,
    LabelledImages,
    Labels,
    cache_lock,
    canonical_hash,
    ddim_sample,
    derive_seed,
    hookimpl,
    read_cache_entry,
    to_unit,
    write_cache_entry,
)


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

    description = "no labels: the unconditional target, as in Carlini et al. 2023's UnCond attack"

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
        # the labelled images are the training images: each one's target is its own label
        return LabelledImages(images=data.train, labels=labels.labels, num_classes=labels.num_classes,
                              identity={"labels": self.kind, **asdict(self.settings), "data": data.identity},
                              train_targets=labels.labels)


class Informative(LabelCondition):
    """``informative``: the data set's own labels (digit class, identity)."""

    description = "the data set's true labels (digit class, identity), as in Carlini et al. 2023's Cond attack"

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

    description = "C random labels per training image, fixed by the seed (Gu et al. 2023)"

    kind = "random"
    Settings = RandomSettings

    def make_labels(self, data, seed):
        classes = self.settings.classes or data.num_classes or 10
        generator = torch.Generator().manual_seed(derive_seed(seed, "random-labels", classes))
        return Labels(torch.randint(classes, (len(data.train),), generator=generator), classes, self.kind)


class UniqueLabels(LabelCondition):
    """``unique``: one label per training image (Gu et al. 2023; beyond the SIDE paper)."""

    description = "one label per training image (Gu et al. 2023)"

    kind = "unique"

    def make_labels(self, data, seed):
        return Labels(torch.arange(len(data.train)), len(data.train), self.kind)


# --------------------------------------------------------------------------------------------
# SIDE's surrogate condition
# --------------------------------------------------------------------------------------------


@dataclass
class SurrogateClusters:
    """k-means on unit-normalised embeddings and the clusters kept by cohesion."""

    assignment: np.ndarray  # (n,) the k-means cluster of every pool image
    cohesion: np.ndarray  # (K,) mean cosine similarity of each cluster's members to its centroid
    kept: np.ndarray  # indices of the clusters with cohesion >= tau
    centroids: np.ndarray  # (len(kept), D) unit centroids of the kept clusters, in label order

    def nearest_kept(self, embeddings: np.ndarray) -> np.ndarray:
        """Label (0..kept-1) of the nearest kept centroid (cosine) for any embeddings."""
        return nearest_centroid(embeddings, self.centroids)


def nearest_centroid(embeddings: np.ndarray, unit_centroids: np.ndarray) -> np.ndarray:
    """(n,) int64: the row of ``unit_centroids`` nearest (cosine) to each embedding: the one
    assignment rule of the surrogate's pool and of the images labelled after it."""
    return np.argmax(_unit(embeddings) @ unit_centroids.T, axis=1).astype(np.int64)


def _unit(embeddings: np.ndarray) -> np.ndarray:
    vectors = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def surrogate_clusters(embeddings: np.ndarray, clusters: int, tau: float, seed: int,
                       backend: str = "sklearn") -> SurrogateClusters:
    """k-means on unit-normalised embeddings; keep the clusters whose mean cosine similarity
    to their centroid is at least tau."""
    vectors = _unit(embeddings)
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
    unit_centroids = _unit(centroids)
    cosine = vectors @ unit_centroids.T
    cohesion = np.array([
        cosine[assignment == c, c].mean() if np.any(assignment == c) else -1.0 for c in range(clusters)
    ])
    kept = np.flatnonzero(cohesion >= tau)
    if len(kept) == 0:
        raise BenchError(f"condition 'surrogate': no cluster has mean cosine similarity >= tau = {tau} "
                         f"(best {cohesion.max():.3f}); lower tau")
    return SurrogateClusters(np.asarray(assignment, dtype=np.int64), cohesion, kept, unit_centroids[kept])


def surrogate_pool(embeddings: np.ndarray, clusters: SurrogateClusters, dropped: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the pool images kept, their labels in 0..kept-1).

    ``remove``: the images k-means put in a dropped cluster leave the pool; ``relabel``: every
    image stays, labelled by its nearest kept centroid. Kept images are labelled by their
    nearest kept centroid either way.
    """
    labels = clusters.nearest_kept(embeddings)
    if dropped == "relabel":
        return np.arange(len(labels)), labels
    keep = np.flatnonzero(np.isin(clusters.assignment, clusters.kept))
    return keep, labels[keep]


def surrogate_labels(embeddings: np.ndarray, clusters: int, tau: float, seed: int, backend: str = "sklearn"):
    """k-means on unit-normalised embeddings; drop clusters whose mean cosine similarity to
    their centroid is below tau; label every image by its nearest kept centroid.

    Returns (labels in [0, kept), cohesion of every cluster, kept cluster indices).
    """
    found = surrogate_clusters(embeddings, clusters, tau, seed, backend)
    return found.nearest_kept(embeddings), found.cohesion, found.kept


def quantiles(values, points=(0.0, 0.25, 0.5, 0.75, 1.0)) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {f"q{int(p * 100)}": round(float(np.quantile(values, p)), 4) for p in points} if len(values) else {}


DROPPED = ("remove", "relabel")


@dataclass
class SurrogateSettings:
    clusters: int = 100  # K (paper: 100)
    tau: float = 0.5  # cohesion threshold (paper: 0.5)
    n_syn: int = 0  # generations to cluster; 0: 50 per cluster
    # images of dropped clusters: "relabel" to the nearest kept centroid (the paper's Algorithm 1
    # relabels every pool image), or "remove" from the pool
    dropped: str = "relabel"
    kmeans: str = "sklearn"  # or "faiss"
    ddim_steps: int = 50
    batch_size: int = 256

    def validate(self, where):
        if self.clusters < 2:
            raise BenchError(f"{where}: clusters: expected at least 2, got {self.clusters}")
        if self.kmeans not in ("sklearn", "faiss"):
            raise BenchError(f"{where}: kmeans: expected 'sklearn' or 'faiss', got {self.kmeans!r}")
        if self.kmeans == "faiss" and importlib.util.find_spec("faiss") is None:  # an optional extra
            raise BenchError(f"{where}: kmeans: 'faiss' asked for, but faiss is not installed "
                             "(pip install 'side-bench[faiss]')")
        if self.dropped not in DROPPED:
            raise BenchError(f"{where}: dropped: expected 'remove' or 'relabel', got {self.dropped!r}")
        if not -1 <= self.tau <= 1:
            raise BenchError(f"{where}: tau: expected a cosine similarity in [-1, 1], got {self.tau}")
        if self.n_syn < 0:
            raise BenchError(f"{where}: n_syn: expected a non-negative integer")
        if self.ddim_steps < 1 or self.batch_size < 1:
            raise BenchError(f"{where}: ddim_steps and batch_size: expected positive integers")


def embed_all(features, images: torch.Tensor, device) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([features.embed(to_unit(images[i : i + 512]).to(device)).float().cpu()
                          for i in range(0, len(images), 512)])


@dataclass
class SurrogateLabelledImages(LabelledImages):
    """The surrogate's labelled images, and the kept centroids that labelled them, so an
    extractor can label new images exactly as the pool was labelled (``side-exact`` assigns
    unguided samples to clusters this way)."""

    centroids: torch.Tensor | None = None  # (kept, D) unit centroids of the kept clusters, in label order

    def nearest_kept(self, images: torch.Tensor, features, device) -> torch.Tensor:
        """(n,) int64: the label (0..kept-1) of each image's nearest kept centroid (cosine) in the
        space of ``features``: the assignment that gave the pool its pseudo-labels."""
        return torch.from_numpy(nearest_centroid(embed_all(features, images, device).numpy(), self.centroids.numpy()))


class Surrogate:
    """``surrogate`` (SIDE): cluster labels from the target model's own generations.

    The sampled pool is cached by (target, n_syn, DDIM steps, seed) and its clustering by all
    settings and the features, so a sweep over the extractor's settings, and over K, tau or
    ``dropped``, samples once. The training images get targets in the same label space (their
    nearest kept centroid) for the target-hit diagnostic.
    """

    description = "SIDE's surrogate labels: clusters of the target model's own generations (Chen et al. 2024, arXiv 2410.02467)"

    Settings = SurrogateSettings

    def __init__(self, settings: SurrogateSettings):
        self.settings = settings

    def training_labels(self, data, seed):
        return None

    def training_key(self):
        return None

    def check_target(self, target) -> None:
        require_target("surrogate", target, "none")

    def pool(self, target, n_syn: int, ctx) -> torch.Tensor:
        """The target's own generations (cached: clustering settings do not change them)."""
        s = self.settings
        identity = {"pool": "surrogate", "n_syn": n_syn, "ddim_steps": s.ddim_steps, "target": target.identity,
                    "seed": ctx.seed, "device": ctx.device.type}
        folder = ctx.cache_dir / "surrogates" / "pools" / canonical_hash(identity)
        with cache_lock(folder):  # processes sharing a run sample a given pool once
            cached = read_cache_entry(folder, lambda entry: load_file(entry / "images.safetensors")["images"],
                                      "surrogate pool")
            if cached is not None:
                return cached
            images, _ = ddim_sample(target, n_syn, seed=ctx.seed, purpose="surrogate-pool", num_steps=s.ddim_steps,
                                    batch_size=s.batch_size, device=ctx.device, progress=ctx.progress)
            with write_cache_entry(folder, "surrogate pool") as temporary:
                (temporary / "images.safetensors").write_bytes(save({"images": images.contiguous()}))
            return images

    def attack_labels(self, target, data, ctx):
        s = self.settings
        n_syn = s.n_syn or 50 * s.clusters
        settings = {k: v for k, v in asdict(s).items() if k != "batch_size"}  # batch size changes no sample
        identity = {"surrogate": settings, "n_syn": n_syn, "target": target.identity,
                    "features": ctx.features.identity, "seed": ctx.seed, "device": ctx.device.type}
        key = canonical_hash(identity)
        folder = ctx.cache_dir / "surrogates" / "clusterings" / key
        with cache_lock(folder):  # processes sharing a run cluster a given pool once
            cached = read_cache_entry(folder, lambda entry: (load_file(entry / "clusters.safetensors"),
                                                             json.loads((entry / "record.json").read_text())),
                                      "clustering")
            if cached is not None:
                stored, record = cached
            else:
                images = self.pool(target, n_syn, ctx)
                embeddings = embed_all(ctx.features, images, ctx.device).numpy()
                ctx.progress("clustering", 0, 1)
                found = surrogate_clusters(embeddings, s.clusters, s.tau, ctx.seed, s.kmeans)
                keep, labels = surrogate_pool(embeddings, found, s.dropped)
                ctx.progress("clustering", 1, 1)
                sizes = np.bincount(labels, minlength=len(found.kept))
                record = {**identity, "cohesion": found.cohesion.round(4).tolist(), "kept": found.kept.tolist(),
                          "diagnostics": {
                              "clusters": int(len(found.cohesion)), "clusters_kept": int(len(found.kept)),
                              "tau": s.tau, "dropped": s.dropped, "n_syn": n_syn, "pool_kept": int(len(keep)),
                              "cohesion": quantiles(found.cohesion[found.cohesion > -1]),
                              "cohesion_kept": quantiles(found.cohesion[found.kept]),
                              "cluster_sizes": quantiles(sizes)}}
                stored = {"images": images[torch.from_numpy(keep)].contiguous(), "labels": torch.from_numpy(labels),
                          "centroids": torch.from_numpy(np.ascontiguousarray(found.centroids))}
                with write_cache_entry(folder, "clustering") as temporary:  # images, labels and record together
                    (temporary / "clusters.safetensors").write_bytes(save(stored))
                    (temporary / "record.json").write_text(json.dumps(record, default=str))
        labelled = SurrogateLabelledImages(images=stored["images"], labels=stored["labels"],
                                           num_classes=len(stored["centroids"]), identity={"surrogate": key},
                                           diagnostics={"surrogate": record["diagnostics"]},
                                           centroids=stored["centroids"])
        labelled.train_targets = labelled.nearest_kept(data.train, ctx.features, ctx.device)
        return labelled


@hookimpl
def register_conditions(register):
    register("none", NoCondition, aliases=("uncond",))
    register("informative", Informative, aliases=("true-labels",))
    register("random", RandomLabels, aliases=("random-labels",))
    register("unique", UniqueLabels)
    register("surrogate", Surrogate)
