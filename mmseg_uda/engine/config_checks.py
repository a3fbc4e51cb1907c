"""Checks on a config made before the Runner is built, so that a wrong
class count, an unknown method, a missing pretrained checkpoint or a missing
teacher hook is reported in one sentence instead of a traceback hours in."""
import os
import os.path as osp
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config
from mmengine.runner import find_latest_checkpoint

from mmseg_uda.registry import DATASETS, MODELS

DOWNLOAD_PREFIXES = ('http://', 'https://', 'open-mmlab://', 'mmcls://',
                     'torchvision://', 'pavi://', 's3://')


class ConfigError(ValueError):
    """A config problem found before training starts."""


def _walk(node, path: str = '') -> Iterator[Tuple[str, dict]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f'{path}.{key}' if path else key)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}.{i}')  # --cfg-options syntax


def pretrained_checkpoints(model_cfg: dict) -> List[Tuple[str, str]]:
    """(config key, path) of every checkpoint the model loads at init."""
    found = []
    for path, node in _walk(model_cfg, 'model'):
        if node.get('type') == 'Pretrained' and node.get('checkpoint'):
            found.append((f'{path}.checkpoint', node['checkpoint']))
        if isinstance(node.get('pretrained'), str):
            found.append((f'{path}.pretrained', node['pretrained']))
    return found


def check_pretrained(model_cfg: dict) -> None:
    for key, ckpt in pretrained_checkpoints(model_cfg):
        target = key[:-len('.checkpoint')] if key.endswith('.checkpoint') \
            else key
        disable = f'--cfg-options {target}=None'
        if ckpt.startswith(DOWNLOAD_PREFIXES):
            raise ConfigError(
                f'{key} = {ckpt!r} is a download address; mmseg-uda never '
                'downloads at run time. Download the file yourself, put it '
                f'under pretrained/ and point {key} at it (README, '
                f'"Pretrained weights"), or train from scratch with '
                f'{disable}.')
        if not osp.isfile(osp.expanduser(ckpt)):
            raise ConfigError(
                f'Pretrained checkpoint {ckpt!r} ({key}) does not exist. '
                'Download and convert it as the README\'s "Pretrained '
                f'weights" section says, or train from scratch with '
                f'{disable}.')
    check_style_weights(model_cfg)


def check_style_weights(model_cfg: dict) -> None:
    """The upstream weight files of every StyleAugmentor style engine
    (T2S-DA's default) exist, unless it runs on random weights."""
    from mmseg_uda.models.utils.style_augmentor import (UPSTREAM_FILES,
                                                        UPSTREAM_URL)
    for path, node in _walk(model_cfg, 'model'):
        if node.get('type') != 'StyleAugmentorStyleTransfer' or \
                node.get('random_weights'):
            continue
        for what in ('transformer', 'predictor', 'embeddings'):
            ckpt = node.get(f'{what}_ckpt')
            if ckpt is None and what == 'embeddings':
                continue  # the copy shipped with the package
            name = UPSTREAM_FILES[what][0]
            if ckpt is None or not osp.isfile(osp.expanduser(ckpt)):
                raise ConfigError(
                    f'StyleAugmentor weight file {ckpt!r} '
                    f'({path}.{what}_ckpt) does not exist. Get {name} from '
                    f'{UPSTREAM_URL} (styleaug/checkpoints/) as the README\'s '
                    '"Pretrained weights" section says, or switch to a '
                    'weight-free style engine (docs/t2s.md, "Style '
                    'engine").')


def _dataset_classes(dataset_cfg: dict) -> Optional[Tuple[str, ...]]:
    if not isinstance(dataset_cfg, dict):
        return None
    if dataset_cfg.get('type') == 'UDADataset':
        return _dataset_classes(dataset_cfg.get('source'))
    metainfo = dataset_cfg.get('metainfo') or {}
    if metainfo.get('classes'):
        return tuple(metainfo['classes'])
    cls = DATASETS.get(dataset_cfg.get('type', ''))
    meta = getattr(cls, 'METAINFO', None) or {}
    return tuple(meta['classes']) if meta.get('classes') else None


def _student_cfg(model_cfg: dict) -> dict:
    return model_cfg.get('segmentor', model_cfg) \
        if model_cfg.get('type') == 'UDASegmentor' else model_cfg


def check_num_classes(cfg: Config) -> None:
    student = _student_cfg(cfg.model)
    heads = [('model.segmentor.decode_head', student.get('decode_head'))]
    aux = student.get('auxiliary_head')
    aux = aux if isinstance(aux, (list, tuple)) else [aux]
    heads += [('model.segmentor.auxiliary_head', a) for a in aux if a]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset')
        classes = _dataset_classes(dataset)
        if classes is None:
            continue
        for key, head in heads:
            if head and head.get('num_classes') not in (None, len(classes)):
                raise ConfigError(
                    f'{key}.num_classes = {head["num_classes"]} but '
                    f'{loader}.dataset has {len(classes)} classes '
                    f'({", ".join(classes[:5])}, ...). Make them equal (a '
                    'SYNTHIA 16-class head needs a 16-class metainfo).')


