# VFM-UDA GTA5 -> Cityscapes with a FROZEN DINOv2 ViT-L/14 and LoRA adapters:
# gta2cs_dinov2_vitl_mic.py with the encoder frozen (no gradient, no
# optimizer state, eval mode, skipped by the EMA teacher) and rank-16 LoRA
# (Hu et al., ICLR 2022; Hugging Face peft) in every attention block's
# query and value projections, trained with the head.
# No published recipe: VFM-UDA++ (Englert et al., ICCVW 2025,
# tue-mps/vfm-uda-plusplus@effbb03) trains a ViT-Adapter with deformable
# attention (compiled ops) around the DINOv2 ViT, which this package does not
# build; this config is the parameter-efficient variant of the VFM-UDA
# recipe (the PEFT family: LoRA here; Rein-style adapters are not built).
# Its LoRA settings are the common defaults (rank = alpha = 16 on q/v, no
# dropout) and the adapters train at the head's learning rate.
# Cost on CPU (tools/analysis/benchmark.py ratios in the README): frozen +
# LoRA saves the encoder's weight gradients and AdamW state (12 bytes per
# frozen parameter: ~3.6 GB for ViT-L) but still backpropagates through
# the encoder.
_base_ = ['./gta2cs_dinov2_vitl_mic.py']
model = dict(
    freeze_backbone=True,
    backbone_adapter=dict(
        type='LoRA', rank=16, alpha=16, dropout=0.0,
        target_modules=['q_proj', 'v_proj']))
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            # the longest matching key wins: LoRA matrices (under
            # 'backbone') at the head's lr, not the encoder's x0.1
            backbone=dict(lr_mult=0.1),
            **{'lora_A.default': dict(lr_mult=1.0),
               'lora_B.default': dict(lr_mult=1.0)})))
