"""Classifiers for guidance: a small time-conditioned ResNet, its training, its gradient.

SIDE needs p(c | x_t, t): a classifier that sees noisy images and the timestep (the paper
uses ResNet34 with a time embedding added after the first BatchNorm of each residual block;
this is the same design, compact enough for small images). Carlini et al.'s Cond baseline
uses the same network trained on clean images only (``noise_aware=False``): it always sees
t = 0, which is what makes it an ordinary classifier.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.embeddings import get_timestep_embedding
from safetensors.torch import load_file, save_file
from torch import nn

from side_bench.hookspecs import ProgressCallback
from side_bench.results.cache import cache_lock, read_cache_entry, write_cache_entry
from side_bench.sampling.diffusion import derive_seed


class TimeResidualBlock(nn.Module):
    """conv-BN(+time embedding)-ReLU-conv-BN, plus a (projected) skip connection."""

    def __init__(self, channels_in: int, channels_out: int, time_dim: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels_out)
        self.time = nn.Linear(time_dim, channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out)
        self.skip = (
            nn.Identity() if stride == 1 and channels_in == channels_out
            else nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out))
        )

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.norm1(self.conv1(x)) + self.time(time)[:, :, None, None]
        h = self.norm2(self.conv2(F.relu(h)))
        return F.relu(h + self.skip(x))


class TimeConditionedResNet(nn.Module):
    """Stem, then one residual stage per width (stride 2 after the first), pooled, linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, stages: int = 3,
                 blocks_per_stage: int = 1, noise_aware: bool = True):
        super().__init__()
        self.noise_aware = noise_aware
        self.config = dict(in_channels=in_channels, num_classes=num_classes, width=width, stages=stages,
                           blocks_per_stage=blocks_per_stage, noise_aware=noise_aware)
        time_dim = 4 * width
        self.time_mlp = nn.Sequential(nn.Linear(width, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, channels = [], width
        for stage in range(stages):
            out = width * 2**stage
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(TimeResidualBlock(channels, out, time_dim, stride))
                channels = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if not self.noise_aware:  # an ordinary classifier: blind to the noise level
            timesteps = torch.zeros_like(timesteps)
        embedding = get_timestep_embedding(timesteps.float().reshape(-1), self.config["width"]).to(x.dtype)
        time = self.time_mlp(embedding)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, time)
        return self.head(h.mean(dim=(2, 3)))


def train_classifier(classifier: TimeConditionedResNet, images: torch.Tensor, labels: torch.Tensor,
                     scheduler_config: dict, *, steps: int, batch_size: int, learning_rate: float,
                     seed: int, device: torch.device, progress: ProgressCallback,
                     label_smoothing: float = 0.0, record: dict | None = None) -> TimeConditionedResNet:
    """Exactly ``steps`` AdamW steps of cross-entropy on forward-noised images x_t ~ q(x_t | x_0)
    at uniform t. A classifier that is not noise-aware is trained on the clean images (t = 0).

    ``record``, when given, receives ``steps`` and ``final_loss`` (the mean training loss of
    the last tenth of the steps, at least the last one).
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "classifier-train"))
    scheduler = DDPMScheduler.from_config(scheduler_config)
    classifier.to(device).train()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=1e-4)
    tail = max(1, steps // 10)
    losses = []
    for step in range(steps):
        batch = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        clean, target = images[batch], labels[batch]
        if classifier.noise_aware:
            timesteps = torch.randint(scheduler.config.num_train_timesteps, (len(batch),), generator=generator)
            noise = torch.randn(clean.shape, generator=generator)
            inputs = scheduler.add_noise(clean, noise, timesteps)
        else:
            timesteps, inputs = torch.zeros(len(batch), dtype=torch.long), clean
        logits = classifier(inputs.to(device), timesteps.to(device))
        loss = F.cross_entropy(logits, target.to(device), label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= steps - tail:
            losses.append(float(loss.detach()))
        if step % 10 == 0 or step == steps - 1:
            progress("classifier training", step + 1, steps)
    if record is not None:
        record["steps"] = steps
        record["final_loss"] = round(sum(losses) / len(losses), 4) if losses else None
    return classifier.eval()


def log_prob_gradient(classifier: nn.Module, temperature: float = 1.0):
    """guidance(x_t, t, c) = grad_x log p(c | x_t, t), for ``side_bench.sampling.diffusion.ddim_sample``.

    ``temperature`` divides the logits first (T > 1 softens an overconfident classifier).
    The classifier's weights are frozen (only x needs a gradient): about 2% faster sampling.
    """
    classifier.requires_grad_(False)

    def guidance(x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            logits = classifier(x_in, timesteps)
            if temperature != 1.0:
                logits = logits / temperature
            log_probs = F.log_softmax(logits, dim=1)
            selected = log_probs[torch.arange(len(x_in), device=x_in.device), labels].sum()
            return torch.autograd.grad(selected, x_in)[0]

    return guidance


# --------------------------------------------------------------------------------------------
# Diagnostics: how good is the guide where it is used, and where do guided samples land
# --------------------------------------------------------------------------------------------

NOISE_BANDS = ((0, 100), (100, 300), (300, 600), (600, 1000))
"""Bands of t (half-open [low, high)) for the classifier diagnostics."""


def band_name(low: int, high: int) -> str:
    return f"{low}-{high}"


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): a seeded permutation, ``round(fraction * n)`` held out
    (at least one when fraction > 0 and n >= 2; never all)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "classifier-holdout")))
    held = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    return order[held:].sort().values, order[:held].sort().values


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| x share of samples."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for b in range(bins):
        inside = (confidence > edges[b]) & (confidence <= edges[b + 1])
        if b == 0:
            inside |= confidence == 0
        if inside.any():
            ece += float(inside.float().mean() * (correct[inside].mean() - confidence[inside].mean()).abs())
    return ece


@torch.no_grad()
def accuracy_by_noise(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, scheduler_config: dict,
                      *, seed: int, device: torch.device, draws: int = 4, temperature: float = 1.0,
                      bands=NOISE_BANDS, batch_size: int = 1024) -> dict:
    """Accuracy and ECE of p(c | x_t, t) per band of t, on ``images`` (held-out ones).

    Each image is noised ``draws`` times per band at t uniform in the band (seeded), exactly
    as guidance sees it: a noise-blind classifier gets the noisy x_t too. Returns
    {"accuracy": {band: a}, "ece": {band: e}, "evaluations": {band: n}}.
    """
    scheduler = DDPMScheduler.from_config(scheduler_config)
    generator = torch.Generator().manual_seed(derive_seed(seed, "classifier-diagnostics"))
    classifier = classifier.to(device).eval()
    out = {"accuracy": {}, "ece": {}, "evaluations": {}}
    if len(images) == 0:
        return out
    for low, high in bands:
        clean = images.repeat(draws, 1, 1, 1)
        target = labels.repeat(draws)
        timesteps = torch.randint(low, high, (len(clean),), generator=generator)
        noise = torch.randn(clean.shape, generator=generator)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        probabilities = torch.cat([
            F.softmax(classifier(noisy[i : i + batch_size].to(device), timesteps[i : i + batch_size].to(device))
                      .float() / temperature, dim=1).cpu()
            for i in range(0, len(noisy), batch_size)])
        name = band_name(low, high)
        out["accuracy"][name] = round(float((probabilities.argmax(1) == target).float().mean()), 4)
        out["ece"][name] = round(expected_calibration_error(probabilities, target), 4)
        out["evaluations"][name] = len(clean)
    return out


def target_hit_rate(targets, nearest_index, train_targets) -> tuple[int, int]:
    """(hits, n): how many of the n candidates whose target is known landed nearest to a
    training image of that same class or cluster.

    ``targets`` (n,) the class/cluster each candidate was guided to or sampled with;
    ``nearest_index`` (n,) the index of each candidate's nearest training image;
    ``train_targets`` (N_train,) the class/cluster of every training image in the same label
    space. Candidates with a negative target (none) are not counted.
    """
    targets = torch.as_tensor(targets).long().reshape(-1)
    nearest = torch.as_tensor(nearest_index).long().reshape(-1)
    train = torch.as_tensor(train_targets).long().reshape(-1)
    if len(targets) != len(nearest):
        raise ValueError(f"target_hit_rate: {len(targets)} targets but {len(nearest)} nearest indices")
    known = targets >= 0
    hits = int((train[nearest[known]] == targets[known]).sum())
    return hits, int(known.sum())


def load_or_train_classifier(folder: Path, build, train) -> tuple[TimeConditionedResNet, dict]:
    """Reload a cached classifier from ``folder``, or train one and save it atomically.

    ``train(classifier, record)`` fills ``record`` (steps, final loss, diagnostics), which is
    saved as ``record.json`` next to the weights and returned with the classifier. The entry
    carries a manifest of its files' hashes: a damaged one is moved aside with a warning and
    trained again (``results/cache.py``).
    """

    def load(entry: Path) -> tuple[TimeConditionedResNet, dict]:
        classifier = TimeConditionedResNet(**json.loads((entry / "config.json").read_text()))
        classifier.load_state_dict(load_file(entry / "classifier.safetensors"))
        record_file = entry / "record.json"
        return classifier.eval(), json.loads(record_file.read_text()) if record_file.exists() else {}

    with cache_lock(folder):  # processes sharing a run train a given classifier once
        cached = read_cache_entry(folder, load, "classifier")
        if cached is not None:
            return cached
        record: dict = {}
        classifier = train(build(), record)
        with write_cache_entry(folder, "classifier") as temporary:
            state = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
            save_file(state, temporary / "classifier.safetensors")
            (temporary / "config.json").write_text(json.dumps(classifier.config, indent=2))
            (temporary / "record.json").write_text(json.dumps(record, indent=2, default=str))
        return classifier, record
