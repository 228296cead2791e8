"""Diffusion machinery shared by model and extractor plugins: training and DDIM sampling.

The sampling loop is ours (diffusers' pipelines run without gradients and have no classifier
guidance) and is written to be read and copied: one DDIM step per timestep, with an optional
guidance term added to the predicted noise.
"""

from __future__ import annotations

import copy
import hashlib
import weakref
from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from side_bench import cost
from side_bench.hookspecs import ProgressCallback, TargetModel, no_progress

GuidanceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""guidance(x_t, t, class_labels) -> grad_x log p(c | x_t, t), same shape as x_t."""

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The training precision when the caller names none. fp32 until benchmarks/precision_check.py
# has shown that bf16 moves no copy count beyond its interval (issue 21 item 1); a caller that
# trains in another precision must put it in its model's cache key.
TRAINING_PRECISION = "fp32"


def autocast_dtype(precision: str, where: str = "precision") -> torch.dtype:
    """The autocast dtype of "fp32", "bf16" or "fp16" (fp32: no autocast)."""
    if precision not in PRECISIONS:
        from side_bench.errors import BenchError

        raise BenchError(f"{where}: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


# How the sampling loop runs the UNet (extractors' ``compile`` setting):
#   "none"            eager, one kernel launch per operation (the default);
#   "graphs"          torch.compile in inductor's "lite" mode, where every operation stays the
#                     ATen kernel eager runs, with CUDA graphs on CUDA: a step's hundreds of
#                     launches become one graph replay, and the outputs are eager's bit for bit
#                     (the launch-bound 8x8 UNets on a GPU; on a CPU it gains nothing);
#   "reduce-overhead" torch.compile(mode="reduce-overhead"): inductor's fused kernels (with
#                     CUDA graphs on CUDA): faster where the model is large, but fused
#                     reductions round differently (GroupNorm, the time embedding's exp and
#                     sin: up to 1.2e-6 per forward in fp32 on a CPU), so not bit-identical.
#                     With a 16-bit precision the whole UNet runs in it (a copy, its weights
#                     cast once), not under autocast, and on a CPU in channels-last layout:
#                     the fastest path measured on a CPU with native bf16 (AMX): the quickstart
#                     UNet 2.5-3x eager fp32 where eager bf16 autocast is 1.5x, fastest at batch
#                     1024 (benchmarks/bf16_sampling.py). Every batch is padded to the first
#                     one's size, so the last, partial one does not compile the UNet again.
# Either compiles once per UNet, batch shape and precision (tens of seconds on a CPU; inductor's
# on-disk cache makes the next process's compile of the same architecture a few seconds).
COMPILE_MODES = ("none", "graphs", "reduce-overhead")
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # unet -> {(mode, dtype): compiled module}


def check_compile_mode(mode: str, where: str = "compile") -> str:
    if mode not in COMPILE_MODES:
        from side_bench.errors import BenchError

        raise BenchError(f"{where}: expected one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode


def compiled_unet(unet: torch.nn.Module, mode: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """``unet`` run as ``mode`` says (see ``COMPILE_MODES``), compiled once per module, mode and
    dtype. For "reduce-overhead" with a 16-bit ``dtype`` the compiled module is a copy of
    ``unet`` cast to it (its inputs must be cast too: ``ddim_sample`` does), its weights copied
    again whenever ``unet``'s have changed since; ``unet`` itself is left as it was (guidance
    through the UNet and training use its fp32 weights)."""
    if check_compile_mode(mode) == "none":
        return unet
    modes = _compiled.setdefault(unet, {})
    # "graphs" runs eager's kernels under the caller's autocast, whatever the dtype: one entry
    key = (mode, dtype if mode == "reduce-overhead" else None)
    if key not in modes:
        if mode == "graphs":
            from torch._inductor import list_mode_options

            if "lite" in list_mode_options():
                options = {**list_mode_options("lite"), "triton.cudagraphs": True}
                modes[key] = torch.compile(unet, options=options, dynamic=False)
            elif next(unet.parameters()).is_cuda:  # an older torch: dynamo's CUDA graphs of eager kernels
                modes[key] = torch.compile(unet, backend="cudagraphs", dynamic=False)
            else:
                from side_bench.errors import BenchError

                raise BenchError(f"compile 'graphs': torch {torch.__version__} has no inductor lite mode; "
                                 "on a CPU use compile = 'none' (graphs gain nothing there)")
        elif dtype == torch.float32:
            modes[key] = torch.compile(unet, mode="reduce-overhead", dynamic=False)
        else:
            # The whole UNet in bf16 (or fp16), weights cast once: under autocast every
            # convolution casts its fp32 weights again, and GroupNorm and SiLU run in fp32
            # between casts; cast, inductor fuses each norm and activation into one 16-bit-in,
            # 16-bit-out kernel that computes in fp32 inside (its reductions accumulate in fp32).
            network = copy.deepcopy(unet).requires_grad_(False).to(dtype)
            if not next(network.parameters()).is_cuda:  # oneDNN's convolutions want NHWC (measured on a CPU only)
                network = network.to(memory_format=torch.channels_last)
            modes[key] = _CastCopy(torch.compile(network, mode="reduce-overhead", dynamic=False), network, unet)
    compiled = modes[key]
    if isinstance(compiled, _CastCopy):
        compiled.refresh()
        return compiled.compiled
    return compiled


class _CastCopy:
    """A compiled 16-bit copy of a UNet and the versions of the weights it was cast from: an
    in-place change of the original's (training it further) is copied over before the next use
    (the weights are the compiled graph's inputs, so nothing is compiled again)."""

    def __init__(self, compiled, network: torch.nn.Module, source: torch.nn.Module):
        self.compiled, self.network = compiled, network
        self.source = weakref.ref(source)
        self.versions = self._versions(source)

    @staticmethod
    def _versions(module: torch.nn.Module) -> list[int]:
        return [t._version for t in (*module.parameters(), *module.buffers())]

    @torch.no_grad()
    def refresh(self) -> None:
        source = self.source()
        if source is None or self._versions(source) == self.versions:
            return
        for copied, original in zip((*self.network.parameters(), *self.network.buffers()),
                                    (*source.parameters(), *source.buffers()), strict=True):
            copied.copy_(original)
        self.versions = self._versions(source)


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (seed, purpose, index), stable across runs and machines."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_generator(seed: int, purpose: str, index: int) -> torch.Generator:
    """The generator of sample ``index``: samples never depend on batch size or order."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, index))


def initial_noise(seed: int, purpose: str, indices: range, shape, num_classes: int = 0):
    """Per-sample initial noise (and a uniform label when num_classes > 0), drawn on CPU."""
    noises, labels = [], []
    for index in indices:
        generator = sample_generator(seed, purpose, index)
        noises.append(torch.randn(shape, generator=generator))
        if num_classes:
            labels.append(int(torch.randint(num_classes, (1,), generator=generator)))
    noise = torch.stack(noises)
    return noise, (torch.tensor(labels, dtype=torch.long) if num_classes else None)


class EMA:
    """Exponential moving average of weights, with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averages = list(self.model.parameters())
        currents = [p.detach() for p in model.parameters()]
        if averages and averages[0].is_cuda:  # one kernel for all tensors, not one launch each
            torch._foreach_lerp_(averages, currents, 1 - decay)
        else:  # CPU: the loop, whose results the cached models were trained with
            for average, current in zip(averages, currents, strict=False):
                average.lerp_(current, 1 - decay)
        for average, current in zip(self.model.buffers(), model.buffers(), strict=False):
            average.copy_(current)


@cost.preparation  # trained during an attack (never the target's): a fixed cost of it (side_bench/cost.py)
def train_denoiser(unet, scheduler: DDPMScheduler, images: torch.Tensor, labels: torch.Tensor | None,
                   *, steps: int, batch_size: int, learning_rate: float, ema_decay: float,
                   seed: int, device: torch.device, progress: ProgressCallback,
                   precision: str | None = None) -> torch.nn.Module:
    """Train ``unet`` to predict noise (DDPM objective); return the EMA copy, on ``device``.

    ``precision`` ("fp32", "bf16", "fp16"; default ``TRAINING_PRECISION``): the forward pass
    under autocast; weights, optimizer, loss and EMA stay fp32. On CUDA AdamW is the fused
    kernel and the EMA a foreach update (the step is launch-bound for small UNets)."""
    dtype = autocast_dtype(precision or TRAINING_PRECISION, "training precision")
    generator = torch.Generator().manual_seed(derive_seed(seed, "train"))
    unet.to(device).train()
    ema = EMA(unet, ema_decay)
    optimizer = adamw(unet.parameters(), learning_rate, device)
    images = images.to(device)
    labels = labels.to(device) if labels is not None else None
    num_timesteps = scheduler.config.num_train_timesteps
    for step in range(steps):
        cost.add("model_train_steps", 1)
        cost.add("model_train_images", batch_size)
        batch = torch.randint(len(images), (batch_size,), generator=generator)
        clean = images[batch.to(device)]
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(num_timesteps, (batch_size,), generator=generator).to(device)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        class_labels = labels[batch.to(device)] if labels is not None else None
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            predicted = unet(noisy, timesteps, class_labels=class_labels).sample
        loss = torch.nn.functional.mse_loss(predicted.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(unet)
        if step % 25 == 0 or step == steps - 1:
            progress("training", step + 1, steps)
    return ema.model.to(device)


def adamw(parameters, learning_rate: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW without weight decay; fused on CUDA (one kernel per step), the default elsewhere."""
    fused = {"fused": True} if torch.device(device).type == "cuda" else {}
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0, **fused)


def ddim_sample(target: TargetModel, n: int, *, seed: int, num_steps: int, batch_size: int,
                device: torch.device, purpose: str = "sample", class_labels: torch.Tensor | None = None,
                guidance: GuidanceFn | None = None, guidance_scale: float = 0.0,
                guidance_t_min: int = 0, guidance_t_max: int | None = None,
                dtype: torch.dtype = torch.float32, compile: str = "none",
                progress: ProgressCallback = no_progress) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DDIM (eta = 0) from per-sample noise; returns (images in [-1, 1] on CPU, labels).

    ``compile``: how the UNet runs (``COMPILE_MODES``): eager, or compiled into CUDA graphs of
    eager's own kernels ("graphs", the same images), or inductor's fused kernels
    ("reduce-overhead"; with ``dtype`` bf16 or fp16 the whole UNet in that dtype rather than
    autocast, x_t and the DDIM update kept in fp32).

    For a class-conditional target without ``class_labels`` given, each sample draws its label
    uniformly from its own generator. With ``guidance``, the predicted noise becomes
    eps - guidance_scale * sqrt(1 - alphabar_t) * grad_x log p(c | x_t, t)
    (classifier guidance, Dhariwal & Nichol 2021, in the form the SIDE paper uses) at the
    timesteps t with guidance_t_min <= t < guidance_t_max (default: all); at every other step
    the update is exactly the unguided one (the classifier is not called).
    guidance_scale = 0 skips the classifier and gives exactly the unguided samples.
    """
    scheduler = DDIMScheduler.from_config(target.scheduler_config)
    scheduler.set_timesteps(num_steps)
    unet = target.unet.to(device).eval()
    network = compiled_unet(unet, compile, dtype)
    graphs = compile != "none" and torch.device(device).type == "cuda"
    # "reduce-overhead" in 16 bits: the network is a cast copy; its inputs are cast, no autocast
    cast = compile == "reduce-overhead" and dtype != torch.float32
    autocast = dtype != torch.float32 and not cast
    padded = min(n, batch_size) if compile == "reduce-overhead" else 0  # one batch shape: one compile
    draw_labels = target.num_classes if class_labels is None else 0
    t_max = scheduler.config.num_train_timesteps if guidance_t_max is None else guidance_t_max
    guided = guidance is not None and guidance_scale != 0.0
    # per step: None (unguided) or the factor lambda * sqrt(1 - alphabar_t), computed once
    factors = [guidance_scale * float(torch.sqrt(1 - scheduler.alphas_cumprod[int(t)]))
               if guided and guidance_t_min <= int(t) < t_max else None for t in scheduler.timesteps]
    outputs, labels_out = [], []
    total = n * num_steps
    for start in range(0, n, batch_size):
        indices = range(start, min(n, start + batch_size))
        x, drawn = initial_noise(seed, purpose, indices, target.image_shape, draw_labels)
        labels = drawn if class_labels is None else class_labels[start : start + len(indices)]
        x = x.to(device)
        labels_device = labels.to(device) if labels is not None else None
        unet_labels = labels_device if target.num_classes else None
        fill = padded - len(indices) if padded > len(indices) else 0  # the last batch, padded with zeros
        network_labels = unet_labels
        if fill and unet_labels is not None:
            network_labels = torch.cat([unet_labels, unet_labels.new_zeros(fill)])
        # the cost meter (side_bench/cost.py) counts the UNet at its first layer; the guide, and
        # which draw each image is, are counted here, where the sampler calls and makes them
        with cost.sampling_batch(len(indices)) as batch:
            for step, t in enumerate(scheduler.timesteps):
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=autocast):
                    if compile == "none":
                        eps = unet(x, t, class_labels=unet_labels).sample.float()
                    else:
                        if graphs:  # each step a new replay: the last one's outputs are read already
                            torch.compiler.cudagraph_mark_step_begin()
                        # x_t stays fp32 between steps: the DDIM update below is a few elementwise
                        # operations per pixel (0.09% of an eager fp32 forward, measured), and in 16
                        # bits it would round x_t again at every step; only the UNet's input is cast
                        inputs = x.to(dtype) if cast else x
                        if fill:
                            inputs = torch.cat([inputs, inputs.new_zeros((fill, *inputs.shape[1:]))])
                        # the timestep on the device, as the UNet would move it, so the graph holds no copy from the CPU
                        with cost.compiled_call(len(inputs)):
                            eps = network(inputs, t.to(device), class_labels=network_labels).sample[:len(x)].float()
                if factors[step] is not None:
                    grad = guidance(x, t.to(device).expand(len(x)), labels_device)
                    cost.add("guide_evals", len(x))
                    if getattr(guidance, "guide", None) == "kernel":
                        cost.add("kernel_evals", len(x))
                    eps = eps - factors[step] * grad
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
                progress("sampling", start * num_steps + (step + 1) * len(indices), total)
            images = x.clamp(-1, 1).cpu()
            if batch is not None:
                batch.outputs(images)
        outputs.append(images)
        if labels is not None:
            labels_out.append(labels.cpu())
    images = torch.cat(outputs)
    return images, (torch.cat(labels_out) if labels_out else None)
