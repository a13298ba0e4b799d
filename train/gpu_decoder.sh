#!/usr/bin/env bash
# Fine-tune the decoder of the released first stage for the same codes on one GPU within a wall-time budget,
# then judge every checkpoint on held-out photos (issue 24: a sharp decoder).
#
#   python train/prepare_data.py --src ../shared/data --out runs/data192 --short-side 192 --holdout 0.1
#   python train/prepare_data.py --src ../shared/data --out runs/data --short-side 128 --holdout 0.1
#   bash train/gpu_decoder.sh runs/data192/train runs/photos/holdout runs/dec_gpu 8 [key=value ...]
#
# DATA: training photos with a short side of at least 192 px (random 128 px crops after a random zoom of
# 1-1.5x); HOLDOUT: photos at the scale the app decodes (128 px short side); OUT: a new folder; MINUTES: the
# training budget (default 8); BATCH in the environment sets the batch (default 32). Only the decoder and
# post_quant_conv train (`train_only=decoder`): codes, and so every transformer, stay valid. Patch
# discriminator with DiffAugment and LeCam, adaptive weight as in the paper, from step 0, ramped in over 10%
# of the run. A checkpoint every 10% of the run; each is released to
# OUT/eval/step-N/ and measured with `evaluate.py reconstruction --size 128` (sharpness ratio, KID/FID,
# PSNR, SSIM, specks) into OUT/eval/step-N.json; a table of all of them ends the output. The best one is
# released with train/swap_decoder.py (see train/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
USAGE="usage: gpu_decoder.sh DATA HOLDOUT OUT [MINUTES] [key=value ...]"
DATA=${1:?$USAGE}
HOLDOUT=${2:?$USAGE}
OUT=${3:?$USAGE}
MINUTES=${4:-8}
shift $(( $# < 4 ? $# : 4 ))
PY=${PY:-python3}
if [ -e "$OUT" ]; then echo "error: $OUT exists; give a new folder" >&2; exit 2; fi

DEC=(--size 128 --batch-size "${BATCH:-32}" data.scale_max=1.5 num_workers=8
     init_from=checkpoints/vqgan train_only=decoder loss.discriminator=patch
     loss.diffaug=color,translation,cutout loss.lecam_weight=0.1 loss.disc_start=0
     base_lr=2.5e-7 disc_lr_scale=4 lr_schedule=constant warmup_steps=0)

$PY train/train_vqgan.py --data "$DATA" --out "$OUT/probe" --steps 30 "${DEC[@]}" log_every=10 \
    image_every=1000000 save_every=1000000 loss.disc_ramp=0 "$@"

# steps that fit: the GAN step time of the probe (steps 11-30; 1-10 are warm-up), 60 s kept for saves
read -r STEPS EVERY < <($PY - "$OUT/probe/log.jsonl" "$MINUTES" <<'EOF'
import json, sys
t = {r["step"]: r["sec_per_step"] for r in map(json.loads, open(sys.argv[1]))}
step_time = (t[20] + t[30]) / 2
steps = int((float(sys.argv[2]) * 60 - 60) / step_time)
every = max(10, steps // 10)
print(f"probe: {step_time * 1e3:.1f} ms/step", file=sys.stderr)
print(every * 10, every)
EOF
)
echo "training $STEPS steps (checkpoints every $EVERY)"
$PY train/train_vqgan.py --data "$DATA" --out "$OUT/run" --steps "$STEPS" "${DEC[@]}" loss.disc_ramp="$EVERY" \
    save_every="$EVERY" image_every="$EVERY" keep_last=10 log_every=50 max_minutes="$MINUTES" "$@"

# release every checkpoint's decoder and measure it on the hold-out
$PY - "$OUT" <<'EOF'
import sys
from pathlib import Path
import taming_core as tc
out = Path(sys.argv[1])
model = tc.load_model(out / "run" / "model")
for ckpt in tc.list_checkpoints(out / "run"):
    state = tc.load_checkpoint(ckpt, required=("step", "model"))
    tc.load_state_dict_strict(model, state["model"])
    tc.save_model(model, out / "eval" / f"step-{state['step']}")
EOF
for m in $(ls -d "$OUT"/eval/step-* | sort -t- -k2 -n); do
    $PY train/evaluate.py reconstruction --model "$m" --data "$HOLDOUT" --size 128 --json "$m.json" \
        --sheet "$m.png" > /dev/null
done
$PY - "$OUT/eval" <<'EOF'
import json, sys
from pathlib import Path
rows = sorted(Path(sys.argv[1]).glob("step-*.json"), key=lambda p: int(p.stem.split("-")[1]))
print("step     sharpness  KIDx1000  FID    PSNR   SSIM   specks/Mpx")
for p in rows:
    r = json.loads(p.read_text())
    print(f"{p.stem[5:]:>8} {r['sharpness_ratio']:9.3f} {1000 * r['kid']:9.1f} {r['fid']:6.1f} {r['psnr']:6.2f} "
          f"{r['ssim']:6.3f} {r['specks_per_million']:8.0f}")
EOF
