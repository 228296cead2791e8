"""Extractors: turn a target model and a budget N_G into candidate images."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from side_bench.plugin_api import (
    BenchError,
    Candidates,
    KernelPosterior,
    TimeConditionedResNet,
    accuracy_by_noise,
    added_setting,
    aligned_training,
    autocast_dtype,
    canonical_hash,
    check_classifier_options,
    check_compile_mode,
    ddim_sample,
    guidance_diagnostics,
    guidance_summary,
    holdout_split,
    hookimpl,
    kernel_log_prob_gradient,
    load_or_train_classifier,
    log_prob_gradient,
    sample_generator,
    train_classifier,
    tweedie_denoiser,
)


@dataclass
class SamplingSettings:
    ddim_steps: int = 50
    batch_size: int = 256
    # UNet forward in fp32, bf16 or fp16 (autocast; with compile = "reduce-overhead" the whole UNet
    # cast once); guidance stays fp32
    precision: str = "fp32"
    # how the UNet runs: "none" (eager), "graphs" (CUDA graphs of eager's kernels: the same
    # images, fewer launches) or "reduce-overhead" (inductor's fused kernels); ddim_sample's COMPILE_MODES
    compile: str = added_setting("none")

    def validate(self, where: str) -> None:
        if self.ddim_steps < 1 or self.batch_size < 1:
            raise BenchError(f"{where}: ddim_steps and batch_size: expected positive integers")
        autocast_dtype(self.precision, f"{where}: precision")  # refuses an unknown one
        check_compile_mode(self.compile, f"{where}: compile")


class Sample:
    """Carlini et al.'s UnCond attack: plain DDIM sampling. On a class-conditional target,
    each sample's label is drawn uniformly over the classes from its own generator; the drawn
    labels are the candidates' targets."""

    description = "plain DDIM sampling of the target (Carlini et al. 2023, UnCond)"
    threat_model = "black-box"  # samples alone (DDIM here only to make them fast and seeded)

    Settings = SamplingSettings

    def __init__(self, settings: SamplingSettings):
        self.settings = settings

    def planned_cost(self, n: int) -> dict:
        return {"unet_evals": n * self.settings.ddim_steps}

    def extract(self, target, labelled, n, ctx):
        images, drawn = ddim_sample(target, n, seed=ctx.seed, num_steps=self.settings.ddim_steps,
                                    batch_size=self.settings.batch_size, device=ctx.device,
                                    dtype=autocast_dtype(self.settings.precision), compile=self.settings.compile,
                                    progress=ctx.progress)
        if drawn is None:
            return images
        return Candidates(images=images, targets=drawn, diagnostics={"class_draw": "uniform"})


CLASS_DRAWS = ("uniform", "frequency")


def draw_targets(n: int, labels: torch.Tensor, num_classes: int, mode: str, seed: int) -> torch.Tensor:
    """The class c of each of n guided samples, each from its own generator (seed, i).

    ``uniform``: uniform over the classes (the SIDE paper: over the kept clusters);
    ``frequency``: with the classes' shares among ``labels`` (their frequencies in the
    labelled images). Either way c_i depends only on (seed, i).
    """
    if mode == "uniform":
        return torch.tensor([int(torch.randint(num_classes, (1,), generator=sample_generator(seed, "guidance-class", i)))
                             for i in range(n)], dtype=torch.long)
    if mode != "frequency":
        raise BenchError(f"class_draw: expected one of {', '.join(CLASS_DRAWS)}, got {mode!r}")
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    cdf = torch.cumsum(counts / counts.sum(), 0)
    cdf[-1] = 1.0
    uniforms = torch.tensor([float(torch.rand(1, generator=sample_generator(seed, "guidance-class", i), dtype=torch.float64))
                             for i in range(n)], dtype=torch.float64)
    return torch.searchsorted(cdf, uniforms, right=True).clamp(max=num_classes - 1)


