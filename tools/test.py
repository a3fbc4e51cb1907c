"""Evaluate a checkpoint (same CLI as MMSegmentation's tools/test.py).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR]
                         [--show-dir DIR] [--cfg-options k=v ...]
                         [--trust-checkpoint]
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmseg_uda  # noqa: E402,F401
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmseg_uda.compat import (TRUST_CHECKPOINT_CFG_KEY,  # noqa: E402
                              set_checkpoint_trust)

from mmseg_uda.engine.config_checks import ConfigError, check_config  # noqa
from mmseg_uda.engine.distributed import shutdown_distributed  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Test a UDA segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='dir to dump the evaluation metrics (json)')
    parser.add_argument(
        '--out', type=str, help='dir to save predictions (format_only)')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir', help='dir where painted predictions are saved')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, key=value')
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='fully unpickle the checkpoints this run loads (--resume, '
        'load_from, pretrained weights); only for files you trust. Without '
        'it, files holding more than mmengine checkpoint types are refused. '
        'Same as trust_checkpoint=True in the config or '
        'MMSEG_UDA_TRUST_CHECKPOINT=1')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.trust_checkpoint or cfg.get(TRUST_CHECKPOINT_CFG_KEY, False):
        set_checkpoint_trust(True)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    try:
        # the checkpoint holds the trained weights: init weights not needed
        check_config(cfg, check_weights=False,
                     data_loaders=('test_dataloader', ))
        if not osp.isfile(args.checkpoint):
            raise ConfigError(f'checkpoint {args.checkpoint!r} not found.')
    except ConfigError as error:
        print(f'Config error: {error}', file=sys.stderr)
        sys.exit(2)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            print('--show/--show-dir need default_hooks.visualization',
                  file=sys.stderr)
            sys.exit(2)
        hook['draw'] = True
        if args.show:
            hook['show'] = True
            hook['wait_time'] = args.wait_time
        if args.show_dir:
            cfg.visualizer['save_dir'] = args.show_dir
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    runner = Runner.from_cfg(cfg)
    runner.test()
    shutdown_distributed()


if __name__ == '__main__':
    main()
