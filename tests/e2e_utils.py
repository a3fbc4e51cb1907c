"""End-to-end helpers: tiny converted GTA5/Cityscapes folders on disk, a
tiny Runner config around any UDA method list, and exact-resume checks."""
import copy
import os
import os.path as osp

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from uda_utils import tiny_segmentor_cfg

NUM_CLASSES = 19
CROP = (32, 32)


def _shapes_image(rng, h, w, textured):
    """An image whose classes are visible: three horizontal bands (road,
    building, sky = trainIds 0, 2, 10) plus a car box (13)."""
    label = np.zeros((h, w), np.uint8)
    label[:h // 3] = 10
    label[h // 3:2 * h // 3] = 2
    y, x = rng.integers(h // 2, h - 8), rng.integers(0, w - 12)
    label[y:y + 8, x:x + 12] = 13
    colours = {0: (90, 90, 90), 2: (70, 70, 170), 10: (200, 160, 60),
               13: (30, 30, 230)}
    img = np.zeros((h, w, 3), np.uint8)
    for cls, colour in colours.items():
        img[label == cls] = colour
    if textured:
        img = np.clip(img.astype(np.int16) +
                      rng.integers(-60, 60, img.shape), 0, 255).astype(
                          np.uint8)
    return img, label


def make_tiny_uda_data(root, num_source=6, num_target=6, num_val=2,
                       size=(48, 64), seed=0):
    """Converted GTA5 (``images/``, ``labels/*_labelTrainIds.png``) and
    Cityscapes (``leftImg8bit``/``gtFine`` trainIds) folders under ``root``.
    Returns (gta_root, cityscapes_root)."""
    rng = np.random.default_rng(seed)
    h, w = size
    gta = osp.join(root, 'gta')
    cs = osp.join(root, 'cityscapes')
    for sub in ('images', 'labels'):
        os.makedirs(osp.join(gta, sub), exist_ok=True)
    for i in range(num_source):
        img, label = _shapes_image(rng, h, w, textured=False)
        cv2.imwrite(osp.join(gta, 'images', f'{i + 1:05d}.png'), img)
        cv2.imwrite(
            osp.join(gta, 'labels', f'{i + 1:05d}_labelTrainIds.png'), label)
    for split, n in (('train', num_target), ('val', num_val)):
        os.makedirs(osp.join(cs, 'leftImg8bit', split, 'tiny'), exist_ok=True)
        os.makedirs(osp.join(cs, 'gtFine', split, 'tiny'), exist_ok=True)
        for i in range(n):
            img, label = _shapes_image(rng, h, w, textured=True)
            stem = f'tiny_{i:06d}_000019'
            cv2.imwrite(
                osp.join(cs, 'leftImg8bit', split, 'tiny',
                         f'{stem}_leftImg8bit.png'), img)
            cv2.imwrite(
                osp.join(cs, 'gtFine', split, 'tiny',
                         f'{stem}_gtFine_labelTrainIds.png'), label)
    return gta, cs


def tiny_runner_cfg(data_root, work_dir, methods=(), max_iters=4,
                    val_interval=4, checkpoint_interval=2, optim=None,
                    custom_hooks=(), with_bn=False, model_extra=None):
    """A complete Runner config (mmseg-uda conventions) on the tiny data."""
    gta, cs = osp.join(data_root, 'gta'), osp.join(data_root, 'cityscapes')
    source_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomCrop', crop_size=CROP),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs'),
    ]
    target_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomCrop', crop_size=CROP),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs'),
    ]
    val_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs'),
    ]
    segmentor = tiny_segmentor_cfg(NUM_CLASSES, with_bn=with_bn)
    model = dict(type='UDASegmentor', segmentor=segmentor,
                 methods=list(methods))
    model.update(model_extra or {})
    val_loader = dict(
        batch_size=1,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='CityscapesDataset',
            data_root=cs,
            data_prefix=dict(
                img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
            pipeline=val_pipeline))
    cfg = dict(
        default_scope='mmseg',
        custom_imports=dict(imports=['mmseg_uda'],
                            allow_failed_imports=False),
        work_dir=work_dir,
        model=model,
        train_dataloader=dict(
            batch_size=2,
            num_workers=0,
            sampler=dict(type='UDAPairSampler', shuffle=True),
            dataset=dict(
                type='UDADataset',
                source=dict(type='GTAVDataset', data_root=gta,
                            pipeline=source_pipeline),
                target=dict(
                    type='CityscapesDataset',
                    data_root=cs,
                    data_prefix=dict(
                        img_path='leftImg8bit/train',
                        seg_map_path='gtFine/train'),
                    pipeline=target_pipeline))),
        val_dataloader=val_loader,
        test_dataloader=copy.deepcopy(val_loader),
        val_evaluator=dict(type='UDAIoUMetric'),
        test_evaluator=dict(type='UDAIoUMetric'),
        optim_wrapper=optim or dict(
            constructor='UDAOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=0.01, momentum=0.9,
                           weight_decay=5e-4)),
        param_scheduler=[
            dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0,
                 end=max_iters, by_epoch=False)
        ],
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters,
                       val_interval=val_interval),
        val_cfg=dict(type='ValLoop'),
        test_cfg=dict(type='TestLoop'),
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=1),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(type='CheckpointHook', by_epoch=False,
                            interval=checkpoint_interval),
            sampler_seed=dict(type='DistSamplerSeedHook')),
        custom_hooks=list(custom_hooks),
        model_wrapper_cfg=dict(type='UDADistributedDataParallel'),
        env_cfg=dict(cudnn_benchmark=False,
                     dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0),
        log_level='WARNING',
        launcher='none')
    return Config(cfg)


