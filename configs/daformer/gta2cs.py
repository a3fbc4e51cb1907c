# DAFormer (Hoyer et al., CVPR 2022) GTA5 -> Cityscapes: the DAFormer self-training
# baseline alone (no T2S), configs/_base_/uda/daformer.py on GTA5.
# Reference: 68.3 mIoU (mean of 3 seeds, lhoyer/DAFormer README).
_base_ = [
    '../_base_/uda/daformer.py',
    # GTA5 1280x720 / Cityscapes 1024x512, random 512x512 crops (source
    # cat_max_ratio 0.75), flip 0.5; Cityscapes val whole image at 1024x512
    # (uda_gta_to_cityscapes_512x512.py)
    '../_base_/datasets/gta2cs_512x512.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(
    batch_size=2,  # samples_per_gpu=2 (2 source + 2 target), 1 GPU
    dataset=dict(
        rare_class_sampling=_base_.daformer_rare_class_sampling))
