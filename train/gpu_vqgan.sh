#!/usr/bin/env bash
# Train the bundled first stage (checkpoints/vqgan) on one GPU within a wall-time budget.
#
#   python train/prepare_data.py --src ../shared/data --out runs/data192 --short-side 192 --holdout 0.1
#   bash train/gpu_vqgan.sh runs/data192/train runs/vqgan_gpu 8 [key=value ...]
#
# DATA: training photos with a short side of at least 192 px (random 128 px crops after a random zoom of
# 1-1.5x, so a crop never upsamples); OUT: run folder; MINUTES: the training budget (default 8).
# A 40-step probe (20 without and 20 with the GAN terms) measures the step time; the run then gets as many
# steps as fit in the budget: linear warmup and cosine decay of the rate, the patch-GAN over the last 30%
# (ramped in over 10%), a checkpoint every 10%, `<OUT>/run/model-before-gan` kept. max_minutes stops and saves
# the run if the estimate was too high; `--resume` on `<OUT>/run` continues it on any device.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: gpu_vqgan.sh DATA OUT [MINUTES] [key=value ...]}
OUT=${2:?usage: gpu_vqgan.sh DATA OUT [MINUTES] [key=value ...]}
MINUTES=${3:-8}
shift $(( $# < 3 ? $# : 3 ))
PY=${PY:-python3}

# The first stage: f = 8 (128 px -> 16x16 codes), K = 1024 unit-length codes of 16 dims, widths 64-128.
VQ=(--size 128 --batch-size 64 data.scale_max=1.5 num_workers=8
    model.n_embed=1024 model.embed_dim=16 model.ddconfig.z_channels=64 model.ddconfig.ch=64
    "model.ddconfig.ch_mult=[1,2,2,2]" model.ddconfig.num_res_blocks=1 "model.ddconfig.attn_resolutions=[]"
    model.l2_normalize=true model.dead_code_threshold=0.3
    base_lr=4.5e-6 lr_schedule=cosine min_lr_ratio=0.05 loss.disc_weight=0.5)

rm -rf "$OUT/probe"
$PY train/train_vqgan.py --data "$DATA" --out "$OUT/probe" --steps 40 "${VQ[@]}" log_every=10 \
    image_every=1000000 save_every=1000000 --disc-start 20 loss.disc_ramp=0 warmup_steps=0 "$@"

# steps that fit: 70% at the pre-GAN step time, 30% at the GAN step time, 45 s kept for start and saves
read -r STEPS EVERY < <($PY - "$OUT/probe/log.jsonl" "$MINUTES" <<'EOF'
import json, sys
logs = [json.loads(line) for line in open(sys.argv[1])]
t = {r["step"]: r["sec_per_step"] for r in logs}
plain, gan = t[20], (t[30] + t[40]) / 2  # steps 11-20 without, 21-40 with the GAN terms (1-10: warm-up)
seconds = float(sys.argv[2]) * 60 - 45
steps = int(seconds / (0.7 * plain + 0.3 * gan))
every = max(10, steps // 10)
print(f"probe: {plain * 1e3:.1f} ms/step, {gan * 1e3:.1f} ms/step with the GAN", file=sys.stderr)
print(every * 10, every)
EOF
)
echo "training $STEPS steps (checkpoints every $EVERY, GAN from step $((7 * EVERY)))"
$PY train/train_vqgan.py --data "$DATA" --out "$OUT/run" --steps "$STEPS" "${VQ[@]}" \
    --disc-start $((7 * EVERY)) loss.disc_ramp="$EVERY" warmup_steps=$((EVERY / 5)) \
    save_every="$EVERY" image_every="$EVERY" keep_last=3 log_every=50 max_minutes="$MINUTES" "$@"
