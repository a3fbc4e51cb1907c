"""The VFM-UDA composition on a tiny DINOv2VisionTransformer
(``[SelfTraining(flip pseudo-labels, VFM-UDA augmentations),
MaskedImageConsistency(token masks)]`` + UDASegmentor's source jitter),
as users run it:

* 2 gloo processes, each with the batch ``UDAPairSampler`` hands its rank,
  equal 1 process on the global batch (gradients of every step, final
  state, both ranks); negative controls: token masks or source jitter
  numbered rank-major depart.
* The real Runner resumes bit-exactly (DropPath 0.1 in the ViT, 2 loader
  workers): 4 iterations in one go = 2 + resume + 2.
* configs/demo/vfm_mic.py trains end to end through tools/train.py and
  evaluates.
"""
import functools
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import ConfigDict

import mmseg_uda.models.segmentors.uda_segmentor as uda_segmentor_module
import mmseg_uda.models.uda.mic as mic_module
from dist_utils import (Run, build_with_confident_teacher,
                        rank_major_indices, assert_differs_from_single,
                        assert_equal_to_single, assert_sampler_split,
                        compare_runs, patched, random_items, uda_dataset)
from e2e_utils import assert_resume_exact, make_tiny_uda_data, \
    tiny_runner_cfg

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
OPTIM = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))


def tiny_vit_segmentor(num_classes=4, drop_path_rate=0.0):
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
            seg_pad_val=255),
        backbone=dict(type='DINOv2VisionTransformer',
                      arch=dict(embed_dims=16, num_layers=2, num_heads=2),
                      patch_size=8, img_size=32, out_indices=(1, ),
                      drop_path_rate=drop_path_rate),
        decode_head=dict(type='ViTUpsampleHead', in_channels=16,
                         channels=8, num_classes=num_classes,
                         loss_decode=dict(type='CrossEntropyLoss',
                                          loss_weight=1.0)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))


def vfm_uda_methods(threshold=0.3):
    return [
        dict(type='SelfTraining', pseudo_threshold=threshold,
             pseudo_weight_ignore_top=0, pseudo_weight_ignore_bottom=0,
             imnet_feature_dist_lambda=0.0, pseudo_label_flip=True,
             strong_augmentation='vfm_uda',
             class_mix_target_jitter='vfm_uda', seed=1),
        dict(type='MaskedImageConsistency', mask_mode='separatetrgaug',
             mask_generator=dict(type='token', mask_ratio=0.7),
             augmentation='vfm_uda', seed=5),
    ]


# --------------------------------------------------------- 2 processes = 1
DATA = uda_dataset(random_items(8, 32, 32, 4, True, seed=0),
                   random_items(7, 32, 32, 4, False, seed=1))


def build(state=None):
    return build_with_confident_teacher(
        dict(type='UDASegmentor', segmentor=tiny_vit_segmentor(),
             methods=vfm_uda_methods(), source_color_jitter='vfm_uda'),
        state, teacher_scale=50.0)


def rank_major_token_masks(model):
    return patched((mic_module, 'global_indices', rank_major_indices))


def rank_major_source_jitter(model):
    return patched((uda_segmentor_module, 'global_indices',
                    rank_major_indices))


def build_frozen_lora(state=None):
    """The same composition on a frozen encoder with LoRA on q/v (what
    configs/vfm/gta2cs_dinov2_vitl_frozen_lora_mic.py runs)."""
    return build_with_confident_teacher(
        dict(type='UDASegmentor', segmentor=tiny_vit_segmentor(),
             methods=vfm_uda_methods(), source_color_jitter='vfm_uda',
             freeze_backbone=True,
             backbone_adapter=dict(type='LoRA', rank=4, alpha=4,
                                   target_modules=['q_proj', 'v_proj'])),
        state, teacher_scale=50.0)