# What the dry run counts (planned_cost), in unguided UNet steps per guided step and in plain
# training steps per classifier step. Measured on the 2-core CPU (user guide, "Aligned
# classifiers": x_t guidance 59 ms and x0_hat guidance 128 ms against 37 ms unguided per DDIM
# step of 64; training 75 ms, PGD with 3 steps 178 ms, the penalty 132 ms, x0_hat 137 ms per
# step); the kernel's cells took 0.62x the trained-guided cells run beside them (issue 18 ablation).
X_T_GUIDED_COST = 1.6
X0_HAT_GUIDED_COST = 3.5
KERNEL_GUIDED_COST = 1.0
PGD_STEP_COST = 0.46  # per PGD step
PENALTY_COST = 0.76
X0_HAT_TRAIN_COST = 0.83
# side-exact's rejection pool per candidate, for the plan only: on digits at scale 96 with
# K = 20, 2.4 (N_G 4,096, held-out 256), 3.5 (N_G 1,024, seed 1) and 3.9 (N_G 16,384, seed 0);
# the rarest cluster sets it
POOL_PLANNING_FACTOR = 4.0


@dataclass
class GuidanceSettings(SamplingSettings):
    guidance_scale: float = 1.0  # lambda
    class_draw: str = "uniform"  # c per sample: "uniform" over the classes/kept clusters (paper) or "frequency"
    guidance_t_min: int = 0  # guidance only at timesteps guidance_t_min <= t < guidance_t_max;
    guidance_t_max: int = 1000  # elsewhere the plain DDIM update (default: every t)
    guidance_temperature: float = 1.0  # logits / T in the guidance gradient (T > 1 softens)
    classifier_width: int = 32  # channels of the first stage (doubling per stage)
    classifier_stages: int = 3  # 8x8 -> 8, 4, 2: three stages reach a 2x2 map
    classifier_blocks: int = 1  # residual blocks per stage
    classifier_steps: int = 1000  # optimizer steps (exactly), whatever the number of labelled images
    classifier_batch_size: int = 128
    classifier_learning_rate: float = 1e-3
    classifier_label_smoothing: float = 0.0
    classifier_holdout: float = 0.15  # share of the labelled images held out for the diagnostics (seeded)
    # "trained" (the ResNet above) or "kernel": the exact posterior of the labelled images
    # (less the held-out share) under the forward process, no training (sampling/kernel_posterior.py)
    classifier: str = added_setting("trained")
    kernel_bandwidth: float = added_setting(1.0)  # multiplies the kernel's variance 1 - abar_t
    # Classifiers whose gradients are aligned (issue 18; sampling/classifier.py). Each default is
    # the classifier as it was: left out of the config hash and the classifier's cache key.
    classifier_adversarial_eps: float = added_setting(0.0)  # PGD-l2 radius, a share of x_t's noise norm; 0: off
    classifier_adversarial_steps: int = added_setting(3)  # PGD steps (step 2.5 * radius / steps)
    classifier_gradient_penalty: float = added_setting(0.0)  # + lambda * mean ||grad_x log p(y | x_t)||^2
    classifier_noise_augmentation: float = added_setting(0.0)  # std of extra Gaussian noise on x_t in training
    classifier_input: str = added_setting("x_t")  # or "x0_hat": the UNet's one-step estimate, guided through it
    classifier_time_module: str = added_setting("shift")  # or "film": the paper's scale and shift per block

    def aligned(self) -> dict:
        """The aligned-training options, as ``train_classifier`` and ``aligned_training`` name them."""
        return dict(adversarial_eps=self.classifier_adversarial_eps, adversarial_steps=self.classifier_adversarial_steps,
                    gradient_penalty=self.classifier_gradient_penalty,
                    noise_augmentation=self.classifier_noise_augmentation)

    def validate(self, where: str) -> None:
        super().validate(where)
        check_classifier_options(where, classifier_input=self.classifier_input,
                                 time_module=self.classifier_time_module, **self.aligned())
        validate_kernel(self, where)
        if self.guidance_scale < 0:
            raise BenchError(f"{where}: guidance_scale: expected lambda >= 0, got {self.guidance_scale}")
        if self.class_draw not in CLASS_DRAWS:
            raise BenchError(f"{where}: class_draw: expected one of {', '.join(CLASS_DRAWS)}, got {self.class_draw!r}")
        if not 0 <= self.guidance_t_min < self.guidance_t_max:
            raise BenchError(f"{where}: guidance_t_min, guidance_t_max: expected 0 <= guidance_t_min < guidance_t_max, "
                             f"got {self.guidance_t_min} and {self.guidance_t_max}")
        if not self.guidance_temperature > 0:
            raise BenchError(f"{where}: guidance_temperature: expected a positive number, got {self.guidance_temperature}")
        for key in ("classifier_width", "classifier_stages", "classifier_blocks", "classifier_steps",
                    "classifier_batch_size"):
            if getattr(self, key) < 1:
                raise BenchError(f"{where}: {key}: expected a positive integer, got {getattr(self, key)}")
        if not self.classifier_learning_rate > 0:
            raise BenchError(f"{where}: classifier_learning_rate: expected a positive number, "
                             f"got {self.classifier_learning_rate}")
        if not 0 <= self.classifier_label_smoothing < 1:
            raise BenchError(f"{where}: classifier_label_smoothing: expected a value in [0, 1), "
                             f"got {self.classifier_label_smoothing}")
        if not 0 <= self.classifier_holdout < 1:
            raise BenchError(f"{where}: classifier_holdout: expected a share in [0, 1), got {self.classifier_holdout}")


