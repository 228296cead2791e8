"""``finextract``: extraction from a fine-tuned model, guided away from its pre-trained base.

FineXtract (Wu, Zhang and Wu, "Revealing the Unseen: Guiding Personalized Diffusion Models to
Expose Training Data", ICML 2025; code Nicholas0228/FineXtract, ``contrasted_sample.py``)
samples with DDIM (50 steps) from the extrapolated noise prediction

    eps_hat(x_t) = eps_pre(x_t) + w * (eps_ft(x_t) - eps_pre(x_t)),

the fine-tuned model's shift away from the base, amplified by w (the demos use w = 3 to 5).
w = 1 is plain sampling of the fine-tuned model, w = 0 sampling of the base: both are computed
with one UNet alone, so they equal the ``sample`` extractor on that UNet bit for bit. The
update is the same diffusers DDIM step (eta = 0) as ``sample``, from the same per-sample
noise (purpose "sample"), so at equal seeds the candidates are paired with ``sample``'s.
Left out: the code's ``fix_term`` (an extra term from an empty prompt: these targets are
unconditional) and its optional dynamic thresholding (``dt``, off by default there too).

The paper's clustering of the generations into representatives is the ranker
``finextract-clusters`` (``FineXtractClusters`` below), so that ``precision-at-k`` (k = 0: the
representatives) says what share of what the attacker reports are copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from side_bench.plugin_api import BenchError, autocast_dtype, hookimpl, initial_noise
from side_bench_builtins.extractors import SamplingSettings


class FineXtract:
    """DDIM from eps_pre + w (eps_ft - eps_pre) on a fine-tuned target (``TargetModel.base_unet``)."""

    description = ("FineXtract: DDIM guided by the fine-tuned minus the pre-trained model, "
                   "eps_pre + w (eps_ft - eps_pre) (Wu et al. 2025)")
    threat_model = "white-box + base model"

    @dataclass
    class Settings(SamplingSettings):  # ddim_steps, batch_size, precision and their checks: the sampler's
        guidance_scale: float = 3.0  # w; 1 = plain sampling of the fine-tuned model, 0 = of the base

        def validate(self, where: str) -> None:
            super().validate(where)
            if self.compile != "none":  # its own loop runs two UNets eagerly
                raise BenchError(f"{where}: compile: finextract runs its UNets eagerly; expected 'none', "
                                 f"got {self.compile!r}")

    def __init__(self, settings: FineXtract.Settings):
        self.settings = settings

    def planned_cost(self, n: int) -> dict:
        # two UNets a step (fine-tuned and base) unless w makes one of them weigh nothing; no classifier
        unets = 1 if self.settings.guidance_scale in (0.0, 1.0) else 2
        return {"unet_evals": n * self.settings.ddim_steps * unets}

    def extract(self, target, labelled, n, ctx):
        if target.base_unet is None:
            raise BenchError("extractor 'finextract': the target has no base model (TargetModel.base_unet); "
                             "use a fine-tuned target, e.g. bench-unet with finetune = { ... }")
        if target.num_classes:
            raise BenchError("extractor 'finextract': expected an unconditional fine-tuned target")
        images = finextract_sample(target.unet, target.base_unet, target, n, w=self.settings.guidance_scale,
                                   seed=ctx.seed, num_steps=self.settings.ddim_steps,
                                   batch_size=self.settings.batch_size, device=ctx.device,
                                   dtype=autocast_dtype(self.settings.precision), progress=ctx.progress)
        return images


def finextract_sample(finetuned, base, target, n: int, *, w: float, seed: int, num_steps: int, batch_size: int,
                      device: torch.device, dtype: torch.dtype = torch.float32,
                      progress=lambda *a: None) -> torch.Tensor:
    """n images in [-1, 1] (on the CPU); candidate i from the noise of (seed, "sample", i)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(target.scheduler_config)
    scheduler.set_timesteps(num_steps)
    # w = 1 and w = 0 need one UNet: the other's term has weight 0, and leaving it out keeps
    # the result exactly that UNet's (no rounding from eps_pre + 1 * (eps_ft - eps_pre))
    needs_ft, needs_pre = w != 0.0, w != 1.0
    finetuned = finetuned.to(device).eval() if needs_ft else None
    base = base.to(device).eval() if needs_pre else None
    outputs = []
    total = n * num_steps
    for start in range(0, n, batch_size):
        indices = range(start, min(n, start + batch_size))
        x, _ = initial_noise(seed, "sample", indices, target.image_shape, 0)
        x = x.to(device)
        for step, t in enumerate(scheduler.timesteps):
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                eps_ft = finetuned(x, t).sample.float() if needs_ft else None
                eps_pre = base(x, t).sample.float() if needs_pre else None
            if not needs_pre:
                eps = eps_ft
            elif not needs_ft:
                eps = eps_pre
            else:
                eps = eps_pre + w * (eps_ft - eps_pre)
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
            progress("sampling", start * num_steps + (step + 1) * len(indices), total)
        outputs.append(x.clamp(-1, 1).cpu())
    return torch.cat(outputs)


