"""Convert an official DINOv2 checkpoint to DINOv2VisionTransformer keys.

Usage::

    python tools/model_converters/dinov2_to_mmseg_uda.py SRC DST \
        [--arch auto] [--patch-size P] [--img-size S]

SRC is a released state dict (``dinov2_vit{s,b,l,g}14_pretrain.pth`` from
https://github.com/facebookresearch/dinov2, README "Pretrained models"), DST
is written as ``{'state_dict': ..., 'meta': ...}`` with the keys of
``DINOv2VisionTransformer`` (transformers ``Dinov2Model`` under
``dinov2.``), loadable with ``pretrained=DST``. Converting is optional: the
backbone also loads SRC directly and converts it on the fly.

The architecture, patch size and position grid are read from SRC (or
given); the converted keys are checked against a backbone built on the
``meta`` device (no memory), and every missing, unexpected or mis-shaped key
is reported by name (exit status 1). SRC is read with the safe loader
(``torch.load(weights_only=True)``).
"""
import argparse
import json
import math
import os.path as osp
import sys

import torch

import mmseg_uda  # noqa: F401  applies the compatibility fixes
from mmseg_uda.compat import load_local_checkpoint
from mmseg_uda.models.backbones.dinov2 import DINOv2VisionTransformer
from mmseg_uda.models.utils.dinov2_checkpoint import (BACKBONE_PREFIX,
                                                      guess_official_arch)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an official DINOv2 checkpoint to '
        'DINOv2VisionTransformer (transformers Dinov2Model) keys.')
    parser.add_argument('src', help='official DINOv2 .pth state dict')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument(
        '--arch',
        default='auto',
        help="small/base/large/giant, 'auto' (from the width and depth in "
        'SRC; default) or a JSON arch dict, e.g. \'{"embed_dims": 16, '
        '"num_layers": 4, "num_heads": 2}\'')
    parser.add_argument(
        '--patch-size',
        type=int,
        default=None,
        help='default: read from patch_embed.proj.weight')
    parser.add_argument(
        '--img-size',
        type=int,
        default=None,
        help='side of the position-embedding grid in pixels (518 for the '
        'released 37x37 grid); default: read from pos_embed')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    ckpt = load_local_checkpoint(args.src, map_location='cpu')
    try:
        state = DINOv2VisionTransformer.checkpoint_to_state_dict(
            ckpt, args.src)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    proj = state[BACKBONE_PREFIX +
                 'embeddings.patch_embeddings.projection.weight']
    pos = state[BACKBONE_PREFIX + 'embeddings.position_embeddings']
    patch_size = args.patch_size or proj.shape[-1]
    img_size = args.img_size or math.isqrt(pos.shape[1] - 1) * patch_size
    if args.arch == 'auto':
        arch = guess_official_arch(state)
    elif args.arch.lstrip().startswith('{'):
        arch = json.loads(args.arch)
    else:
        arch = args.arch
    if arch is None:
        print(
            f'error: {args.src}: width {proj.shape[0]} and depth do not '
            'match a released DINOv2 ViT-S/B/L/g; give --arch',
            file=sys.stderr)
        return 1
    with torch.device('meta'):
        reference = DINOv2VisionTransformer(
            arch=arch, patch_size=patch_size, img_size=img_size)
    try:
        reference.check_state_dict(state, args.src)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    meta = dict(
        source=osp.basename(args.src),
        arch=arch,
        patch_size=int(patch_size),
        img_size=int(img_size),
        converter='tools/model_converters/dinov2_to_mmseg_uda.py')
    torch.save(dict(state_dict=state, meta=meta), args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}: use '
          f"backbone=dict(type='DINOv2VisionTransformer', arch={arch!r}, "
          f'patch_size={patch_size}, img_size={img_size}, '
          f"pretrained='{args.dst}')")
    return 0


if __name__ == '__main__':
    sys.exit(main())