def check_methods(cfg: Config) -> None:
    if cfg.model.get('type') != 'UDASegmentor':
        return
    from mmseg_uda.models.segmentors import registered_uda_methods
    from mmseg_uda.models.uda import BaseUDAMethod
    needs_teacher = False
    for i, method in enumerate(cfg.model.get('methods', [])):
        cls = MODELS.get(method.get('type', ''))
        if not (isinstance(cls, type) and issubclass(cls, BaseUDAMethod)):
            raise ConfigError(
                f'model.methods[{i}].type = {method.get("type")!r} is not a '
                f'registered UDA method; choose from '
                f'{registered_uda_methods()}.')
        needs_teacher |= bool(cls.requires_teacher)
    hooks = [h.get('type') for h in cfg.get('custom_hooks', [])]
    if needs_teacher and 'EMATeacherHook' not in hooks:
        raise ConfigError(
            'A method in model.methods uses the EMA teacher but custom_hooks '
            "has no dict(type='EMATeacherHook').")


CONVERTERS = dict(
    GTAVDataset='tools/dataset_converters/gta.py',
    SynthiaDataset='tools/dataset_converters/synthia.py',
    CityscapesDataset='tools/dataset_converters/cityscapes.py')


def _default_arg(cls, name, fallback=None):
    import inspect
    for klass in getattr(cls, '__mro__', ()):
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        param = inspect.signature(init).parameters.get(name)
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return fallback


def _has_file(folder: str, suffix: str) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(f.endswith(suffix) for f in files):
            return True
    return False


def _check_dataset_files(dataset_cfg, where: str) -> None:
    if not isinstance(dataset_cfg, dict):
        return
    if dataset_cfg.get('type') == 'UDADataset':
        for domain in ('source', 'target'):
            _check_dataset_files(dataset_cfg.get(domain),
                                 f'{where}.{domain}')
        return
    kind = dataset_cfg.get('type', '')
    cls = DATASETS.get(kind) if isinstance(kind, str) else kind
    root = dataset_cfg.get('data_root') or ''
    converter = CONVERTERS.get(getattr(cls, '__name__', ''))
    todo = (f'; prepare it as the README\'s "Data" section says (python '
            f'{converter} {root})') if converter else ''
    if root and not osp.isdir(root):
        raise ConfigError(f'{where}.data_root {root!r} does not exist{todo}.')
    prefix = dataset_cfg.get('data_prefix') or \
        _default_arg(cls, 'data_prefix', {}) or {}
    img_dir = osp.join(root, prefix.get('img_path', ''))
    img_suffix = dataset_cfg.get('img_suffix') or \
        _default_arg(cls, 'img_suffix', '')
    if not osp.isdir(img_dir) or not _has_file(img_dir, img_suffix):
        raise ConfigError(
            f'{where}: no "*{img_suffix}" image under {img_dir!r}{todo}.')
    loads_labels = any(
        step.get('type') == 'LoadAnnotations'
        for step in dataset_cfg.get('pipeline', []))
    seg_dir = prefix.get('seg_map_path')
    if loads_labels and seg_dir is not None:
        seg_dir = osp.join(root, seg_dir)
        seg_suffix = dataset_cfg.get('seg_map_suffix') or \
            _default_arg(cls, 'seg_map_suffix', '')
        if not osp.isdir(seg_dir) or not _has_file(seg_dir, seg_suffix):
            raise ConfigError(
                f'{where}: no "*{seg_suffix}" label under {seg_dir!r}: the '
                f'labels are not converted to trainIds{todo}.')


def check_data(cfg: Config, loaders=('train_dataloader', 'val_dataloader',
                                     'test_dataloader')) -> None:
    """Data folders exist and hold images (and converted labels where the
    pipeline loads them), so a missing or unconverted dataset is reported
    with the converter to run before anything is built."""
    for loader in loaders:
        dataset = (cfg.get(loader) or {}).get('dataset')
        _check_dataset_files(dataset, f'{loader}.dataset')


def check_config(cfg: Config, check_weights: bool = True,
                 data_loaders=('train_dataloader', 'val_dataloader')) -> None:
    """Run every static check (raises :class:`ConfigError`)."""
    check_methods(cfg)
    check_num_classes(cfg)
    check_data(cfg, data_loaders)
    if check_weights:
        check_pretrained(cfg.model)


def resolve_resume(resume: Optional[str], work_dir: str) -> Optional[str]:
    """``--resume`` (auto: latest checkpoint in the work dir) or
    ``--resume PATH`` -> checkpoint path, with a clear error if none."""
    if resume is None:
        return None
    if resume == 'auto':
        latest = find_latest_checkpoint(work_dir)
        if latest is None:
            raise ConfigError(
                f'--resume: no checkpoint in the work dir {work_dir!r} (no '
                '"last_checkpoint" file). Train without --resume first, or '
                'pass --resume PATH/TO/iter_N.pth.')
        return latest
    if not osp.isfile(resume):
        raise ConfigError(f'--resume {resume}: file does not exist.')
    return resume


def set_amp(cfg: Config, dtype: str = 'float16') -> None:
    """``--amp`` (float16: mmengine's AmpOptimWrapper with dynamic loss
    scaling, CUDA only) or ``--amp-dtype bfloat16`` (BF16AmpOptimWrapper,
    no loss scaler) for every optimizer wrapper (the segmentor's and the
    discriminator's); see ``mmseg_uda.engine.precision``."""
    import torch

    from .precision import set_amp_dtype
    if dtype == 'float16' and not torch.cuda.is_available():
        raise ConfigError('--amp needs a CUDA GPU for float16 (mmengine\'s '
                          'AmpOptimWrapper); this machine has none. '
                          '--amp-dtype bfloat16 also runs on CPU.')
    try:
        set_amp_dtype(cfg.optim_wrapper, dtype)
    except ValueError as error:
        raise ConfigError(f'--amp: {error}') from None
