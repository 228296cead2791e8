"""Exact-posterior ("kernel") guidance: p(c | x_t, t) of a labelled pool under the forward process.

If the data were exactly the labelled pool {(x_j, y_j)}, uniform over j, then
q(x_t | x_j) = N(sqrt(abar_t) x_j, (1 - abar_t) I) and Bayes' rule gives the classifier that a
trained one can at best approximate:

    log p(c | x_t) = logsumexp_{j: y_j = c} l_j  -  logsumexp_j l_j,
    l_j = -||x_t - sqrt(abar_t) x_j||^2 / (2 sigma_t^2),   sigma_t^2 = bandwidth * (1 - abar_t)

(bandwidth 1: exact; above 1 a wider, smoother kernel). Its gradient has a closed form: with
w = softmax_j(l) over the whole pool and w^c the same softmax restricted to class c,

    grad_x log p(c | x_t) = sqrt(abar_t) / sigma_t^2 * (E_{w^c}[x_j] - E_w[x_j])

(the x_t terms cancel because both weights sum to one). No training and nothing cached: the
pool is the classifier. Everything runs in float64, because at small t sigma_t^2 is about 1e-4
and float32 distances (expanded as |x|^2 - 2<x, x_j> + |x_j|^2) would carry errors of order one
in l_j, enough to swap near-tied pool images.

Cost per guided step: O(batch x pool x pixels) multiply-adds (three matrix products of that
size: the distances in two passes, then the weighted means); memory beyond the pool (pool x
pixels float64) is O(batch x chunk + batch x pixels), the pool being scanned ``chunk_size``
rows at a time.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch import nn

from side_bench import cost
from side_bench.sampling.classifier import NOISE_BANDS, band_name
from side_bench.sampling.diffusion import derive_seed

CHUNK_ELEMENTS = 2**22
"""Default batch x chunk entries per distance block (32 MiB of float64)."""


class KernelPosterior(nn.Module):
    """The exact posterior of a labelled pool: ``forward(x_t, t)`` gives log p(c | x_t, t) for
    every class (usable as logits, e.g. by ``accuracy_by_noise``); ``log_prob_and_gradient``
    gives log p(c | x_t, t) of given classes and its gradient in x_t.

    ``images`` (P, C, H, W) in the space the UNet samples in ([-1, 1]); ``labels`` (P,) in
    [0, num_classes). A class without pool images has probability 0 (log -inf).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, scheduler_config: dict, *,
                 bandwidth: float = 1.0, chunk_size: int | None = None):
        super().__init__()
        if len(images) == 0 or len(images) != len(labels):
            raise ValueError(f"KernelPosterior: {len(images)} pool images and {len(labels)} labels")
        if not bandwidth > 0:
            raise ValueError(f"KernelPosterior: bandwidth must be positive, got {bandwidth}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"KernelPosterior: chunk_size must be positive, got {chunk_size}")
        pool = images.detach().reshape(len(images), -1).to(torch.float64)
        self.register_buffer("pool", pool)
        self.register_buffer("pool_norms", (pool**2).sum(1))
        self.register_buffer("pool_labels", labels.detach().long().reshape(-1))
        # the same float32 schedule the forward process (add_noise) and DDIM use, in float64
        alphas = DDPMScheduler.from_config(scheduler_config).alphas_cumprod.to(torch.float64)
        self.register_buffer("alphas_cumprod", alphas)
        self.num_classes = int(num_classes)
        self.bandwidth = float(bandwidth)
        self.chunk_size = chunk_size

    @property
    def pool_size(self) -> int:
        return len(self.pool)

    def _chunk(self, batch: int) -> int:
        return self.chunk_size or max(1, CHUNK_ELEMENTS // max(1, batch))

    def _logits(self, flat, norms, scale, variance, start, stop):
        """l_ij for the pool rows [start, stop): (batch, stop - start) float64."""
        inner = flat @ self.pool[start:stop].T
        distances = norms[:, None] - 2 * scale[:, None] * inner + scale[:, None] ** 2 * self.pool_norms[None, start:stop]
        return -distances.clamp_min(0) / (2 * variance[:, None])

    def _prepare(self, x: torch.Tensor, timesteps: torch.Tensor):
        flat = x.detach().reshape(len(x), -1).to(self.pool.device, torch.float64)
        abar = self.alphas_cumprod[timesteps.reshape(-1).to(self.pool.device).long()].expand(len(x))
        return flat, (flat**2).sum(1), abar.sqrt(), self.bandwidth * (1 - abar)

    def _class_logsumexp(self, flat, norms, scale, variance) -> tuple[torch.Tensor, list]:
        """logsumexp_{j in c} l_j for every class, (batch, K), scanning the pool in chunks;
        also the chunks' logits when there is only one chunk (the second pass reuses them)."""
        batch, chunk = len(flat), self._chunk(len(flat))
        total = torch.full((batch, self.num_classes), -torch.inf, dtype=torch.float64, device=flat.device)
        kept = []
        for start in range(0, self.pool_size, chunk):
            stop = min(self.pool_size, start + chunk)
            logits = self._logits(flat, norms, scale, variance, start, stop)
            index = self.pool_labels[start:stop].expand(batch, -1)
            # per-class maximum first, so a class far below the best one keeps its exact value
            peak = torch.full_like(total, -torch.inf).scatter_reduce(1, index, logits, "amax", include_self=True)
            sums = torch.zeros_like(total).scatter_add(1, index, torch.exp(logits - peak.gather(1, index)))
            total = torch.logaddexp(total, peak + torch.log(sums))
            if chunk >= self.pool_size:
                kept.append(logits)
        return total, kept

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """log p(k | x_t, t) for every class k: (batch, K) float64."""
        flat, norms, scale, variance = self._prepare(x, timesteps)
        per_class, _ = self._class_logsumexp(flat, norms, scale, variance)
        return per_class - torch.logsumexp(per_class, dim=1, keepdim=True)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.log_probs(x, timesteps).to(x.device, x.dtype)

    @torch.no_grad()
    def log_prob_and_gradient(self, x: torch.Tensor, timesteps: torch.Tensor,
                              labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(c_i | x_i, t_i) (batch,) float64, its gradient in x (x's shape, dtype, device))."""
        flat, norms, scale, variance = self._prepare(x, timesteps)
        per_class, kept = self._class_logsumexp(flat, norms, scale, variance)
        labels = labels.reshape(-1).to(flat.device).long()
        everything = torch.logsumexp(per_class, dim=1)
        own = per_class.gather(1, labels[:, None])[:, 0]
        difference = torch.zeros_like(flat)  # sum_j (w^c_ij - w_ij) x_j
        chunk = self._chunk(len(flat))
        for number, start in enumerate(range(0, self.pool_size, chunk)):
            stop = min(self.pool_size, start + chunk)
            logits = kept[number] if kept else self._logits(flat, norms, scale, variance, start, stop)
            members = self.pool_labels[None, start:stop] == labels[:, None]
            # exp(-inf) = 0 outside the class; an empty class (own = -inf) gets no weight
            within = torch.where(members & torch.isfinite(own)[:, None], torch.exp(logits - own[:, None]), 0.0)
            difference += (within - torch.exp(logits - everything[:, None])) @ self.pool[start:stop]
        # a class without pool images has log p = -inf everywhere: no direction to follow
        gradient = torch.where(torch.isfinite(own)[:, None], (scale / variance)[:, None] * difference, 0.0)
        return own - everything, gradient.reshape(x.shape).to(x.device, x.dtype)


def kernel_log_prob_gradient(posterior: KernelPosterior):
    """guidance(x_t, t, c) = grad_x log p(c | x_t, t) of the pool's exact posterior, for
    ``side_bench.sampling.diffusion.ddim_sample`` (the signature of ``log_prob_gradient``)."""

    def guidance(x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return posterior.log_prob_and_gradient(x, timesteps, labels)[1]

    guidance.guide = "kernel"  # what the sampler counts it as (side_bench/cost.py)
    return guidance


# --------------------------------------------------------------------------------------------
# Diagnostics of a guided attack: is its gradient the exact one, and how hard does it push
# --------------------------------------------------------------------------------------------

DIAGNOSTIC_POINTS = 256
"""Held-out images the guidance diagnostics use at most (each noised once per band)."""


@cost.benchmark_only  # the benchmark's measurement, not the attacker's work (side_bench/cost.py)
def guidance_diagnostics(guidance, reference: KernelPosterior, target, images: torch.Tensor, labels: torch.Tensor, *,
                         guidance_scale: float, seed: int, device: torch.device, bands=NOISE_BANDS,
                         points: int = DIAGNOSTIC_POINTS, batch_size: int = 256) -> dict:
    """Per band of t, on held-out labelled images (at most ``points``, a seeded subset), each
    noised once at t uniform in the band (seeded), guided to its own label c:

    - ``alignment``: the mean cosine between ``guidance``'s grad_x log p(c | x_t, t) and the
      ``reference`` exact posterior's, over the points where both are non-zero (their count
      in ``aligned_points``; an exact posterior that is certain has a zero gradient);
    - ``strength``: the median of ||lambda sqrt(1 - abar_t) grad|| / ||eps_theta(x_t, t)||, the
      guidance's push on the UNet's noise prediction, comparable across classifiers.

    Cost: ``points`` x len(bands) evaluations each of the guide's gradient, the reference's
    (O(pool x pixels) each) and the target UNet: at the defaults, 1,024 of each.
    """
    scheduler = DDPMScheduler.from_config(target.scheduler_config)
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    generator = torch.Generator().manual_seed(derive_seed(seed, "guidance-diagnostics"))
    out = {"alignment": {}, "aligned_points": {}, "strength": {}, "points": {}}
    if len(images) > points:
        chosen = torch.randperm(len(images), generator=generator)[:points].sort().values
        images, labels = images[chosen], labels[chosen]
    unet = target.unet.to(device).eval()
    for low, high in bands:
        timesteps = torch.randint(low, high, (len(images),), generator=generator)
        noisy = scheduler.add_noise(images, torch.randn(images.shape, generator=generator), timesteps)
        cosines, ratios = [], []
        for start in range(0, len(noisy), batch_size):
            x = noisy[start : start + batch_size].to(device)
            t = timesteps[start : start + batch_size].to(device)
            c = labels[start : start + batch_size].to(device)
            guide = guidance(x, t, c).detach().double().flatten(1).cpu()
            exact = reference.log_prob_and_gradient(x, t, c)[1].double().flatten(1).cpu()
            with torch.inference_mode():
                eps = unet(x, t, class_labels=c if target.num_classes else None).sample.double().flatten(1).cpu()
            norms = guide.norm(dim=1), exact.norm(dim=1)
            defined = (norms[0] > 0) & (norms[1] > 0)
            cosines.append((guide * exact).sum(1)[defined] / (norms[0] * norms[1])[defined])
            factor = guidance_scale * (1 - alphas[timesteps[start : start + batch_size]]).sqrt()
            ratios.append(factor * norms[0] / eps.norm(dim=1))
        name = band_name(low, high)
        cosines, ratios = torch.cat(cosines), torch.cat(ratios)
        out["alignment"][name] = round(float(cosines.mean()), 4) if len(cosines) else None
        out["aligned_points"][name] = len(cosines)
        out["strength"][name] = float(f"{float(torch.quantile(ratios, 0.5)):.4g}") if len(ratios) else None
        out["points"][name] = len(ratios)
    out["reference"] = {"classifier": "kernel", "pool_images": reference.pool_size, "bandwidth": reference.bandwidth}
    return out