class FineXtractClusters:
    """FineXtract's clustering of the generations: each cluster's representative is scored by
    its cluster's size, every other candidate 0 (threshold 1: the representatives are flagged).

    What the authors' ``Cluster.py`` does (``cluster_progress`` and ``compute_metrics``):
    SSCD features of every generation and their pairwise cosine similarities (the diagonal set
    to 0); a graph with an edge where the similarity is >= a threshold; the graph split into
    cliques by taking the largest maximal clique (``networkx.find_cliques``), removing its
    nodes and repeating until none is left (minimum clique size 1: every generation ends in
    one); the threshold starts at the 25% quantile of 1,000 sampled similarities, floored to
    0.01, and rises by 0.01 until there are at least as many cliques as fine-tuning images
    (N0, which the attacker is assumed to know); the representative of each clique is the
    member whose feature is nearest (l2) its clique's mean feature.

    Here: the suite's features (``ctx.features``: pixels in the digits suites) and their
    similarity (for pixels 1 - RMS difference, the project's pixel similarity; cosine for
    embedding features), all pairs in float64; the threshold starts at the exact 25% quantile
    of all pairs (not 1,000 sampled ones), on the grid j * 0.01, and rises to 1 at most (when
    no threshold gives N0 cliques, the partition at 1 is used: the distinct candidates).
    Left out: the exact maximum clique, exponential in the worst case (the authors stop each
    search after 30 s and raise the threshold): each clique is grown greedily instead, from the
    remaining candidate of highest degree, adding the candidate with the most neighbours among
    those still adjacent to every member, ties to the lower index. N0 is
    ``TargetModel.finetune_size`` (``clusters`` = 0) or the ``clusters`` setting.
    Memory: an n x n similarity matrix (n = N_G), refused above ``max_candidates``.
    """

    description = ("FineXtract's clustering: cliques of similar generations until N0 clusters, "
                   "each represented by the member nearest its mean (Wu et al. 2025)")

    @dataclass
    class Settings:
        clusters: int = 0  # N0; 0: the target's fine-tuning set size (TargetModel.finetune_size)
        quantile: float = 0.25  # where the threshold starts: this quantile of the pairwise similarities
        max_candidates: int = 16384  # the n x n float64 similarities: 2 GiB at 16,384

        def validate(self, where: str) -> None:
            if self.clusters < 0:
                raise BenchError(f"{where}: clusters: expected 0 (the fine-tuning set size) or a positive integer")
            if not 0 <= self.quantile <= 1:
                raise BenchError(f"{where}: quantile: expected a value in [0, 1], got {self.quantile!r}")
            if self.max_candidates < 1:
                raise BenchError(f"{where}: max_candidates: expected a positive integer")

    def __init__(self, settings: FineXtractClusters.Settings = None):
        self.settings = settings or FineXtractClusters.Settings()

    def score(self, candidates01: torch.Tensor, target, ctx):
        s = self.settings
        wanted = s.clusters or getattr(target, "finetune_size", None)
        if not wanted:
            raise BenchError("ranker 'finextract-clusters': clusters: the target does not say how many images it "
                             "was fine-tuned on (TargetModel.finetune_size); set clusters = N0")
        n = len(candidates01)
        if n > s.max_candidates:
            raise BenchError(f"ranker 'finextract-clusters': {n} candidates is more than max_candidates "
                             f"({s.max_candidates}): the clustering holds an n x n similarity matrix")
        features = ctx.features
        embedded = torch.cat([features.embed(candidates01[i : i + 512]).double().cpu()
                              for i in range(0, n, 512)]).reshape(n, -1)
        clusters = finextract_clusters(similarities(embedded, features.similarity), wanted, s.quantile)
        scores = np.zeros(n, dtype=np.float64)
        for members in clusters:
            scores[representative(embedded, members)] = len(members)
        return scores, 1.0


