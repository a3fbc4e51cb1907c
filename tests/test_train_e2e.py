"""End to end on tiny generated data: train + validate + checkpoint, exact
resume, the CLI's errors, and 2-process CPU training via dist_train.sh."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from e2e_utils import (assert_resume_exact, make_tiny_uda_data,
                       tiny_runner_cfg, train)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ADV_OPTIM = dict(
    constructor='UDAOptimWrapperConstructor',
    segmentor=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
    discriminator=dict(optimizer=dict(type='Adam', lr=1e-4,
                                      betas=(0.9, 0.99))))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_uda')
    make_tiny_uda_data(str(root))
    return str(root)


def test_train_validate_checkpoint(data_root, tmp_path):
    cfg = tiny_runner_cfg(data_root, str(tmp_path), max_iters=4)
    runner = train(cfg)
    assert runner.iter == 4
    assert osp.isfile(tmp_path / 'iter_4.pth')
    metrics = runner.message_hub.get_scalar('val/mIoU').current()
    assert 0.0 <= metrics <= 100.0
    assert runner.message_hub.get_scalar('val/mIoU16') is not None


def test_resume_is_exact_source_only(data_root, tmp_path):
    cfg = tiny_runner_cfg(data_root, str(tmp_path), max_iters=4,
                          with_bn=True)
    state = assert_resume_exact(cfg, 4, tmp_path)
    assert any(k.startswith('optim.state') for k in state)


def test_resume_is_exact_advent(data_root, tmp_path):
    cfg = tiny_runner_cfg(
        data_root, str(tmp_path), max_iters=4,
        methods=[dict(type='AdvEnt', num_classes=19)], optim=ADV_OPTIM)
    state = assert_resume_exact(cfg, 4, tmp_path)
    # discriminator weights and both optimizers' states were compared
    assert any('discriminator' in k and k.startswith('model.') for k in state)
    assert any(k.startswith('optim.segmentor.state') for k in state)
    assert any(k.startswith('optim.discriminator.state') for k in state)


def run_tool(args, cwd=REPO, timeout=600, env_extra=None):
    # tests/ on the path: configs may import the tiny test backbone
    env = dict(os.environ, PYTHONPATH=f'{REPO}:{osp.join(REPO, "tests")}',
               OMP_NUM_THREADS='1')
    env.update(env_extra or {})
    return subprocess.run([sys.executable] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_cli_resume_without_checkpoint_is_clear(data_root, tmp_path):
    cfg = tiny_runner_cfg(data_root, str(tmp_path / 'work'))
    path = tmp_path / 'tiny.py'
    cfg.dump(str(path))
    proc = run_tool(['tools/train.py', str(path), '--resume'])
    assert proc.returncode == 2
    assert 'no checkpoint in the work dir' in proc.stderr + proc.stdout


def test_train_cli_missing_pretrained_is_clear(data_root, tmp_path):
    cfg = tiny_runner_cfg(data_root, str(tmp_path / 'work'))
    cfg.model.segmentor.backbone.init_cfg = dict(
        type='Pretrained', checkpoint='pretrained/nope.pth')
    path = tmp_path / 'tiny.py'
    cfg.dump(str(path))
    proc = run_tool(['tools/train.py', str(path)])
    out = proc.stderr + proc.stdout
    assert proc.returncode == 2
    assert "Pretrained checkpoint 'pretrained/nope.pth'" in out
    assert 'model.segmentor.backbone.init_cfg=None' in out


def test_train_cli_wrong_num_classes_is_clear(data_root, tmp_path):
    cfg = tiny_runner_cfg(data_root, str(tmp_path / 'work'))
    cfg.model.segmentor.decode_head.num_classes = 16
    path = tmp_path / 'tiny.py'
    cfg.dump(str(path))
    proc = run_tool(['tools/train.py', str(path)])
    assert proc.returncode == 2
    assert 'decode_head.num_classes = 16 but train_dataloader.dataset has ' \
        '19 classes' in proc.stderr + proc.stdout


def test_dist_train_two_cpu_processes_with_validation(data_root, tmp_path):
    work = tmp_path / 'work'
    cfg = tiny_runner_cfg(
        data_root, str(work), max_iters=4, val_interval=2,
        methods=[dict(type='AdvEnt', num_classes=19)], optim=ADV_OPTIM)
    cfg.log_level = 'INFO'
    # the tiny test backbone lives in tests/uda_utils.py
    cfg.custom_imports = dict(imports=['mmseg_uda', 'uda_utils'],
                              allow_failed_imports=False)
    path = tmp_path / 'tiny.py'
    cfg.dump(str(path))
    env = dict(os.environ, PYTHONPATH=f'{REPO}:{osp.join(REPO, "tests")}',
               OMP_NUM_THREADS='1',
               PORT=str(29500 + os.getpid() % 1000))
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(path), '2'], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert osp.isfile(work / 'iter_4.pth')
    logs = [osp.join(work, d, f'{d}.log') for d in os.listdir(work)
            if osp.isfile(osp.join(work, d, f'{d}.log'))]
    assert len(logs) == 1, os.listdir(work)
    log = open(logs[0]).read()
    assert 'Distributed training: True' in log
    assert log.count('mIoU16: ') == 2  # validated at iterations 2 and 4

    # the same checkpoint through dist_test.sh: 2 processes, one metric
    proc = subprocess.run(
        ['bash', 'tools/dist_test.sh', str(path), str(work / 'iter_4.pth'),
         '2', '--work-dir', str(tmp_path / 'test')],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'mIoU16: ' in out


# Resume exactness of every method on the real Runner (the T2S-only case is
# in test_t2s_e2e.py). Tiny model: FCNHead pre-classifier feature has 8
# channels, labels are Cityscapes trainIds (19 classes).
# the frozen ImageNet-encoder copy has the student's backbone architecture
TINY_BACKBONE = dict(type='TinyConvBackbone', channels=(8, 16), with_bn=True)
SELF_TRAINING = dict(
    type='SelfTraining', pseudo_weight_ignore_top=2,
    pseudo_weight_ignore_bottom=4, imnet_feature_dist_lambda=0.005,
    imnet_feature_dist_classes=[13], imnet_feature_dist_encoder=TINY_BACKBONE)
T2S = dict(
    type='T2S', num_classes=19,
    projection_head=dict(type='ProjectionHead', in_channels=8,
                         hidden_channels=8, out_channels=8,
                         norm_cfg=dict(type='BN')),
    num_queries=8, num_negatives=8, queue_length=16, enqueue_per_class=4,
    projection_ema_alpha=0.99, seed=0)
METHOD_CASES = {
    'cdga': dict(
        methods=[dict(type='CDGA', num_classes=19, num_groups=2,
                      discriminator=dict(type='FCDiscriminator', ndf=8),
                      grouping=dict(type='CrossDomainGroupingNetwork',
                                    channels=8))],
        optim=ADV_OPTIM, hooks=[], bn=False, extra={}),
    'plca': dict(
        methods=[dict(type='PLCA')], optim=None, hooks=[], bn=True,
        extra=dict(bn_mode='separate')),
    'self_training': dict(
        methods=[SELF_TRAINING], optim=None,
        hooks=[dict(type='EMATeacherHook', alpha=0.99)], bn=True, extra={}),
    'self_training+t2s': dict(
        methods=[SELF_TRAINING, T2S], optim=None,
        hooks=[dict(type='EMATeacherHook', alpha=0.99)], bn=True, extra={}),
}


@pytest.mark.parametrize('case', sorted(METHOD_CASES))
def test_resume_is_exact_for_method(case, data_root, tmp_path):
    c = METHOD_CASES[case]
    cfg = tiny_runner_cfg(
        data_root, str(tmp_path), max_iters=4, methods=c['methods'],
        optim=c['optim'], custom_hooks=c['hooks'], with_bn=c['bn'],
        model_extra=c['extra'])
    state = assert_resume_exact(cfg, 4, tmp_path)
    if 'self_training' in case:
        assert int(state['model.teacher_initialized']) == 1
        assert any(k.startswith('model.teacher.') for k in state)


def test_train_cli_unconverted_cityscapes_names_converter(data_root,
                                                          tmp_path):
    cfg = tiny_runner_cfg(data_root, str(tmp_path / 'work'))
    # the val labels must be trainIds: point at a suffix nothing has
    cfg.val_dataloader.dataset.seg_map_suffix = '_gtFine_labelIds.png'
    path = tmp_path / 'tiny.py'
    cfg.dump(str(path))
    proc = run_tool(['tools/train.py', str(path)])
    out = proc.stderr + proc.stdout
    assert proc.returncode == 2
    assert 'no "*_gtFine_labelIds.png" label under' in out
    assert 'tools/dataset_converters/cityscapes.py' in out


def test_train_cli_missing_data_root_names_converter(tmp_path):
    cfg = tiny_runner_cfg(str(tmp_path / 'nowhere'), str(tmp_path / 'work'))
    path = tmp_path / 'tiny.py'
    cfg.dump(str(path))
    proc = run_tool(['tools/train.py', str(path)])
    out = proc.stderr + proc.stdout
    assert proc.returncode == 2
    assert 'train_dataloader.dataset.source.data_root' in out
    assert 'does not exist' in out and 'tools/dataset_converters/gta.py' in out


def test_domain_generalisation_mode_trains_without_target_images(
        data_root, tmp_path):
    """T2S's DG mode (configs/t2s/gta2cs_dg.py): UDADataset(target=None)
    gives source-only batches and the run trains and validates."""
    method = dict(T2S, dg_mode=True, perf_metric='stylised_iou',
                  style=dict(type='RandomStyleTransfer', beta=0.05))
    cfg = tiny_runner_cfg(
        data_root, str(tmp_path), max_iters=2, val_interval=2,
        methods=[method], with_bn=True,
        custom_hooks=[dict(type='EMATeacherHook', alpha=0.99)])
    cfg.train_dataloader.dataset.target = None
    runner = train(cfg)
    assert runner.iter == 2
    assert runner.message_hub.get_scalar('train/t2s.loss_t2s') is not None
    assert runner.message_hub.get_scalar('val/mIoU') is not None


def test_train_cli_amp_without_gpu_is_clear(data_root, tmp_path):
    cfg = tiny_runner_cfg(data_root, str(tmp_path / 'work'))
    cfg.custom_imports = dict(imports=['mmseg_uda', 'uda_utils'],
                              allow_failed_imports=False)
    path = tmp_path / 'tiny.py'
    cfg.dump(str(path))
    proc = run_tool(['tools/train.py', str(path), '--amp', '--cfg-options',
                     'train_cfg.max_iters=1', 'train_cfg.val_interval=1'])
    if torch.cuda.is_available():  # AmpOptimWrapper for every optimizer
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:  # a CPU machine (CI): refused before anything is built
        assert proc.returncode == 2
        assert '--amp needs a CUDA GPU' in proc.stderr
