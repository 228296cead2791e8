#!/usr/bin/env bash
# Issue 21's GPU targets, in one run (about 6-8 minutes on one H200; nothing here runs in CI):
#   1. the quickstart cold (fresh cache), target 20 s;
#   2. benchmarks/gpu_determinism.sh: identical rows run to run;
#   3. celeba-scales' UNet ([128, 256, 256, 256], 2 layers, attention) at 64 and 128 px:
#      training images/s (batch 64, fp32 and bf16 autocast), unguided and guided (SIDE's
#      classifier, lambda 1) DDIM sampling images/s (50 steps);
#   4. the k-NN of celeba-scales' full scale: 5,120 candidates x 182,637 x 12,288 (benchmarks/knn_celeba.py).
# Usage: bash benchmarks/gpu_check.sh [DEVICE]   (default cuda); numbers go to stdout and
# $OUT/gpu_check.json when OUT is set. Paste them into docs/user-guide.md, "On a GPU", and
# benchmarks/throughput.json (devices.cuda).
set -uo pipefail
device="${1:-cuda}"
here="$(cd "$(dirname "$0")" && pwd)"
work=$(mktemp -d)
out="${OUT:-$work}"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"

echo "== 1. quickstart cold (target 20 s)"
start=$(date +%s.%N)
timeout 300 side-bench run --device "$device" --results "$work/quickstart" --cache-dir "$work/cache-quickstart" >/dev/null \
  && echo "quickstart cold: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s" || echo "quickstart: FAILED or over 300 s"

echo "== 2. determinism (benchmarks/gpu_determinism.sh)"
timeout 240 bash "$here/gpu_determinism.sh" "$device" || echo "gpu_determinism: FAILED (or over 240 s)"

echo "== 3. celeba-scales UNet throughput"
timeout 240 python3 - "$device" "$out/gpu_check_unet.json" <<'PY'
import json, sys, time
import torch
from diffusers import DDPMScheduler
from side_bench.hookspecs import TargetModel
from side_bench.sampling.classifier import TimeConditionedResNet, log_prob_gradient
from side_bench.sampling.diffusion import ddim_sample, train_denoiser
from side_bench_builtins.models import BenchUNet

device = torch.device(sys.argv[1])
settings = BenchUNet.Settings(block_out_channels=[128, 256, 256, 256], layers_per_block=2, attention=True,
                              norm_num_groups=32)
found = {}
for size in (64, 128):
    shape = (3, size, size)
    images = torch.rand(512, *shape) * 2 - 1
    for precision in ("fp32", "bf16"):
        unet = BenchUNet(settings).build_unet(shape, 0)
        common = dict(batch_size=64, learning_rate=1e-4, ema_decay=0.9999, seed=0, device=device,
                      progress=lambda *a: None, precision=precision)
        train_denoiser(unet, DDPMScheduler(), images, None, steps=3, **common)  # warm-up (cuDNN autotuning)
        torch.cuda.synchronize()
        steps = 20 if size == 64 else 8
        start = time.perf_counter()
        unet = train_denoiser(unet, DDPMScheduler(), images, None, steps=steps, **common)
        torch.cuda.synchronize()
        found[f"train {size}px {precision} images/s"] = round(steps * 64 / (time.perf_counter() - start), 1)
    target = TargetModel(unet=unet.eval(), scheduler_config={"num_train_timesteps": 1000}, num_classes=0,
                         trained_with="none", image_shape=shape, identity={})
    classifier = TimeConditionedResNet(in_channels=3, num_classes=100, width=32, stages=3).to(device).eval()
    guide = log_prob_gradient(classifier)
    n = 256 if size == 64 else 64
    for kind, options in (("unguided", {}), ("guided", dict(guidance=guide, guidance_scale=1.0,
                                                              class_labels=torch.arange(n) % 100))):
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            ddim_sample(target, 8, seed=0, num_steps=2, batch_size=8, device=device, dtype=dtype,
                        **({**options, "class_labels": torch.arange(8) % 100} if options else {}))
            torch.cuda.synchronize()
            start = time.perf_counter()
            ddim_sample(target, n, seed=0, num_steps=50, batch_size=n, device=device, dtype=dtype, **options)
            torch.cuda.synchronize()
            found[f"sample {size}px {kind} {precision} images/s (50 steps)"] = round(n / (time.perf_counter() - start), 1)
    print(json.dumps({k: v for k, v in found.items() if f"{size}px" in k}), flush=True)
json.dump(found, open(sys.argv[2], "w"), indent=1)
PY
[ $? -eq 0 ] || echo "UNet throughput: FAILED or over 240 s (the lines above are what finished)"

echo "== 4. k-NN 5,120 x 182,637 x 12,288"
timeout 150 python3 "$here/knn_celeba.py" --device "$device" | tee "$out/gpu_check_knn.json" || echo "k-NN: FAILED or over 150 s"