make_run = functools.partial(Run, build, OPTIM, DATA, 2, 2)


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    return compare_runs(
        {'vfm_uda': make_run(),
         'token_masks_rank_major': make_run(control=rank_major_token_masks),
         'source_jitter_rank_major': make_run(
             control=rank_major_source_jitter),
         'frozen_lora': Run(build_frozen_lora, OPTIM, DATA, 2, 2)},
        tmp_path_factory.mktemp('vfm_ddp'))


def test_vfm_uda_two_processes_equal_one(results):
    result = results['vfm_uda']
    assert_sampler_split(result)
    assert_equal_to_single(result)
    logs = result['single']['logs']
    assert all(0 < it['mic.mask_keep_ratio'] < 1 for it in logs)
    assert all(it['mic.loss_masked'] > 0 for it in logs)


def test_frozen_encoder_with_lora_two_processes_equal_one(results):
    """dist_train.sh with a frozen DINOv2 + LoRA: DDP over the adapters
    and the head only; equal to 1 process, frozen weights untouched."""
    result = results['frozen_lora']
    assert_equal_to_single(result)
    start = result['init']
    for state in [result['single']['state']] + [
            r['state'] for r in result['ranks']]:
        for key, value in state.items():
            if key.startswith('student.backbone.') and 'lora_' not in key:
                assert torch.equal(value, start[key]), key
        assert any(not torch.equal(state[k], start[k]) for k in state
                   if k.startswith('student.backbone.') and 'lora_B' in k)


@pytest.mark.parametrize('control', ['token_masks_rank_major',
                                     'source_jitter_rank_major'])
def test_negative_controls_depart(results, control):
    assert_differs_from_single(results[control])


# ------------------------------------------------------------ Runner resume
def test_runner_resumes_exactly_with_droppath_and_workers(tmp_path):
    root = tmp_path / 'data'
    make_tiny_uda_data(str(root), size=(48, 64))
    cfg = tiny_runner_cfg(
        str(root), str(tmp_path / 'work'), methods=vfm_uda_methods(),
        max_iters=4, val_interval=4, checkpoint_interval=2,
        custom_hooks=[dict(type='EMATeacherHook', alpha=0.99)],
        model_extra=dict(source_color_jitter='vfm_uda'))
    cfg.model.segmentor = ConfigDict(
        tiny_vit_segmentor(19, drop_path_rate=0.1))
    cfg.train_dataloader.num_workers = 2
    cfg.train_dataloader.persistent_workers = True
    full = assert_resume_exact(cfg, 4, tmp_path)
    assert 'model.student.backbone.model.embeddings.mask_token' in full or \
        any(k.endswith('mask_token') for k in full)
    assert int(full['model.teacher_initialized']) == 1


# ------------------------------------------------------ demo config, CLI
def test_demo_vfm_mic_trains_and_evaluates(tmp_path):
    root = tmp_path / 'data'
    make_tiny_uda_data(str(root), num_source=4, num_target=4, num_val=2,
                       size=(48, 64))
    # the demo's GTA split files (tools/make_demo_data.py writes them)
    stems = sorted(f[:-4] for f in os.listdir(root / 'gta' / 'images'))
    (root / 'gta' / 'train.txt').write_text('\n'.join(stems) + '\n')
    work = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/demo/vfm_mic.py',
         '--work-dir', str(work), '--cfg-options',
         f'train_dataloader.dataset.source.data_root={root}/gta',
         f'train_dataloader.dataset.target.data_root={root}/cityscapes',
         f'val_dataloader.dataset.data_root={root}/cityscapes',
         'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False',
         'val_dataloader.num_workers=0',
         'val_dataloader.persistent_workers=False',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
         'param_scheduler.0.end=2', 'default_hooks.checkpoint.interval=2',
         'custom_hooks.1.interval=1'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert 'mic.loss_masked' in log and 'selftraining.loss_mix' in log
    assert 'mIoU' in log
    assert osp.exists(work / 'iter_2.pth')
