"""Measure training speed and memory of a UDA config against its source-only
version (same model, same crop, same batch).

    python tools/analysis/benchmark.py CONFIG [--iters 20] [--warmup 5]
        [--repeats 1] [--cfg-options k=v ...] [--json OUT.json]

Each variant runs in its own subprocess (so peak memory is per variant) on
synthetic batches shaped like the config's training crops (data loading is
excluded, as in mmseg's benchmark). With ``--repeats R`` the two variants
run R times, alternating (A B, B A, ...), so that a machine whose speed
drifts (shared hosts) slows both alike; the ratio is the median of the
per-repeat ratios. Reported: median seconds per training
iteration after warm-up (the full UDA step: forward, backward, optimizer
steps, and the EMA teacher update when the config has one) and peak memory
(CUDA max allocated on GPU; peak RSS of the process on CPU). Pretrained
weights are not loaded (random init has the same cost).
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--iters', type=int, default=20,
                        help='measured iterations')
    parser.add_argument('--warmup', type=int, default=5,
                        help='iterations before measuring')
    parser.add_argument('--repeats', type=int, default=1,
                        help='alternating runs of both variants; the ratio '
                        'is the median of the per-run ratios')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='override the source/target batch size')
    parser.add_argument('--crop', type=int, nargs=2, default=None,
                        metavar=('H', 'W'),
                        help='override the training crop (both domains)')
    parser.add_argument('--cfg-options', nargs='+', default=None,
                        help='override settings, key=value')
    parser.add_argument('--json', help='write the results to this file')
    parser.add_argument('--variant', choices=['method', 'source_only'],
                        help=argparse.SUPPRESS)
    parser.add_argument('--worker-out', help=argparse.SUPPRESS)
    return parser.parse_args()


def _crop_of(pipeline):
    """(H, W) of the training crop, or of the resize if there is no crop."""
    size = None
    for step in pipeline:
        kind = step.get('type')
        if kind == 'RandomCrop':
            h, w = step['crop_size']
            return int(h), int(w)
        if kind in ('Resize', 'RandomResize') and 'scale' in step:
            w, h = step['scale']  # mmcv scales are (W, H)
            size = (int(h), int(w))
    return size


def training_shapes(cfg, args):
    loader = cfg.train_dataloader
    dataset = loader.dataset
    batch = args.batch_size or loader.batch_size
    shapes = {}
    for domain in ('source', 'target'):
        sub = dataset.get(domain)
        if sub is None:
            continue
        shape = tuple(args.crop) if args.crop else _crop_of(sub.pipeline)
        if shape is None:
            raise SystemExit(f'Cannot infer the {domain} crop from the '
                             'pipeline; pass --crop H W.')
        shapes[domain] = shape
    return batch, shapes


def source_only_variant(cfg):
    """The config with no UDA method and a single segmentor optimizer."""
    cfg = copy.deepcopy(cfg)
    cfg.model.methods = []
    optim = cfg.optim_wrapper
    if 'segmentor' in optim:
        seg = optim['segmentor']
        cfg.optim_wrapper = dict(constructor=optim.get(
            'constructor', 'UDAOptimWrapperConstructor'), **seg)
    return cfg


def strip_pretrained(node):
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained':
            return None
        out = {}
        for key, value in node.items():
            if key == 'pretrained' and isinstance(value, str):
                out[key] = None
            else:
                out[key] = strip_pretrained(value)
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(strip_pretrained(v) for v in node)
    return node


def run_worker(args):
    import torch
    from mmengine.config import Config, ConfigDict
    from mmengine.logging import MessageHub
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    import mmseg_uda  # noqa: F401
    from mmseg_uda.engine.hooks import ema_momentum, ema_update
    from mmseg_uda.registry import MODELS

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        from mmengine.config import DictAction
        options = {}
        for item in args.cfg_options:
            key, value = item.split('=', 1)
            options[key] = DictAction._parse_iterable(value)
        cfg.merge_from_dict(options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if args.variant == 'source_only':
        cfg = source_only_variant(cfg)
    batch, shapes = training_shapes(cfg, args)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    model_cfg = ConfigDict(strip_pretrained(cfg.model.to_dict()))
    model = MODELS.build(model_cfg)
    model.init_weights()
    if device == 'cpu':  # SyncBN needs a process group and a GPU
        from mmengine.model import revert_sync_batchnorm
        model = revert_sync_batchnorm(model)
    model = model.to(device)
    model.train()
    if getattr(model, 'teacher', None) is not None:
        model.teacher.load_state_dict(model.student.state_dict())
        model.teacher_initialized.fill_(1)
    optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    num_classes = model.student.decode_head.num_classes

    g = torch.Generator().manual_seed(0)

    def make_batch():
        inputs, samples = {}, {}
        for domain, (h, w) in shapes.items():
            inputs[domain], samples[domain] = [], []
            for _ in range(batch):
                inputs[domain].append(torch.randint(
                    0, 256, (3, h, w), generator=g, dtype=torch.uint8))
                s = SegDataSample()
                s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w),
                                    pad_shape=(h, w)))
                if domain == 'source':
                    s.gt_sem_seg = PixelData(data=torch.randint(
                        0, num_classes, (1, h, w), generator=g))
                samples[domain].append(s)
        return dict(inputs=inputs, data_samples=samples)

    hub = MessageHub.get_current_instance()
    times = []
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    for it in range(args.warmup + args.iters):
        data = make_batch()
        hub.update_info('iter', it)
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.train_step(data, optim)
        if getattr(model, 'teacher', None) is not None:
            ema_update(model.teacher, model.student, ema_momentum(it + 1,
                                                                  0.999))
        if device == 'cuda':
            torch.cuda.synchronize()
        if it >= args.warmup:
            times.append(time.perf_counter() - start)
    if device == 'cuda':
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        device_name = torch.cuda.get_device_name()
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        device_name = f'CPU ({platform.processor() or platform.machine()}, '\
            f'{torch.get_num_threads()} threads)'
    result = dict(
        variant=args.variant,
        s_per_iter=statistics.median(times),
        peak_memory_mb=peak_mb,
        memory_kind='cuda_max_allocated' if device == 'cuda' else
        'peak_rss',
        device=device_name,
        batch=batch,
        shapes={k: list(v) for k, v in shapes.items()},
        methods=[m['type'] for m in cfg.model.get('methods', [])],
        torch=torch.__version__)
    with open(args.worker_out, 'w') as f:
        json.dump(result, f)


def main():
    args = parse_args()
    if args.variant:
        run_worker(args)
        return
    if args.repeats < 1:
        raise SystemExit('--repeats must be >= 1')
    runs = {'source_only': [], 'method': []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            order = ('source_only', 'method') if rep % 2 == 0 else \
                ('method', 'source_only')
            for variant in order:
                out = osp.join(tmp, f'{variant}_{rep}.json')
                cmd = [sys.executable, osp.abspath(__file__), args.config,
                       '--iters', str(args.iters), '--warmup',
                       str(args.warmup), '--variant', variant,
                       '--worker-out', out]
                if args.batch_size:
                    cmd += ['--batch-size', str(args.batch_size)]
                if args.crop:
                    cmd += ['--crop'] + [str(c) for c in args.crop]
                if args.cfg_options:
                    cmd += ['--cfg-options'] + args.cfg_options
                print(f'[benchmark] {variant} (run {rep + 1}/'
                      f'{args.repeats}): {args.warmup} warm-up + '
                      f'{args.iters} measured iterations ...', flush=True)
                subprocess.run(cmd, check=True, env=dict(os.environ))
                with open(out) as f:
                    runs[variant].append(json.load(f))
    results = {}
    for variant, rs in runs.items():
        results[variant] = dict(
            rs[0],
            s_per_iter=statistics.median(r['s_per_iter'] for r in rs),
            peak_memory_mb=max(r['peak_memory_mb'] for r in rs))
    ratios = [m['s_per_iter'] / b['s_per_iter']
              for b, m in zip(runs['source_only'], runs['method'])]
    base, meth = results['source_only'], results['method']
    ratio_t = statistics.median(ratios)
    ratio_m = meth['peak_memory_mb'] / base['peak_memory_mb']
    print(f"\nconfig: {args.config}\ndevice: {meth['device']}, torch "
          f"{meth['torch']}\nbatch {meth['batch']} per domain, crops "
          f"{meth['shapes']}, methods {meth['methods'] or ['(none)']}")
    print(f"{'variant':<14}{'s/iter':>10}{'peak MB':>12}")
    for name, r in (('source only', base), ('method', meth)):
        print(f"{name:<14}{r['s_per_iter']:>10.3f}"
              f"{r['peak_memory_mb']:>12.0f}")
    print(f"{'ratio':<14}{ratio_t:>9.2f}x{ratio_m:>11.2f}x  "
          f"({meth['memory_kind']})")
    if len(ratios) > 1:
        print(f'time ratio per run: '
              + ', '.join(f'{r:.2f}x' for r in ratios))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(config=args.config, source_only=base, method=meth,
                           time_ratio=ratio_t, memory_ratio=ratio_m,
                           time_ratios=ratios, runs=runs), f, indent=2)


if __name__ == '__main__':
    main()
