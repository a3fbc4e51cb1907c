# VFM-UDA GTA5 -> Cityscapes with DINOv2 ViT-L/14 (Englert et al., CVPRW
# 2024): tue-mps/vfm-uda@e154d8f uda_vit_vanilla.yaml with
# model_name dinov2_vitl14 (the README's ViT-L row). DACS self-training on
# flip-averaged EMA pseudo-labels + 70 % token masking, AdamW
# 1.41e-4 (encoder x0.1), 40k iterations, batch 8 + 8 at 1024x1024.
# Reference: 78.4 mIoU on Cityscapes val (the README's re-trained ViT-L
# model, one run; the paper's numbers differ slightly); ViT-B: 77.1.
# The official code trains on 1 GPU with batch 8 (or 4 x 2, README); with
# this package `bash tools/dist_train.sh <cfg> 4` and batch_size=2 gives
# the same global batch.
_base_ = [
    '../_base_/uda/vfm_uda.py',
    '../_base_/datasets/gtaHR2csHR_vfmuda_1024x1024.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(
    dataset=dict(rare_class_sampling=_base_.vfm_uda_rare_class_sampling))
# main.py: seed_everything(42)
randomness = dict(seed=42)