def similarities(features: torch.Tensor, kind: str) -> np.ndarray:
    """(n, n) float64 pairwise similarities in the project's convention (``ExactIndex``):
    1 - ||a - b|| / sqrt(D) for "l2", the cosine for "cosine"."""
    x = features.double()
    if kind == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
        return (x @ x.T).clamp(-1, 1).numpy()
    squared = (x * x).sum(1)
    # float64 expanded form: its rounding (~1e-16 of the norms) is far below the 0.01 grid, but
    # it can leave a bit-identical pair a hair above 0; near-duplicates are recomputed from the
    # differences, so such a pair is at similarity 1 exactly (linked at the last threshold, 1)
    distance = (squared[:, None] + squared[None, :] - 2 * (x @ x.T)).clamp_min(0).sqrt()
    rows, cols = torch.nonzero(distance < 1e-6 * (1 + squared.max().sqrt()), as_tuple=True)
    distance[rows, cols] = torch.linalg.vector_norm(x[rows] - x[cols], dim=1)
    return (1.0 - distance / math.sqrt(x.shape[1])).numpy()


def greedy_clique(adjacency: np.ndarray, alive: np.ndarray, degree: np.ndarray) -> list[int]:
    """A large clique among the ``alive`` nodes: from the one of highest degree, add the
    candidate with the most neighbours among the remaining candidates (those adjacent to every
    member so far) until none is left; ties to the lower index."""
    start = int(np.argmax(np.where(alive, degree, -1)))
    clique = [start]
    pool = np.flatnonzero(adjacency[start] & alive)
    if len(pool) == 0:
        return clique
    sub = adjacency[np.ix_(pool, pool)]
    open_ = np.ones(len(pool), dtype=bool)
    inner = sub.sum(1, dtype=np.int64)  # each candidate's neighbours among the candidates
    while open_.any():
        chosen = int(np.argmax(np.where(open_, inner, -1)))
        clique.append(int(pool[chosen]))
        dropped = open_ & ~sub[chosen]
        dropped[chosen] = True
        open_ &= sub[chosen]
        inner -= sub[dropped].sum(0, dtype=np.int64)  # symmetric: rows are contiguous, columns are not
    return clique


def partition(adjacency: np.ndarray, stop_at: int | None = None) -> list[list[int]]:
    """The nodes split into cliques, largest (greedy) first, as the authors' loop with minimum
    size 1; with ``stop_at``, stops once that many are found (the count only grows after)."""
    alive = np.ones(len(adjacency), dtype=bool)
    degree = adjacency.sum(1, dtype=np.int64)
    cliques = []
    while alive.any() and (stop_at is None or len(cliques) < stop_at):
        clique = greedy_clique(adjacency, alive, degree)
        cliques.append(clique)
        alive[clique] = False
        degree -= adjacency[clique].sum(0, dtype=np.int64)  # symmetric: rows, not columns
    return cliques


def finextract_clusters(similarity: np.ndarray, wanted: int, quantile: float = 0.25) -> list[list[int]]:
    """The cliques at the lowest threshold (from the ``quantile`` of the pairwise similarities,
    on the 0.01 grid, up to 1) that gives at least ``wanted`` of them."""
    n = len(similarity)
    if n < 2:
        return [list(range(n))]
    pairs = similarity[np.triu_indices(n, 1)]
    start = math.floor(float(np.quantile(pairs, quantile)) * 100 + 1e-9)
    adjacency = None
    for step in range(start, 101):
        adjacency = similarity >= step / 100
        np.fill_diagonal(adjacency, False)  # the authors zero the diagonal: no self-loops
        if len(partition(adjacency, stop_at=wanted)) >= wanted:
            break
    return partition(adjacency)


def representative(features: torch.Tensor, members: list[int]) -> int:
    """The member whose feature is nearest (l2) its cluster's mean feature (ties: the first)."""
    group = features[members].double()
    return members[int(torch.linalg.vector_norm(group - group.mean(0), dim=1).argmin())]


@hookimpl
def register_extractors(register):
    register("finextract", FineXtract, aliases=("fine-xtract",))


@hookimpl
def register_rankers(register):
    register("finextract-clusters", FineXtractClusters, aliases=("finextract-representatives",))
