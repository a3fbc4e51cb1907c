# DAFormer (Hoyer et al., CVPR 2022) SYNTHIA -> Cityscapes: the DAFormer self-training
# baseline alone (no T2S), configs/_base_/uda/daformer.py on SYNTHIA (experiments.py id 7: the GTA5 recipe unchanged).
# 19-way head, the 3 classes absent from SYNTHIA are never supervised;
# mIoU16/mIoU13 from the per-class IoUs. Reference: 60.9 mIoU16
# (lhoyer/DAFormer README).
_base_ = [
    '../_base_/uda/daformer.py',
    # SYNTHIA 1280x760 / Cityscapes 1024x512, random 512x512 crops (source
    # cat_max_ratio 0.75), flip 0.5; Cityscapes val whole image at 1024x512
    # (uda_synthia_to_cityscapes_512x512.py)
    '../_base_/datasets/synthia2cs_512x512.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(
    batch_size=2,  # samples_per_gpu=2 (2 source + 2 target), 1 GPU
    dataset=dict(
        rare_class_sampling=_base_.daformer_rare_class_sampling))
