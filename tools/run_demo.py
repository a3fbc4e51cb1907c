"""The built-in demo, start to finish: make the demo data (real GTA5 and
Cityscapes layouts and label encodings), convert it with the real
converters, train source-only and every adaptation method with
``tools/train.py``, evaluate, and print the mIoU table.

    python tools/run_demo.py [--methods source_only cdga ...] [--seeds 0 1 2]

Reported per method: target mIoU (the 50 demo "Cityscapes" val images) and,
for source-only, its mIoU on the 50 held-out source images, i.e. the domain
gap. With several seeds the table shows mean ± standard deviation.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

METHODS = ['source_only', 'advent', 'cdga', 'plca', 'daformer', 't2s',
           'hrda', 'mic', 'vfm_source_only', 'vfm_mic']
# The quick start's default: source only and the package's methods (AdvEnt,
# the pipeline's adversarial baseline, is one `--methods ... advent` away).
DEFAULT_METHODS = ['source_only', 'cdga', 'plca', 'daformer', 't2s', 'hrda',
                   'mic', 'vfm_source_only', 'vfm_mic']
NAMES = dict(source_only='source only', advent='AdvEnt', cdga='CDGA',
             plca='PLCA', daformer='DAFormer (self-training)', t2s='T2S-DA',
             hrda='HRDA (self-training)', mic='MIC on DAFormer',
             vfm_source_only='ViT source only',
             vfm_mic='ViT + VFM-UDA (MIC tokens)')


def baseline_of(method):
    """The source-only row a method is compared with: the tiny ViT's for
    the vision-foundation-model path (vfm_*), the DeepLab-V2's otherwise."""
    return 'vfm_source_only' if method.startswith('vfm_') else 'source_only'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', default='data/demo')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--methods', nargs='+', default=DEFAULT_METHODS,
                        choices=METHODS)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--json', help='also write the results here')
    return parser.parse_args()


def run(cmd):
    print('[demo] $ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def last_val_metrics(work_dir):
    """The last validation metrics mmengine logged in ``work_dir``."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data',
                                         'scalars.json')))
    if not runs:
        raise RuntimeError(f'no training log under {work_dir}')
    metrics = None
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        for line in f:
            record = json.loads(line)
            if 'mIoU' in record:
                metrics = record
    if metrics is None:
        raise RuntimeError(f'no validation result in {work_dir}')
    return metrics


def source_domain_miou(config, checkpoint, work_dir):
    """Evaluate a checkpoint on the held-out source images (the demo config
    names them ``source_val_dataloader``)."""
    import mmseg_uda  # noqa: F401
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.test_dataloader = cfg.source_val_dataloader
    cfg.load_from = checkpoint
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    return Runner.from_cfg(cfg).test()['mIoU']


def fmt(values):
    if len(values) == 1:
        return f'{values[0]:.1f}'
    return f'{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}'


def main():
    args = parse_args()
    os.chdir(REPO)
    start = time.time()
    if not osp.isdir(osp.join(args.data, 'gta', 'images')):
        run([sys.executable, 'tools/make_demo_data.py', args.data])
    else:  # idempotent: only writes what is missing
        run([sys.executable, 'tools/dataset_converters/gta.py',
             osp.join(args.data, 'gta'), '--nproc', '2'])
        run([sys.executable, 'tools/dataset_converters/cityscapes.py',
             osp.join(args.data, 'cityscapes'), '--nproc', '2'])
    overrides = []
    if osp.normpath(args.data) != 'data/demo':
        overrides = [
            f'train_dataloader.dataset.source.data_root={args.data}/gta',
            f'train_dataloader.dataset.target.data_root='
            f'{args.data}/cityscapes',
            f'val_dataloader.dataset.data_root={args.data}/cityscapes',
        ]
    results = {m: dict(target=[], seconds=[]) for m in args.methods}
    source_on_source = []
    for seed in args.seeds:
        for method in args.methods:
            work_dir = osp.join(args.work_dir, f'{method}_seed{seed}')
            config = f'configs/demo/{method}.py'
            t0 = time.time()
            run([sys.executable, 'tools/train.py', config, '--work-dir',
                 work_dir, '--cfg-options', f'randomness.seed={seed}'] +
                overrides)
            results[method]['seconds'].append(time.time() - t0)
            results[method]['target'].append(
                last_val_metrics(work_dir)['mIoU'])
            if method == 'source_only':
                with open(osp.join(work_dir, 'last_checkpoint')) as f:
                    ckpt = f.read().strip()
                source_on_source.append(source_domain_miou(
                    config, ckpt, osp.join(work_dir, 'source_eval')))

    lines = ['', 'Built-in demo (synthetic GTA-like -> Cityscapes-like), '
             f'seeds {args.seeds}, {time.time() - start:.0f} s in all', '',
             f"| {'method':<26} | {'target mIoU':>12} | "
             f"{'vs source only':>14} | {'train s':>7} |",
             f"|{'-' * 28}|{'-' * 14}|{'-' * 16}|{'-' * 9}|"]
    if source_on_source:
        lines.append(f"| {'source only, on source':<26} | "
                     f'{fmt(source_on_source):>12} | {"":>14} | {"":>7} |')
    for method in args.methods:
        r = results[method]
        delta = ''
        base = results.get(baseline_of(method), {}).get('target')
        if base and method != baseline_of(method):
            delta = f'{statistics.mean(r["target"]) - statistics.mean(base):+.1f}'
        lines.append(f'| {NAMES[method]:<26} | {fmt(r["target"]):>12} | '
                     f'{delta:>14} | {statistics.mean(r["seconds"]):>7.0f} |')
    print('\n'.join(lines), flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(seeds=args.seeds, results=results,
                           source_on_source=source_on_source), f, indent=2)


if __name__ == '__main__':
    main()
