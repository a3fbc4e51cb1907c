"""Convert DeepLab-V2 / torchvision ResNet ImageNet checkpoints to mmseg
``ResNet`` state dicts (used by ``tools/model_converters/
deeplab_resnet2mmseg.py``).

Supported inputs:

- the DeepLab-V2 ImageNet (Caffe) checkpoint used by AdaptSegNet,
  ``DeepLab_resnet_pretrained_init-f81d91e8.pth``: keys
  ``Scale.conv1.weight``, ``Scale.bn1.*``, ``Scale.layer{1-4}.{i}.conv{1-3}``
  / ``bn{1-3}`` / ``downsample.{0,1}``, plus the ``Scale.layer5.conv2d_list.*``
  classifier, which is dropped (AdaptSegNet ``train_gta2cityscapes_multi.py``
  strips ``Scale.`` and skips ``layer5``);
- a torchvision-style ``resnet101`` state dict such as PLCA's
  ``resnet101-imagenet.pth`` (PLCA ``utils/utils.py::load_model`` strips
  ``Scale.`` when present); its ``fc.*`` classifier is dropped.

Below the prefix both use torchvision's module names, which are also the
names of mmseg's ``ResNet`` with the plain 7×7 stem (``deep_stem=False``:
``conv1``/``bn1`` stem, ``bn{1,2,3}`` norms, ``downsample.{0,1}``), so the
conversion strips wrapper prefixes, drops the ImageNet/VOC classifiers and
adds the ``num_batches_tracked`` buffers that pre-1.0 PyTorch checkpoints
lack. The result is then checked key by key against a freshly built mmseg
``ResNet``.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

import torch

# Prefixes added by wrappers around the backbone: DeepLab's ``Scale``
# module, (Distributed)DataParallel, and an mmseg segmentor's ``backbone``.
WRAPPER_PREFIXES = ('module.', 'Scale.', 'backbone.')
# Classifiers that are not part of the backbone: DeepLab-V2's ASPP
# classifier (``layer5``; ``layer6`` in AdaptSegNet's multi-level model) and
# torchvision's ImageNet ``fc``.
CLASSIFIER_PREFIXES = ('layer5.', 'layer6.', 'fc.')


@dataclass
class ConversionReport:
    """What happened to each key.

    Attributes:
        source_format: ``'deeplab_caffe'`` (``Scale.``/``layer5`` keys),
            ``'torchvision'`` (``fc`` keys) or ``'resnet'`` (neither).
        dropped_classifier: original keys of the dropped classifiers.
        added_buffers: ``num_batches_tracked`` buffers filled with 0.
        missing: target keys the checkpoint does not provide.
        unexpected: converted keys the target does not have (not written).
        shape_mismatch: key → (checkpoint shape, target shape) (not
            written).
    """
    source_format: str = 'resnet'
    dropped_classifier: List[str] = field(default_factory=list)
    added_buffers: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatch: Dict[str, Tuple[tuple, tuple]] = field(
        default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every target key got a tensor of the right shape."""
        return not self.missing and not self.shape_mismatch


def extract_state_dict(checkpoint: Mapping) -> Mapping[str, torch.Tensor]:
    """Return the tensor dict of a checkpoint, unwrapping mmengine's
    ``state_dict`` and PLCA's ``model`` containers."""
    for container in ('state_dict', 'model'):
        if container in checkpoint and isinstance(checkpoint[container],
                                                  Mapping):
            return checkpoint[container]
    return checkpoint


def strip_wrapper_prefixes(key: str) -> str:
    """Remove any leading ``module.`` / ``Scale.`` / ``backbone.``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                stripped = True
    return key


def detect_source_format(keys) -> str:
    """Guess the checkpoint family from its key names (see
    :class:`ConversionReport`)."""
    keys = list(keys)
    if any(k.startswith('Scale.') for k in keys) or any(
            strip_wrapper_prefixes(k).startswith('layer5.') for k in keys):
        return 'deeplab_caffe'
    if any(strip_wrapper_prefixes(k).startswith('fc.') for k in keys):
        return 'torchvision'
    return 'resnet'


def build_reference_resnet(depth: int = 101) -> torch.nn.Module:
    """The mmseg ``ResNet`` whose keys the converted checkpoint must match
    (plain 7×7 stem; ``style``, strides and dilations change no key or
    shape)."""
    from mmseg.models.backbones import ResNet
    return ResNet(depth=depth, style='caffe', deep_stem=False)


def convert_deeplab_resnet(
    state_dict: Mapping[str, torch.Tensor],
    target_state_dict: Mapping[str, torch.Tensor],
) -> Tuple['OrderedDict[str, torch.Tensor]', ConversionReport]:
    """Convert a DeepLab-Caffe or torchvision ResNet state dict to the keys
    of ``target_state_dict`` (an mmseg ``ResNet`` state dict).

    Returns:
        tuple: the converted state dict (target keys only, target order)
        and a :class:`ConversionReport`; the state dict loads with
        ``ResNet.load_state_dict(strict=True)`` iff ``report.ok``.
    """
    report = ConversionReport(source_format=detect_source_format(state_dict))
    renamed = OrderedDict()
    for key, value in state_dict.items():
        name = strip_wrapper_prefixes(key)
        if name.startswith(CLASSIFIER_PREFIXES):
            report.dropped_classifier.append(key)
            continue
        if name in renamed:
            raise ValueError(f'two checkpoint keys map to "{name}" after '
                             'stripping wrapper prefixes')
        renamed[name] = value

    converted = OrderedDict()
    for name, target in target_state_dict.items():
        if name not in renamed:
            if name.endswith('num_batches_tracked'):
                # Checkpoints saved before PyTorch 0.4.1 have no counter.
                converted[name] = torch.zeros_like(target)
                report.added_buffers.append(name)
            else:
                report.missing.append(name)
            continue
        value = renamed[name]
        if tuple(value.shape) != tuple(target.shape):
            report.shape_mismatch[name] = (tuple(value.shape),
                                           tuple(target.shape))
            continue
        converted[name] = value.detach().clone().to(target.dtype)
    report.unexpected = [k for k in renamed if k not in target_state_dict]
    return converted, report


def format_report(report: ConversionReport) -> str:
    """Human-readable summary naming every problematic key."""
    lines = [f'source format: {report.source_format}']
    if report.dropped_classifier:
        lines.append(f'dropped {len(report.dropped_classifier)} classifier '
                     f'keys: {", ".join(report.dropped_classifier)}')
    if report.added_buffers:
        lines.append(f'added {len(report.added_buffers)} '
                     'num_batches_tracked buffers (set to 0)')
    if report.unexpected:
        lines.append(f'UNEXPECTED ({len(report.unexpected)}, not written): '
                     f'{", ".join(report.unexpected)}')
    if report.shape_mismatch:
        lines.append(
            f'SHAPE MISMATCH ({len(report.shape_mismatch)}, not written): ' +
            ', '.join(f'{k} {src} vs {dst}'
                      for k, (src, dst) in report.shape_mismatch.items()))
    if report.missing:
        lines.append(f'MISSING ({len(report.missing)}): '
                     f'{", ".join(report.missing)}')
    return '\n'.join(lines)