class ClassifierGuided:
    """DDIM with eps <- eps - lambda * sqrt(1 - alphabar_t) * grad_x log p(c | x_t, t), c drawn
    per sample (``class_draw``), guidance only inside [guidance_t_min, guidance_t_max). The
    classifier is trained on the condition's labelled images less a seeded held-out share
    (``classifier_holdout``, on which its accuracy and calibration per noise band are measured)
    and cached by its config hash, so a lambda sweep trains it once. With ``classifier =
    "kernel"`` the guide is instead the exact posterior of those same training images under the
    forward process (no training; the same for ``side`` and ``classifier-guidance``, since being
    noise-aware is a property of a trained classifier). Every guided row also gets the guide's
    gradient alignment with that exact posterior and its guidance strength per noise band."""

    Settings = GuidanceSettings
    noise_aware = True
    name = ""
    threat_model = "white-box"  # the guidance steers the target's own denoising steps
    summarize_diagnostics = staticmethod(guidance_summary)  # the page's line under the attack

    def __init__(self, settings: GuidanceSettings):
        self.settings = settings

    def planned_cost(self, n: int) -> dict:
        """For the dry run: sampling in unguided-step units, and the classifier's training."""
        s = self.settings
        # DDIM's timesteps ("leading" spacing over 1,000): the guided ones lie in the window
        timesteps = [i * (1000 // s.ddim_steps) for i in range(s.ddim_steps)]
        guided = sum(s.guidance_t_min <= t < s.guidance_t_max for t in timesteps) if s.guidance_scale else 0
        step_cost = (KERNEL_GUIDED_COST if s.classifier == "kernel" else
                     X0_HAT_GUIDED_COST if s.classifier_input == "x0_hat" else X_T_GUIDED_COST)
        cost = {"unet_evals": int(n * (s.ddim_steps - guided + guided * step_cost))}
        if s.guidance_scale and s.classifier != "kernel":
            per_step = (1.0 + PGD_STEP_COST * s.classifier_adversarial_steps * (s.classifier_adversarial_eps > 0)
                        + PENALTY_COST * (s.classifier_gradient_penalty > 0) + X0_HAT_TRAIN_COST * (s.classifier_input == "x0_hat"))
            cost["classifier_images"] = int(s.classifier_steps * s.classifier_batch_size * per_step)
            cost["classifier_key"] = {f.name: getattr(s, f.name) for f in fields(s) if f.name.startswith("classifier_")}
        return cost

    def classifier(self, target, labelled, ctx) -> tuple[TimeConditionedResNet, dict]:
        """The trained classifier and its record: steps, final loss, held-out accuracy/ECE by t."""
        s = self.settings
        architecture = dict(in_channels=target.image_shape[0], num_classes=labelled.num_classes,
                            width=s.classifier_width, stages=s.classifier_stages,
                            blocks_per_stage=s.classifier_blocks, noise_aware=self.noise_aware)
        if s.classifier_time_module != "shift":  # in the key and the saved config only when not the default
            architecture["time_module"] = s.classifier_time_module
        training = dict(steps=s.classifier_steps, batch_size=s.classifier_batch_size,
                        learning_rate=s.classifier_learning_rate, label_smoothing=s.classifier_label_smoothing,
                        **aligned_training(**s.aligned()))
        hashed = training if s.classifier_input == "x_t" else {**training, "input": s.classifier_input}
        key = canonical_hash({"architecture": architecture, "training": hashed, "holdout": s.classifier_holdout,
                              "labelled": labelled.identity, "target": target.identity, "seed": ctx.seed,
                              "device": ctx.device.type})
        denoiser = self.denoiser(target, ctx)
        train_index, held_index = holdout_split(len(labelled.images), s.classifier_holdout, ctx.seed)

        def build():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                return TimeConditionedResNet(**architecture)

        def train(classifier, record):
            classifier = train_classifier(classifier, labelled.images[train_index], labelled.labels[train_index],
                                          target.scheduler_config, seed=ctx.seed, device=ctx.device,
                                          progress=ctx.progress, record=record, denoiser=denoiser, **training)
            record.update(train_images=len(train_index), heldout_images=len(held_index),
                          parameters=sum(p.numel() for p in classifier.parameters()),
                          noise_aware=self.noise_aware,
                          heldout=accuracy_by_noise(classifier, labelled.images[held_index],
                                                    labelled.labels[held_index], target.scheduler_config,
                                                    seed=ctx.seed, device=ctx.device, denoiser=denoiser))
            return classifier

        classifier, record = load_or_train_classifier(ctx.cache_dir / "classifiers" / key, build, train)
        return classifier.to(ctx.device).eval(), record

    def denoiser(self, target, ctx):
        """For ``classifier_input = "x0_hat"``: the target's one-step estimate x0_hat(x_t), which the
        classifier is trained on and sees in guidance (the gradient flows through the UNet); else None."""
        return tweedie_denoiser(target, ctx.device) if self.settings.classifier_input == "x0_hat" else None

    def extract(self, target, labelled, n, ctx):
        if labelled is None:
            raise BenchError(f"extractor {self.name!r} needs a condition that gives labelled images "
                             f"(informative, random, unique or surrogate), not 'none'")
        s = self.settings
        # c for sample i comes from its own generator, apart from its noise: with lambda = 0
        # the images equal plain sampling's exactly.
        labels = draw_targets(n, labelled.labels, labelled.num_classes, s.class_draw, ctx.seed)
        # A class-conditional target is given the same class as the classifier.
        if target.num_classes and target.num_classes != labelled.num_classes:
            raise BenchError(f"extractor {self.name!r}: the target has {target.num_classes} classes, "
                             f"the labelled images {labelled.num_classes}")
        guidance, diagnostics = None, {
            "classes": labelled.num_classes, "class_draw": s.class_draw,
            "guidance_window": [s.guidance_t_min, s.guidance_t_max]}
        if s.guidance_scale != 0:
            if s.classifier == "kernel":
                guidance, record = kernel_guidance(target, labelled, s, ctx)
            else:
                classifier, record = self.classifier(target, labelled, ctx)
                guidance = log_prob_gradient(classifier, temperature=s.guidance_temperature,
                                             denoiser=self.denoiser(target, ctx))
            diagnostics["classifier"] = record
            diagnostics["guidance"] = guidance_report(guidance, target, labelled, s, ctx)
        images, _ = ddim_sample(target, n, seed=ctx.seed, num_steps=s.ddim_steps, batch_size=s.batch_size,
                                device=ctx.device, class_labels=labels,
                                guidance=guidance, guidance_scale=s.guidance_scale,
                                guidance_t_min=s.guidance_t_min, guidance_t_max=s.guidance_t_max,
                                dtype=autocast_dtype(s.precision), compile=s.compile, progress=ctx.progress)
        return Candidates(images=images, targets=labels, diagnostics=diagnostics)


CLASSIFIERS = ("trained", "kernel")
# options of the trained classifier's training, refused away from their defaults with the kernel
TRAINED_ONLY = ("classifier_adversarial_eps", "classifier_gradient_penalty", "classifier_noise_augmentation",
                "classifier_input", "classifier_time_module")


def validate_kernel(s: GuidanceSettings, where: str) -> None:
    if s.classifier not in CLASSIFIERS:
        raise BenchError(f"{where}: classifier: expected one of {', '.join(CLASSIFIERS)}, got {s.classifier!r}")
    if not s.kernel_bandwidth > 0:
        raise BenchError(f"{where}: kernel_bandwidth: expected a positive number, got {s.kernel_bandwidth}")
    if s.classifier == "kernel" and s.guidance_temperature != 1.0:
        raise BenchError(f"{where}: guidance_temperature: expected 1 with classifier = \"kernel\" "
                         f"(soften the kernel with kernel_bandwidth), got {s.guidance_temperature}")
    if s.classifier == "kernel":  # the kernel is exact: nothing is trained, so a training option would be ignored
        defaults = {f.name: f.default for f in fields(s)}
        for key in TRAINED_ONLY:
            if getattr(s, key) != defaults[key]:
                raise BenchError(f"{where}: {key}: a training option of the trained classifier; expected it unset "
                                 f"with classifier = \"kernel\", got {getattr(s, key)!r}")


def training_pool(labelled, s: GuidanceSettings, seed: int):
    """(train indices, held-out indices) of the labelled images: the split the trained
    classifier uses, so the kernel's pool and every diagnostic's held-out images match it."""
    return holdout_split(len(labelled.images), s.classifier_holdout, seed)


def kernel_guidance(target, labelled, s: GuidanceSettings, ctx):
    """The exact posterior of the training share of the labelled images as the guide, and its
    record: no training, nothing cached; held-out accuracy/ECE by noise like a trained one's."""
    train_index, held_index = training_pool(labelled, s, ctx.seed)
    posterior = KernelPosterior(labelled.images[train_index], labelled.labels[train_index], labelled.num_classes,
                                target.scheduler_config, bandwidth=s.kernel_bandwidth).to(ctx.device)
    record = {"classifier": "kernel", "pool_images": len(train_index), "bandwidth": s.kernel_bandwidth,
              "heldout_images": len(held_index),
              "heldout": accuracy_by_noise(posterior, labelled.images[held_index], labelled.labels[held_index],
                                           target.scheduler_config, seed=ctx.seed, device=ctx.device)}
    return kernel_log_prob_gradient(posterior), record


def guidance_report(guidance, target, labelled, s: GuidanceSettings, ctx) -> dict:
    """Gradient alignment with the exact posterior (bandwidth 1) of the training pool, and
    guidance strength, per noise band on the held-out images (``guidance_diagnostics``)."""
    train_index, held_index = training_pool(labelled, s, ctx.seed)
    if len(held_index) == 0:
        return {"skipped": "no held-out images (classifier_holdout = 0)"}
    exact = KernelPosterior(labelled.images[train_index], labelled.labels[train_index], labelled.num_classes,
                            target.scheduler_config).to(ctx.device)
    return guidance_diagnostics(guidance, exact, target, labelled.images[held_index], labelled.labels[held_index],
                                guidance_scale=s.guidance_scale, seed=ctx.seed, device=ctx.device,
                                batch_size=s.batch_size)


class Side(ClassifierGuided):
    """``side``: guidance by a time-dependent classifier p(c | x_t, t) trained on noised images."""

    description = "SIDE: DDIM guided by a time-dependent classifier p(c | x_t, t) (Chen et al. 2024, arXiv 2410.02467)"

    noise_aware = True
    name = "side"


class ClassifierGuidance(ClassifierGuided):
    """``classifier-guidance`` (Carlini Cond): an ordinary classifier trained on clean images."""

    description = "DDIM guided by an ordinary classifier trained on clean images (Carlini et al. 2023, Cond)"

    noise_aware = False
    name = "classifier-guidance"


POOL_STREAM = 256  # unguided pool samples per seeded stream: pool sample j is sample j % 256 of stream j // 256


def whole_streams(count: float) -> int:
    """The pool size, in samples, of the fewest whole streams holding ``count`` samples."""
    return POOL_STREAM * int(-(-count // POOL_STREAM))


@dataclass
class ExactSettings(SamplingSettings):
    class_draw: str = "uniform"  # c per candidate, as ``side`` draws it: "uniform" over the kept clusters or "frequency"
    pool_seed: int = -1  # the seed of the unguided pool; -1: the cell's seed
    max_pool_factor: float = 64.0  # the pool stops at this many unguided samples per candidate (x N_G)

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.class_draw not in CLASS_DRAWS:
            raise BenchError(f"{where}: class_draw: expected one of {', '.join(CLASS_DRAWS)}, got {self.class_draw!r}")
        if self.pool_seed < -1:
            raise BenchError(f"{where}: pool_seed: expected a seed >= 0, or -1 for the cell's seed, got {self.pool_seed}")
        if not self.max_pool_factor >= 1:  # every candidate takes a pool sample of its own
            raise BenchError(f"{where}: max_pool_factor: expected a number >= 1, got {self.max_pool_factor}")


class SideExact:
    """``side-exact``: SIDE with an exact classifier, sampled by rejection (no classifier at all).

    At lambda = 1 with the exact p(c | x), SIDE samples p_theta(x | c) with c uniform over the
    kept surrogate clusters: the model's own distribution re-weighted so that every kept
    cluster has equal mass. This extractor draws exactly that. Candidate i's cluster c_i comes
    from its own generator, as ``side`` draws it (``class_draw``); the candidates are filled
    from a shared pool of plain unguided DDIM samples (the ``sample`` extractor's sampler, with
    its ``ddim_steps``), each given its nearest kept centroid in the condition's feature space
    (the assignment that gave the surrogate pool its pseudo-labels). The k-th candidate of
    cluster c, in index order, is the k-th pool sample of c, in pool order, so each pool sample
    is used at most once and candidate i depends only on (seed, i) and the pool seed (never on
    N_G or the batch size). Pool sample j is sample j % 256 of the seeded stream
    (pool seed, "side-exact-pool/<j // 256>"); the pool grows stream by stream until every
    cluster holds what its candidates need, or stops at ``max_pool_factor`` x N_G samples with
    an error naming the cluster that is too rare.

    It is an attack in its own right, a cluster-balanced generate-and-filter whose query cost
    (the unguided samples drawn, in the row's diagnostics with the per-cluster counts) is the
    price of the filter, and the bound for ``side`` at lambda = 1: its copy rate is the mean
    over kept clusters of the per-cluster copy rate of unguided samples, which any trained
    classifier's SIDE at lambda = 1 only approximates.
    """

    description = ("SIDE with an exact classifier: p_theta(x | c), c uniform over the kept surrogate clusters, "
                   "by rejection from unguided samples (the bound for side at lambda 1)")
    threat_model = "black-box"  # filters the target's own samples; never looks inside it

    Settings = ExactSettings

    def __init__(self, settings: ExactSettings):
        self.settings = settings

    def planned_cost(self, n: int) -> dict:
        # the pool, not the candidates, is sampled; its size is known only after the run
        return {"unet_evals": int(n * POOL_PLANNING_FACTOR * self.settings.ddim_steps)}

    def extract(self, target, labelled, n, ctx):
        nearest_kept = getattr(labelled, "nearest_kept", None)
        if nearest_kept is None:
            raise BenchError("extractor 'side-exact' needs condition 'surrogate' (labelled images with the kept "
                             "centroids that assign new samples to clusters)")
        s = self.settings
        classes = labelled.num_classes
        targets = draw_targets(n, labelled.labels, classes, s.class_draw, ctx.seed)
        needed = torch.bincount(targets, minlength=classes)
        pool_seed = ctx.seed if s.pool_seed == -1 else s.pool_seed
        cap = whole_streams(s.max_pool_factor * n)
        # per cluster: its first needed[c] pool samples in pool order; only those are kept, so
        # memory stays at N_G images however large the pool grows
        kept: list[list[torch.Tensor]] = [[] for _ in range(classes)]
        taken = torch.zeros(classes, dtype=torch.long)
        found = torch.zeros(classes, dtype=torch.long)
        filled_at = torch.zeros(classes, dtype=torch.long)  # pool size at which cluster c had enough
        drawn, planned = 0, min(cap, whole_streams(n))  # each candidate needs a sample of its own
        while True:
            while drawn < planned:
                def progress(stage, done, total, offset=drawn * s.ddim_steps, planned=planned):
                    ctx.progress("sampling", offset + done, planned * s.ddim_steps)

                images, _ = ddim_sample(target, POOL_STREAM, seed=pool_seed,
                                        purpose=f"side-exact-pool/{drawn // POOL_STREAM}", num_steps=s.ddim_steps,
                                        batch_size=min(s.batch_size, POOL_STREAM), device=ctx.device,
                                        dtype=autocast_dtype(s.precision), compile=s.compile, progress=progress)
                clusters = nearest_kept(images, ctx.features, ctx.device)
                for c in range(classes):
                    members = torch.nonzero(clusters == c).flatten()
                    room = int(needed[c] - taken[c])
                    if room > 0 and len(members):
                        kept[c].append(images[members[:room]])
                        taken[c] += min(room, len(members))
                        if taken[c] == needed[c]:
                            filled_at[c] = drawn + int(members[room - 1]) + 1
                    found[c] += len(members)
                drawn += POOL_STREAM
            short = torch.nonzero(taken < needed).flatten().tolist()
            if not short:
                break
            if drawn >= cap:
                rarest = min(short, key=lambda c: int(found[c]) / int(needed[c]))
                raise BenchError(f"extractor 'side-exact': cluster {rarest} holds {int(found[rarest])} of the "
                                 f"{drawn} unguided samples (the cap, max_pool_factor {s.max_pool_factor:g} x N_G "
                                 f"{n}) and its candidates need {int(needed[rarest])} ({len(short)} clusters short); "
                                 f"raise max_pool_factor or keep fewer rare clusters (surrogate tau, clusters)")
            # the pool each short cluster needs at the share seen so far (twice the pool when it has
            # none yet); growing to the largest of these keeps the draws close to the least needed
            estimate = max(int(needed[c]) * drawn / int(found[c]) if found[c] else 2 * drawn for c in short)
            planned = min(cap, whole_streams(max(estimate, drawn + 1)))
        banks = [torch.cat(parts) if parts else None for parts in kept]
        rank = torch.zeros(n, dtype=torch.long)
        seen = torch.zeros(classes, dtype=torch.long)
        for i, c in enumerate(targets.tolist()):
            rank[i] = seen[c]
            seen[c] += 1
        images = torch.stack([banks[c][r] for c, r in zip(targets.tolist(), rank.tolist(), strict=True)])
        diagnostics = {"classes": classes, "class_draw": s.class_draw, "pool_seed": pool_seed,
                       "query_cost": drawn, "pool_needed": int(filled_at.max()), "max_pool": cap,
                       "cluster_candidates": needed.tolist(), "cluster_pool": found.tolist()}
        return Candidates(images=images, targets=targets, diagnostics=diagnostics)


@hookimpl
def register_extractors(register):
    register("sample", Sample, aliases=("uncond-sample",))
    register("side", Side)
    register("classifier-guidance", ClassifierGuidance, aliases=("cond",))
    register("side-exact", SideExact)
