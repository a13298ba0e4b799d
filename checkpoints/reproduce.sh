#!/bin/bash
# Retrain the bundled models from ../shared/data (about 3 hours of one core each for the stages, an hour to encode
# the transformers' data and 25 minutes for segmentation and depth on a 2-core CPU, 10 minutes on one GPU for the
# first stage and 6 for the transformers; run the independent lines in parallel where you have cores).
# Where what ran differs from these lines, checkpoints/README.md says so (as run).
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

# Condition stages: same crops, no perceptual or GAN term.
COND="--size 64 --batch-size 16 data.resize=upscale model.n_embed=256 model.embed_dim=32 model.ddconfig.z_channels=64
      model.ddconfig.ch=32 model.ddconfig.ch_mult=[1,1,2,4] model.ddconfig.num_res_blocks=1
      model.ddconfig.attn_resolutions=[] model.l2_normalize=true model.dead_code_threshold=0.3
      loss.perceptual_weight=0 loss.disc_factor=0 base_lr=2e-5"
# (the segmentation stage serves only the ablation rows of the card: the released model reads label grids)
$PY train/train_vqgan.py --data runs/seg/train/images --kind segmentation --out runs/seg_vq --steps 600 $COND \
    data.n_labels=183 loss.reconstruction=ce
$PY train/train_vqgan.py --data runs/photos/train --kind edges --out runs/edges_vq --steps 800 $COND \
    loss.reconstruction=bce
$PY train/train_vqgan.py --data runs/data/train/drin/images --kind depth --out runs/depth_vq --steps 400 $COND

