"""Train a UDA segmentor (same CLI as MMSegmentation's tools/train.py).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--amp-dtype {float16,bfloat16}]
                          [--cfg-options k=v ...] [--launcher pytorch]
                          [--trust-checkpoint]
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmseg_uda  # noqa: E402,F401  (compat fixes + registration first)
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmseg_uda.compat import (TRUST_CHECKPOINT_CFG_KEY,  # noqa: E402
                              set_checkpoint_trust)

from mmseg_uda.engine.config_checks import (ConfigError, check_config,  # noqa
                                            resolve_resume, set_amp)
from mmseg_uda.engine.distributed import shutdown_distributed  # noqa: E402
from mmseg_uda.engine.precision import (apply_backend_flags,  # noqa: E402
                                        channels_last_runner)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a UDA segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        help='resume from the latest checkpoint in the work dir, or from '
        'the given checkpoint')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (float16 with '
        'loss scaling, GPU)')
    parser.add_argument(
        '--amp-dtype',
        choices=['float16', 'bfloat16'],
        default=None,
        help='autocast dtype of mixed precision (implies --amp); bfloat16 '
        'needs no loss scaler (Ampere+ GPUs; also runs on CPU)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value (e.g. '
        'train_cfg.max_iters=100)')
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
        check_config(cfg)
        if args.amp or args.amp_dtype:
            set_amp(cfg, args.amp_dtype or 'float16')
        checkpoint = resolve_resume(args.resume, cfg.work_dir)
    except ConfigError as error:
        print(f'Config error: {error}', file=sys.stderr)
        sys.exit(2)
    if checkpoint is not None:
        cfg.resume = True
        cfg.load_from = checkpoint
    apply_backend_flags(cfg.get('env_cfg'))  # env_cfg.allow_tf32
    runner_cls = channels_last_runner(Runner) if cfg.get('channels_last') \
        else Runner
    runner = runner_cls.from_cfg(cfg)
    runner.train()
    shutdown_distributed()


if __name__ == '__main__':
    main()
