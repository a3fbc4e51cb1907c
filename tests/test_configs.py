"""Every config under configs/ loads, passes the pre-training checks, names
only registered components, and its model builds through mmseg's registry
(pretrained weights disabled, SyncBN -> BN: no download, no GPU)."""
import glob
import re
import os.path as osp

import pytest
from mmengine.config import Config, ConfigDict
from mmengine.model import revert_sync_batchnorm

from mmseg_uda.engine.config_checks import (ConfigError, check_methods,
                                            check_num_classes,
                                            check_pretrained,
                                            pretrained_checkpoints)
from mmseg_uda.registry import (DATA_SAMPLERS, DATASETS, HOOKS, METRICS,
                                MODELS, TRANSFORMS)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)


def without_pretrained(node):
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained':
            return None
        if node.get('type') == 'StyleAugmentorStyleTransfer':
            # T2S-DA's style engine: user-supplied weights -> random ones
            return dict(node, random_weights=True)
        return {k: (None if k == 'pretrained' and isinstance(v, str) else
                    without_pretrained(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [without_pretrained(v) for v in node]
    if isinstance(node, tuple):
        return tuple(without_pretrained(v) for v in node)
    return node


def registered_types(cfg):
    """(registry, type) of every dataset, transform, sampler, hook, metric."""
    found = []

    def datasets(ds):
        if not isinstance(ds, dict):
            return
        found.append((DATASETS, ds['type']))
        for step in ds.get('pipeline', []):
            found.append((TRANSFORMS, step['type']))
        for key in ('source', 'target'):
            datasets(ds.get(key))

    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if loader:
            datasets(loader.get('dataset'))
            found.append((DATA_SAMPLERS, loader['sampler']['type']))
    for name in ('val_evaluator', 'test_evaluator'):
        if cfg.get(name):
            found.append((METRICS, cfg[name]['type']))
    for hook in list(cfg.get('default_hooks', {}).values()) + \
            list(cfg.get('custom_hooks', [])):
        found.append((HOOKS, hook['type']))
    return found


def test_all_method_folders_have_configs():
    folders = {osp.basename(osp.dirname(p)) for p in CONFIGS}
    assert {'source_only', 'advent', 'cdga', 'plca', 'daformer',
            't2s'} <= folders


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmseg'
    assert 'mmseg_uda' in cfg.custom_imports['imports']
    assert cfg.model.type == 'UDASegmentor'
    check_methods(cfg)
    check_num_classes(cfg)
    for key, ckpt in pretrained_checkpoints(cfg.model):
        # real configs point at local files the user supplies
        assert not ckpt.startswith(('http://', 'https://')), key
    for registry, name in registered_types(cfg):
        assert registry.get(name) is not None, f'{name} ({registry.name})'
    model_cfg = without_pretrained(cfg.model.to_dict())
    if cfg.get('data_preprocessor'):  # as Runner.__init__ injects it
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(ConfigDict(model_cfg))
    assert type(model.data_preprocessor).__name__ == 'UDADataPreProcessor'
    model = revert_sync_batchnorm(model)
    assert model.student.decode_head.num_classes in (16, 19)


def test_missing_pretrained_error_suggests_a_working_cfg_option():
    """The --cfg-options the error prints disables that checkpoint, also
    for one inside the methods list (mmengine's ``methods.0`` syntax)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 't2s', 'gta2cs.py'))
    keys = [key for key, _ in pretrained_checkpoints(cfg.model)]
    assert 'model.methods.0.imnet_feature_dist_encoder.init_cfg.checkpoint' \
        in keys
    for _ in keys:
        with pytest.raises(ConfigError, match='does not exist') as err:
            check_pretrained(cfg.model)
        option = re.search(r'--cfg-options (\S+)=None', str(err.value))
        cfg.merge_from_dict({option.group(1): None})
    assert pretrained_checkpoints(cfg.model) == []
    # the StyleAugmentor weight files are checked too
    # (tests/test_style_augmentor.py); random weights skip that check
    with pytest.raises(ConfigError, match='checkpoint_transformer.pth'):
        check_pretrained(cfg.model)
    cfg.merge_from_dict({'model.methods.1.style.random_weights': True})
    check_pretrained(cfg.model)