# Transformers (on the v2 first stage): 4 layers, width 256, aligned conditioning with condition dropout 0.1.
# Codes computed once per photo: the centre crop, its mirror and 6 random crops of a 1-1.5x zoom (photos at short
# side 192); label maps for every photo (the real ones where they exist, else the segmenter's).
mkdir -p runs/photos192/train runs/seg192/train/images runs/seg192/train/segmentations
for d in runs/data192/train/*; do ln -sfn "$(realpath "$d/images")" runs/photos192/train/"$(basename "$d")"; done
for d in coco sflckr; do for f in runs/data192/train/$d/images/*.png; do
  ln -sf "$(realpath "$f")" runs/seg192/train/images/
  ln -sf "$(realpath "runs/data192/train/$d/segmentations/$(basename "$f")")" runs/seg192/train/segmentations/; done; done
$PY train/pseudo_labels.py --data runs/photos192/train --out runs/maps192/train --model checkpoints/segmenter
ENC="--first-stage checkpoints/vqgan --steps 0 cond_mode=aligned crops=6 data.scale_max=1.5 encode_batch_size=32
     transformer.n_layer=4 transformer.n_head=4 transformer.n_embd=256"
$PY train/train_transformer.py --data runs/photos192/train --cond edges --cond-stage runs/edges_vq/model \
    --out runs/enc/edges $ENC "data.canny_range=[50,150]"
$PY train/train_transformer.py --data runs/photos192/train --cond segmentation --cond-stage runs/seg_vq/model \
    --out runs/enc/seg $ENC data.maps=runs/maps192/train
$PY train/train_transformer.py --data runs/photos192/train --cond segmentation cond_grid=8 data.n_labels=183 \
    --out runs/enc/seg_grid $ENC data.maps=runs/maps192/train
# the same crops with quarter masks (as run: the condition ids recomputed from the crops in 1 minute, z reused)
$PY train/train_transformer.py --data runs/photos192/train --cond segmentation cond_grid=8 cond_grid_detail=true \
    data.n_labels=183 --out runs/enc/seg_detail $ENC data.maps=runs/maps192/train
$PY train/train_transformer.py --data runs/data192/train/drin/images --cond depth --cond-stage runs/depth_vq/model \
    --out runs/enc/depth $ENC
$PY train/train_transformer.py --data runs/photos192/train --cond none --out runs/enc/uncond $ENC cond_mode=prefix
# One GPU (about 6 minutes, all runs side by side). G: the first stage, the condition stages saved alone, the codes.
G=runs/gpu; mkdir -p $G/codes && cp -r checkpoints/vqgan $G/vqgan
for k in segmentation:seg_vq edges:edges_vq depth:depth_vq; do
  $PY -c "import sys, torch, taming_core as tc; tc.save_model(tc.load_model(sys.argv[1]), sys.argv[2], torch.float16)" \
      runs/${k##*:}/model $G/stages/${k%%:*}; done
for k in seg seg_grid edges depth uncond; do cp runs/enc/$k/codes.pt $G/codes/$k.pt; done
$PY train/train_transformer.py --data runs/seg192/train/images --cond segmentation --cond-stage runs/seg_vq/model \
    --out runs/enc/seg_real $ENC data.maps=runs/seg192/train/segmentations && cp runs/enc/seg_real/codes.pt $G/codes/
# there (OUT: what comes back): gpts-*.safetensors (the GPTs, float16) and logs.tar.gz
# As run: edges and uncond from a second call of 3.6 minutes (RUNS_SPEC: seg, edges, uncond), see the card.
bash train/gpu_transformers.sh G OUT 5.5
# Models to put the GPU weights into: the same runs for one step here (no GPU), from the same codes.
RUNS=runs/gpu_runs bash train/gpu_transformers.sh G runs/gpu_dry 0.02
$PY train/release.py runs/gpu_runs/edges/model checkpoints/edges --transformer OUT/gpts-0.safetensors --run edges \
    --first-stage checkpoints/vqgan
$PY train/release.py runs/gpu_runs/uncond/model checkpoints/unconditional --transformer OUT/gpts-1.safetensors \
    --run uncond --first-stage checkpoints/vqgan
$PY train/release.py runs/gpu_runs/seg/model runs/rel/seg --transformer OUT/gpts-0.safetensors --run seg \
    --first-stage checkpoints/vqgan
# Segmentation over label grids (2 cores, 22 minutes): from the GPU's VQ-conditioned GPT, its condition table afresh.
GPT="--batch-size 16 transformer.n_layer=4 transformer.n_head=4 transformer.n_embd=256 transformer.embd_pdrop=0.1
     transformer.resid_pdrop=0.1 transformer.attn_pdrop=0.1 pkeep=0.9 num_workers=0 sample_every=100000"
$PY train/train_transformer.py --cond segmentation --first-stage checkpoints/vqgan --out runs/seg_grid \
    cache=runs/enc/seg_grid/codes.pt cond_grid=8 data.n_labels=183 cond_mode=aligned cond_drop=0.1 \
    init_from=runs/rel/seg --steps 2000 $GPT lr=3e-4 warmup_steps=50 eval_every=100 save_every=500
# Then condition convolutions and quarter masks, from the best validation weights (11 minutes). Without the masks
# (cache=runs/enc/seg_grid/codes.pt, no cond_grid_detail, --out runs/seg_conv): the model released until then;
# the card's other rows: train_only=condition init_from=runs/seg_conv/model --steps 1000 (runs/seg_cond).
$PY train/train_transformer.py --cond segmentation --first-stage checkpoints/vqgan --out runs/seg_detail \
    cache=runs/enc/seg_detail/codes.pt cond_grid=8 cond_grid_detail=true data.n_labels=183 cond_mode=aligned \
    cond_drop=0.1 transformer.cond_layers=4 init_from=runs/seg_grid/model-best --steps 1200 $GPT lr=3e-4 \
    warmup_steps=50 eval_every=100
$PY train/release.py runs/seg_detail/model checkpoints/segmentation --first-stage checkpoints/vqgan
# Depth (23 pairs, 1 core, 2 minutes): from the edges model, the weights of the best of 16 validations.
$PY train/train_transformer.py --cond depth --cond-stage runs/depth_vq/model --first-stage checkpoints/vqgan \
    --out runs/depth_ft cache=runs/enc/depth/codes.pt cond_mode=aligned cond_drop=0.1 init_from=checkpoints/edges \
    --batch-size 8 --steps 400 $GPT lr=2e-4 warmup_steps=20 eval_every=25 save_every=400 val_fraction=0.1
$PY train/release.py runs/depth_ft/model-best checkpoints/depth --first-stage checkpoints/vqgan
# Edges on drawing-like maps (2 cores, 11 minutes, after depth, which starts from the GPU's edges model): HED's soft
# edge map of every photo (1 minute), the codes again with half of the random crops taking HED maps (thresholded
# at 0.5-0.8, thinned) instead of Canny, then 1,500 steps from the GPU's edges model; the last step is released.
$PY train/hed_edges.py --data runs/photos192/train --out runs/hed192/train
$PY -c "import sys, taming_core as tc; tc.save_model(tc.load_model(sys.argv[1]).cond_stage_model, sys.argv[2])" \
    checkpoints/edges runs/stages/edges_rel
$PY train/train_transformer.py --data runs/photos192/train --cond edges --cond-stage runs/stages/edges_rel \
    --out runs/enc/edges_hed $ENC "data.canny_range=[50,150]" data.edges=mixed data.maps=runs/hed192/train
$PY train/train_transformer.py --cond edges --cond-stage runs/stages/edges_rel --first-stage checkpoints/vqgan \
    --out runs/edges_hed cache=runs/enc/edges_hed/codes.pt cond_mode=aligned cond_drop=0.1 init_from=checkpoints/edges \
    --steps 1500 $GPT lr=2e-4 warmup_steps=50 eval_every=100 save_every=500
# (the same from runs/enc/edges/codes.pt, Canny only, into runs/edges_canny: the card's control row)
$PY train/release.py runs/edges_hed/model checkpoints/edges --first-stage checkpoints/vqgan
