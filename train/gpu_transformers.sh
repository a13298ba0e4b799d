#!/usr/bin/env bash
# Train the bundled transformers (and their ablations) on one GPU at once, from codes made on another machine.
#
#   # here: encode every training set once (steps=0 only writes <out>/codes.pt), e.g.
#   python train/train_transformer.py --data runs/photos192/train --cond edges --cond-stage STAGE \
#       --first-stage checkpoints/vqgan --out runs/enc/edges --steps 0 crops=6 data.scale_max=1.5 ...
#   # there: G holds vqgan/, stages/{segmentation,edges,depth}/ and codes/{seg,seg_real,edges,depth,uncond}.pt
#   bash train/gpu_transformers.sh G OUT [MINUTES]
#
# Each run reads its codes alone (cache=FILE, no --data) and trains a 4 x 256 GPT for at most MINUTES
# (default 6) of wall time, all runs side by side on the one GPU; validation every 200 steps keeps the best
# weights (<run>/model-best). Then OUT gets the best GPT weights of every run as float16, the transformer's
# state dict alone, keys "<run>/<name>", packed into gpts-<i>.safetensors of at most 16.6 MB each (the device
# tool brings back 8 files of 16 MiB); unpack with train/release.py --transformer FILE --run NAME where the
# stages are. And logs.tar.gz: each run's config, log.jsonl, best step, last sample grid and output.
set -uo pipefail
cd "$(dirname "$0")/.."
G=${1:?usage: gpu_transformers.sh G OUT [MINUTES]}
OUT=${2:?usage: gpu_transformers.sh G OUT [MINUTES]}
MINUTES=${3:-6}
PY=${PY:-python3}
RUNS=${RUNS:-runs/gpu_runs}
if compgen -G "$RUNS/*/log.jsonl" > /dev/null; then  # the training script never overwrites a run
  echo "error: $RUNS holds earlier runs; set RUNS to a new folder (or resume them one by one)" >&2; exit 2
fi
mkdir -p "$RUNS" "$OUT"

GPT=(--first-stage "$G/vqgan" --batch-size 32 steps=8000 transformer.n_layer=4 transformer.n_head=4
     transformer.n_embd=256 transformer.embd_pdrop=0.1 transformer.resid_pdrop=0.1 transformer.attn_pdrop=0.1
     pkeep=0.9 lr=6e-4 warmup_steps=200 eval_every=200 save_every=1000 sample_every=4000 log_every=100
     num_workers=0 max_minutes="$MINUTES")
# name | condition | codes | settings (after the common ones: they win); RUNS_SPEC replaces the list
SPEC=${RUNS_SPEC:-"seg          segmentation seg      cond_mode=aligned cond_drop=0.1
seg_prefix   segmentation seg      cond_mode=prefix cond_drop=0.1
seg_real     segmentation seg_real cond_mode=aligned cond_drop=0.1
edges        edges        edges    cond_mode=aligned cond_drop=0.1
depth        depth        depth    cond_mode=aligned cond_drop=0.1 steps=1500 val_fraction=0.1
uncond       none         uncond"}
while read -r name cond codes settings; do
  stage=()
  [ "$cond" != none ] && stage=(--cond-stage "$G/stages/$cond")
  # shellcheck disable=SC2086  # settings split into key=value words
  $PY train/train_transformer.py --cond "$cond" "${stage[@]}" --out "$RUNS/$name" "${GPT[@]}" \
      cache="$G/codes/$codes.pt" $settings > "$RUNS/$name.out" 2>&1 &
done <<< "$SPEC"
wait
echo "training done"

$PY - "$RUNS" "$OUT" <<'EOF'
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
import taming_core as tc
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
packs, size = [{}], 0
for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    src = run / "model-best" if (run / "model-best").is_dir() else run / "model"
    if not src.is_dir():
        print(f"{run.name}: no weights ({(run.parent / (run.name + '.out')).read_text()[-400:]})")
        continue
    gpt = {f"{run.name}/{k}": v.half().contiguous() for k, v in tc.load_model(src).transformer.state_dict().items()}
    mb = sum(v.numel() * 2 for v in gpt.values()) / 1e6
    if size + mb > 16.6:  # MB; the device tool's limit is 16 MiB = 16.78 MB a file
        packs, size = packs + [{}], 0
    packs[-1].update(gpt)
    size += mb
    best = json.loads((src / "best.json").read_text()) if (src / "best.json").is_file() else {}
    print(f"{run.name}: {src.name} {best}, {mb:.1f} MB -> gpts-{len(packs) - 1}.safetensors")
for i, pack in enumerate(packs):
    if pack:
        save_file(pack, str(out / f"gpts-{i}.safetensors"))
EOF
tar czf "$OUT/logs.tar.gz" -C "$RUNS" --exclude='*.pt' --exclude='*.safetensors' --exclude='checkpoints' . \
    || echo "tar failed"
