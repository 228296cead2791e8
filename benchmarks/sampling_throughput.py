"""Images/s of unguided and guided DDIM on 8x8 digits-sized models (issue 10, part 3).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/sampling_throughput.py [--n 512] [--steps 50]

Untrained weights: throughput does not depend on them. The UNet is the quickstart's
bench-unet ([32, 64], one layer per block); the classifier is the given width x stages.
Each configuration runs once after a short warm-up (the machine is shared: read ratios
within one run, not absolute numbers across runs).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from diffusers import UNet2DModel

from side_bench.hookspecs import TargetModel
from side_bench.sampling.classifier import TimeConditionedResNet, log_prob_gradient
from side_bench.sampling.diffusion import ddim_sample


def target():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8).eval()
    return TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=0,
                       trained_with="none", image_shape=(1, 8, 8), identity={})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--classifier", default="32x3", help="width x stages, comma-separated list")
    args = parser.parse_args()
    t = target()
    cpu = torch.device("cpu")
    results = []
    for threads in [int(v) for v in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for batch in [int(v) for v in args.batches.split(",")]:
            arms = {"unguided": None}
            for spec in args.classifier.split(","):
                width, stages = (int(v) for v in spec.split("x"))
                torch.manual_seed(0)
                classifier = TimeConditionedResNet(1, 20, width=width, stages=stages).eval()
                arms[f"guided {spec}"] = log_prob_gradient(classifier)
            labels = torch.arange(args.n) % 20
            for name, guide in arms.items():
                ddim_sample(t, min(batch, args.n), seed=0, num_steps=2, batch_size=batch, device=cpu,
                            class_labels=labels, guidance=guide, guidance_scale=1.0)  # warm-up
                start = time.perf_counter()
                ddim_sample(t, args.n, seed=0, num_steps=args.steps, batch_size=batch, device=cpu,
                            class_labels=labels, guidance=guide, guidance_scale=1.0)
                seconds = time.perf_counter() - start
                row = {"threads": threads, "batch": batch, "arm": name, "n": args.n, "steps": args.steps,
                       "seconds": round(seconds, 2), "images_per_s": round(args.n / seconds, 1),
                       "unet_image_steps_per_s": round(args.n * args.steps / seconds)}
                results.append(row)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
