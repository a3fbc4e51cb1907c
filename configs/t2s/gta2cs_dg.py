# T2S-DA in domain generalisation [RECON] (the abstract: the same idea works
# for domain generalisation): trained on GTA5 only, evaluated on Cityscapes
# val (the paper also reports BDD100K and Mapillary, not in scope here).
# Network, source data (with rare-class sampling), schedule and EMA teacher
# as configs/daformer/gta2cs.py; no target images, no self-training branch;
# the target-side queries are source copies re-rendered by StyleAugmentor in
# random styles (it needs no target image; the first author's StypeTransfer
# engine, configs/_base_/uda/t2s.py) and r_c is the running IoU of the
# student on them. Every other T2S value is reconstructed (docs/t2s.md).
_base_ = ['../daformer/gta2cs.py', '../_base_/uda/t2s.py']
t2s_dg = dict(
    _base_.t2s_method,
    dg_mode=True,  # the batch has only 'source'
    style=_base_.t2s_style_augmentor,
    # Weight-free ablation (the previous DG default): log-amplitude noise
    # (sigma 0.3) on the FDA-size low-frequency band (beta 0.01), then
    # gain/brightness/contrast/saturation jitter:
    # style=dict(type='RandomStyleTransfer', beta=0.01, amplitude_sigma=0.3,
    #            photometric=True, brightness=32.0, contrast=(0.5, 1.5),
    #            saturation=(0.5, 1.5), channel_gain=(0.8, 1.2)),
    # no target pseudo-labels in DG: running IoU on the stylised copies
    perf_metric='stylised_iou')
model = dict(methods=[t2s_dg])  # no SelfTraining: no target images

# source-only batches (UDADataset with target=None)
train_dataloader = dict(dataset=dict(target=None))

custom_hooks = [
    # keys from the EMA teacher (alpha 0.999, the DAFormer value)
    dict(type='EMATeacherHook', alpha=0.999),
    dict(type='UDADebugVisualizationHook', interval=1000),
    _base_.t2s_warmup_hook,
]
