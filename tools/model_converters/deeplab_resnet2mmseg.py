"""Convert DeepLab-V2 / torchvision ResNet-101 ImageNet weights to an mmseg
``ResNet`` checkpoint.

Usage::

    python tools/model_converters/deeplab_resnet2mmseg.py SRC DST [--depth 101]

SRC is either AdaptSegNet's DeepLab ImageNet checkpoint
(``DeepLab_resnet_pretrained_init-f81d91e8.pth``) or PLCA's
``resnet101-imagenet.pth`` / a torchvision ``resnet101`` state dict. DST is
written as ``{'state_dict': ..., 'meta': ...}`` and is what
``configs/_base_/models/deeplabv2_r101_caffe.py`` expects at
``pretrained/deeplab_resnet101_imagenet_mmseg.pth``. The converted keys are
checked against an mmseg ``ResNet`` built here; missing, unexpected and
shape-mismatched keys are printed by name and the exit status is 1 when a
required key is missing or has the wrong shape.
"""
import argparse
import os.path as osp
import pickle
import sys

import torch

import mmseg_uda  # noqa: F401  applies the mmcv-lite shim mmseg.models needs
from mmseg_uda.models.utils.weight_conversion import (build_reference_resnet,
                                                      convert_deeplab_resnet,
                                                      extract_state_dict,
                                                      format_report)

PREPROCESSING_HINT = {
    'deeplab_caffe': 'Caffe weights: use BGR 0-255 input minus mean '
    '(104.008, 116.669, 122.679), std 1, ResNet style="caffe" '
    '(configs/_base_/models/deeplabv2_r101_caffe.py).',
    'torchvision': 'torchvision-style keys. PLCA\'s resnet101-imagenet.pth '
    'holds the DeepLab Caffe weights (BGR 0-255, style="caffe"); a genuine '
    'torchvision ImageNet model needs RGB mean/std normalisation and '
    'style="pytorch".',
    'resnet': 'Plain ResNet keys: check which normalisation the weights '
    'were trained with.',
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert DeepLab-V2 (Caffe) or torchvision ResNet '
        'ImageNet weights to mmseg ResNet keys.')
    parser.add_argument('src', help='source checkpoint (.pth)')
    parser.add_argument('dst', help='output mmseg checkpoint (.pth)')
    parser.add_argument(
        '--depth', type=int, default=101, help='ResNet depth (default 101)')
    parser.add_argument(
        '--allow-pickle',
        action='store_true',
        help='load SRC with torch.load(weights_only=False); only for files '
        'you trust, when the safe loader rejects them')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        checkpoint = torch.load(
            args.src, map_location='cpu', weights_only=not args.allow_pickle)
    except pickle.UnpicklingError as err:
        print(f'{args.src}: the safe loader refused the file ({err}). '
              'Re-run with --allow-pickle if you trust it.', file=sys.stderr)
        return 1
    state_dict = extract_state_dict(checkpoint)
    reference = build_reference_resnet(args.depth).state_dict()
    converted, report = convert_deeplab_resnet(state_dict, reference)
    print(format_report(report))
    if not report.ok:
        print(f'NOT written: {args.dst} would not load into '
              f'ResNet(depth={args.depth}).', file=sys.stderr)
        return 1
    torch.save(
        dict(
            state_dict=converted,
            meta=dict(
                source=osp.basename(args.src),
                source_format=report.source_format,
                converter='tools/model_converters/deeplab_resnet2mmseg.py')),
        args.dst)
    print(f'wrote {len(converted)} tensors to {args.dst}')
    print(PREPROCESSING_HINT[report.source_format])
    return 0


if __name__ == '__main__':
    sys.exit(main())
