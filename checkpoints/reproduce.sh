#!/bin/bash
# Retrain the bundled models from ../shared/data (about 3 hours of one core each for the stages and 1.5 hours
# for the transformers on a 2-core CPU; run the independent lines in parallel where you have cores).
# What actually ran differs in one place, told in checkpoints/README.md (the VQGAN's first 500 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# Data: short side 128, a fixed 10% held out by a hash of each name; symlinked views for the scripts.
$PY train/prepare_data.py --src ../shared/data --out runs/data --short-side 128 --holdout 0.1
for split in train holdout; do
  mkdir -p runs/photos/$split runs/seg/$split/images runs/seg/$split/segmentations
  for d in runs/data/$split/*; do ln -sfn "$(realpath "$d/images")" runs/photos/$split/"$(basename "$d")"; done
  for d in coco sflckr; do
    for f in runs/data/$split/$d/images/*.png; do
      ln -sf "$(realpath "$f")" runs/seg/$split/images/
      ln -sf "$(realpath "runs/data/$split/$d/segmentations/$(basename "$f")")" runs/seg/$split/segmentations/
    done
  done
done

# Segmenter (checkpoints/segmenter): COCO + S-FLCKR photos with maps at short side 320, symlinked views
# runs/segview/{train,holdout}/{images,segmentations}/<set>; about 30 minutes of the 2 cores.
mkdir -p runs/segsrc && ln -sfn "$(realpath ../shared/data/coco)" runs/segsrc/coco \
  && ln -sfn "$(realpath ../shared/data/sflckr)" runs/segsrc/sflckr
$PY train/prepare_data.py --src runs/segsrc --out runs/seg320 --short-side 320 --holdout 0.1
for split in train holdout; do
  mkdir -p runs/segview/$split/images runs/segview/$split/segmentations
  for d in coco sflckr; do
    ln -sfn "$(realpath runs/seg320/$split/$d/images)" runs/segview/$split/images/$d
    ln -sfn "$(realpath runs/seg320/$split/$d/segmentations)" runs/segview/$split/segmentations/$d
  done
done
OMP_NUM_THREADS=2 $PY train/train_segmenter.py --data runs/segview/train/images --holdout runs/segview/holdout/images \
    --out runs/segmenter --steps 1600 freeze_steps=400 eval_every=200 save_every=200
$PY train/release.py runs/segmenter/model checkpoints/segmenter

# First stage v2 (checkpoints/vqgan): about 10 minutes on one GPU (train/gpu_vqgan.sh); photos at short side
# 192 for the 1-1.5x zoom of the 128 px crops. Run 2 continues run 1 as it ran (see the card).
$PY train/prepare_data.py --src ../shared/data --out runs/data192 --short-side 192 --holdout 0.1
PY=$PY bash train/gpu_vqgan.sh runs/data192/train runs/vqgan_gpu 6.8 num_workers=10 channels_last=true
$PY train/train_vqgan.py --data runs/data192/train --out runs/vqgan_gpu/run --resume --steps 3950 \
    loss.disc_start=3750 loss.disc_ramp=80 max_minutes=3.6 save_every=400 image_every=400
$PY train/release.py runs/vqgan_gpu/run/model-before-gan checkpoints/vqgan --resolution 128

# First stage v1 (checkpoints/vqgan-v1, the transformers' first stage until they are retrained on v2):
# 64 px crops of the 128 px photos; the original's rate for 1000 steps, then a higher one.
VQ="--size 64 --batch-size 16 data.resize=upscale model.n_embed=512 model.embed_dim=32 model.ddconfig.z_channels=64
    model.ddconfig.ch=32 model.ddconfig.ch_mult=[1,2,4,4] model.ddconfig.num_res_blocks=1
    model.ddconfig.attn_resolutions=[] model.l2_normalize=true model.dead_code_threshold=0.3 loss.disc_ramp=400"
$PY train/train_vqgan.py --data runs/photos/train --out runs/vqgan --steps 1000 --disc-start 2000 $VQ
$PY train/train_vqgan.py --out runs/vqgan --resume --steps 2500 --disc-start 2000 base_lr=1.5e-5
$PY train/release.py runs/vqgan/model checkpoints/vqgan-v1 --resolution 128

# Condition stages: same crops, no perceptual or GAN term.
COND="--size 64 --batch-size 16 data.resize=upscale model.n_embed=256 model.embed_dim=32 model.ddconfig.z_channels=64
      model.ddconfig.ch=32 model.ddconfig.ch_mult=[1,1,2,4] model.ddconfig.num_res_blocks=1
      model.ddconfig.attn_resolutions=[] model.l2_normalize=true model.dead_code_threshold=0.3
      loss.perceptual_weight=0 loss.disc_factor=0 base_lr=2e-5"
$PY train/train_vqgan.py --data runs/seg/train/images --kind segmentation --out runs/seg_vq --steps 600 $COND \
    data.n_labels=183 loss.reconstruction=ce
$PY train/train_vqgan.py --data runs/photos/train --kind edges --out runs/edges_vq --steps 800 $COND \
    loss.reconstruction=bce
$PY train/train_vqgan.py --data runs/data/train/drin/images --kind depth --out runs/depth_vq --steps 400 $COND

# Transformers: 4 layers, width 256, over 256 condition + 256 image tokens.
GPT="--size 128 --batch-size 8 transformer.n_layer=4 transformer.n_head=4 transformer.n_embd=256
     transformer.embd_pdrop=0.1 transformer.resid_pdrop=0.1 transformer.attn_pdrop=0.1 pkeep=0.9 lr=5e-4
     warmup_steps=50 eval_every=100 save_every=100 sample_every=100000 num_workers=0"
FIRST="--first-stage checkpoints/vqgan-v1"
$PY train/train_transformer.py --data runs/photos/train --cond edges --cond-stage runs/edges_vq/model \
    $FIRST --out runs/edges_gpt --steps 800 $GPT
# segmentation starts from the edges GPT (same shape; its image prior comes from 720 photos, not 207)
$PY train/train_transformer.py --data runs/seg/train/images --cond segmentation --cond-stage runs/seg_vq/model \
    $FIRST --out runs/seg_gpt2 --steps 450 $GPT lr=3e-4 warmup_steps=20 init_from=runs/edges_gpt/model
$PY train/train_transformer.py --data runs/data/train/drin/images --cond depth --cond-stage runs/depth_vq/model \
    $FIRST --out runs/depth_gpt --steps 200 $GPT
$PY train/train_transformer.py --data runs/photos/train --cond none $FIRST --out runs/uncond_gpt --steps 800 $GPT
for pair in seg_gpt2:segmentation edges_gpt:edges depth_gpt:depth uncond_gpt:unconditional; do
  $PY train/release.py runs/${pair%%:*}/model checkpoints/${pair##*:} --first-stage checkpoints/vqgan-v1
done