def train(cfg, max_iters=None, resume_from=None, experiment_name=None):
    """Train with a fresh Runner; returns the runner after training."""
    cfg = copy.deepcopy(cfg)
    if max_iters is not None:
        cfg.train_cfg.max_iters = max_iters
    if resume_from is not None:
        cfg.resume = True
        cfg.load_from = resume_from
    if experiment_name is not None:
        cfg.experiment_name = experiment_name
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def full_state(runner):
    """Model weights and buffers plus every optimizer's state, flattened."""
    model = runner.model.module if hasattr(runner.model, 'module') \
        else runner.model
    state = {f'model.{k}': v.detach().clone()
             for k, v in model.state_dict().items()}
    optim_state = runner.optim_wrapper.state_dict()
    flat = {}

    def walk(prefix, node):
        if isinstance(node, torch.Tensor):
            flat[prefix] = node.detach().clone()
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(f'{prefix}.{k}', v)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(f'{prefix}.{i}', v)
        elif isinstance(node, (int, float)):
            flat[prefix] = torch.tensor(float(node))

    walk('optim', optim_state)
    state.update(flat)
    return state


def assert_resume_exact(cfg, total_iters, tmp_path, atol=0.0):
    """Train ``total_iters`` at once, and ``total_iters/2`` then resume to
    ``total_iters`` in another work dir: every weight, buffer and optimizer
    state must be equal."""
    half = total_iters // 2
    cfg_a = copy.deepcopy(cfg)
    cfg_a.work_dir = str(tmp_path / 'uninterrupted')
    full = full_state(train(cfg_a, max_iters=total_iters,
                            experiment_name='a'))
    cfg_b = copy.deepcopy(cfg)
    cfg_b.work_dir = str(tmp_path / 'interrupted')
    cfg_b.train_cfg.max_iters = total_iters  # same schedule length
    cfg_b.default_hooks.checkpoint.interval = half
    first = copy.deepcopy(cfg_b)
    first.train_cfg.max_iters = half
    train(first, experiment_name='b1')
    resumed = full_state(
        train(cfg_b, resume_from=osp.join(cfg_b.work_dir,
                                          f'iter_{half}.pth'),
              experiment_name='b2'))
    assert set(full) == set(resumed)
    for key, value in full.items():
        other = resumed[key]
        if value.dtype.is_floating_point:
            assert torch.allclose(value, other, atol=atol, rtol=0), key
        else:
            assert torch.equal(value, other), key
    return full
