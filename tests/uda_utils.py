"""Tiny models and random two-domain batches for CPU tests."""
import copy

import torch
from mmengine.model import BaseModule
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch import nn

from mmseg_uda.registry import MODELS


@MODELS.register_module(force=True)
class TinyConvBackbone(BaseModule):
    """Two-stage conv backbone (stride 2 and 4) with optional BatchNorm;
    without norm layers its gradients are a plain per-sample sum, which the
    distributed gradient-equality tests rely on."""

    def __init__(self, channels=(8, 16), with_bn=False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        c_in = 3
        self.stages = nn.ModuleList()
        for c in channels:
            mods = [nn.Conv2d(c_in, c, 3, stride=2, padding=1)]
            if with_bn:
                mods.append(nn.BatchNorm2d(c))
            mods.append(nn.ReLU())
            self.stages.append(nn.Sequential(*mods))
            c_in = c

    def forward(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return tuple(outs)


def tiny_segmentor_cfg(num_classes=4, with_bn=False, dropout=0.0,
                       channels=(8, 16)):
    """An mmseg EncoderDecoder config small enough for CPU unit tests."""
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_val=0,
            seg_pad_val=255),
        backbone=dict(
            type='TinyConvBackbone', channels=channels, with_bn=with_bn),
        decode_head=dict(
            type='FCNHead',
            in_channels=channels[-1],
            in_index=len(channels) - 1,
            channels=8,
            num_convs=1,
            concat_input=False,
            dropout_ratio=dropout,
            num_classes=num_classes,
            norm_cfg=dict(type='BN') if with_bn else None,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def uda_model_cfg(methods=(), num_classes=4, with_bn=False, **kwargs):
    return dict(
        type='UDASegmentor',
        segmentor=tiny_segmentor_cfg(num_classes, with_bn),
        methods=list(methods),
        **kwargs)


def random_sample(h, w, num_classes, with_label, generator, ignore_frac=0.0):
    img = torch.randint(0, 256, (3, h, w), generator=generator,
                        dtype=torch.uint8)
    sample = SegDataSample()
    sample.set_metainfo(
        dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
             img_path='random.png', seg_map_path='random_label.png'))
    if with_label:
        label = torch.randint(0, num_classes, (1, h, w), generator=generator)
        if ignore_frac > 0:
            mask = torch.rand((1, h, w), generator=generator) < ignore_frac
            label[mask] = 255
        sample.gt_sem_seg = PixelData(data=label)
    return img, sample


def random_uda_batch(batch_size=2, h=32, w=32, num_classes=4, seed=0,
                     ignore_frac=0.0):
    """A collated UDADataset batch: uint8 images and SegDataSamples; only
    the source carries labels."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = {}, {}
    for domain in ('source', 'target'):
        items = [
            random_sample(h, w, num_classes, domain == 'source', g,
                          ignore_frac) for _ in range(batch_size)
        ]
        inputs[domain] = [i for i, _ in items]
        samples[domain] = [s for _, s in items]
    return dict(inputs=inputs, data_samples=samples)


def slice_batch(batch, index):
    """The sub-batch ``index`` (a slice) of both domains (deep-copied)."""
    return copy.deepcopy(
        dict(
            inputs={d: v[index] for d, v in batch['inputs'].items()},
            data_samples={
                d: v[index]
                for d, v in batch['data_samples'].items()
            }))


def to_plain_bn(cfg):
    """SyncBN -> BN everywhere in a config (CPU), recursively, in place."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
        for value in cfg.values():
            to_plain_bn(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            to_plain_bn(value)
    return cfg
