"""Write the built-in demo data (synthetic GTA5-like source, Cityscapes-like
target) in the real on-disk layouts, then convert its labels.

Usage::

    python tools/make_demo_data.py data/demo [--seed 0] [--num-train 400]
        [--num-val 50] [--nproc 2] [--no-convert]

Writes ``data/demo/gta`` and ``data/demo/cityscapes`` (see
mmseg_uda/datasets/demo.py) and, unless ``--no-convert``, runs the GTA and
Cityscapes converters on them, as a user would on the real datasets.
"""
import argparse
import os.path as osp
import sys
import time

try:
    from mmseg_uda.datasets import demo
except ImportError:  # a source checkout that is not pip-installed
    sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
    from mmseg_uda.datasets import demo
from mmseg_uda.datasets.conversion import convert_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out_dir', help='output folder, e.g. data/demo')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--num-train',
        type=int,
        default=400,
        help='training images per domain')
    parser.add_argument(
        '--num-val',
        type=int,
        default=50,
        help='validation images per domain (source val: to measure '
        'source-only on source)')
    parser.add_argument('--nproc', type=int, default=2)
    parser.add_argument(
        '--no-convert',
        action='store_true',
        help='only write the raw labelIds, do not run the converters')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    counts = demo.make_demo_data(
        args.out_dir,
        seed=args.seed,
        num_source_train=args.num_train,
        num_source_val=args.num_val,
        num_target_train=args.num_train,
        num_target_val=args.num_val,
        nproc=args.nproc)
    print(f'\nwrote demo data to {args.out_dir} in {time.time() - start:.1f}s:'
          f' {counts}; classes: '
          + ', '.join(name for name, _, _ in demo.DEMO_CLASSES))
    if not args.no_convert:
        for dataset, sub in (('gta', 'gta'), ('cityscapes', 'cityscapes')):
            print(f'converting {osp.join(args.out_dir, sub)}')
            convert_dataset(
                osp.join(args.out_dir, sub), dataset, nproc=args.nproc)
    return 0


if __name__ == '__main__':
    sys.exit(main())
