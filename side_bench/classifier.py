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

from side_bench.diffusion import derive_seed
from side_bench.hookspecs import ProgressCallback
from side_bench.store import atomic_directory


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
                     scheduler_config: dict, *, epochs: int, batch_size: int, learning_rate: float,
                     seed: int, device: torch.device, progress: ProgressCallback) -> TimeConditionedResNet:
    """Cross-entropy on forward-noised images x_t ~ q(x_t | x_0) at uniform t (AdamW).

    A classifier that is not noise-aware is trained on the clean images (t = 0, no noise).
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "classifier-train"))
    scheduler = DDPMScheduler.from_config(scheduler_config)
    classifier.to(device).train()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps_per_epoch = max(1, -(-len(images) // batch_size))
    total = epochs * steps_per_epoch
    for step in range(total):
        batch = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        clean, target = images[batch], labels[batch]
        if classifier.noise_aware:
            timesteps = torch.randint(scheduler.config.num_train_timesteps, (len(batch),), generator=generator)
            noise = torch.randn(clean.shape, generator=generator)
            inputs = scheduler.add_noise(clean, noise, timesteps)
        else:
            timesteps, inputs = torch.zeros(len(batch), dtype=torch.long), clean
        logits = classifier(inputs.to(device), timesteps.to(device))
        loss = F.cross_entropy(logits, target.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == total - 1:
            progress("classifier training", step + 1, total)
    return classifier.eval()


def log_prob_gradient(classifier: nn.Module):
    """guidance(x_t, t, c) = grad_x log p(c | x_t, t), for ``side_bench.diffusion.ddim_sample``."""

    def guidance(x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            log_probs = F.log_softmax(classifier(x_in, timesteps), dim=1)
            selected = log_probs[torch.arange(len(x_in), device=x_in.device), labels].sum()
            return torch.autograd.grad(selected, x_in)[0]

    return guidance


def load_or_train_classifier(folder: Path, build, train) -> TimeConditionedResNet:
    """Reload a cached classifier from ``folder``, or train one and save it atomically."""
    weights, config = folder / "classifier.safetensors", folder / "config.json"
    if weights.exists() and config.exists():
        classifier = TimeConditionedResNet(**json.loads(config.read_text()))
        classifier.load_state_dict(load_file(weights))
        return classifier.eval()
    classifier = train(build())
    with atomic_directory(folder, complete="classifier.safetensors") as temporary:
        state = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
        save_file(state, temporary / "classifier.safetensors")
        (temporary / "config.json").write_text(json.dumps(classifier.config, indent=2))
    return classifier
