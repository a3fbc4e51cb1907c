"""Measure training speed and memory of a UDA config against its source-only
version (same model, same crop, same batch), on CPU or a CUDA GPU.

    python tools/analysis/benchmark.py CONFIG [--iters 20] [--warmup 5]
        [--repeats 1] [--device auto|cpu|cuda]
        [--amp-dtype float32|float16|bfloat16] [--channels-last]
        [--dataloader [--demo-data data/demo] [--num-workers N]]
        [--cfg-options k=v ...] [--json OUT.json]

Each variant runs in its own subprocess (so peak memory is per variant). By
default batches are synthetic, shaped like the config's training crops (data
loading excluded, as in mmseg's benchmark). ``--dataloader`` instead builds
the config's own ``train_dataloader`` (workers, ``persistent_workers``,
``pin_memory`` as configured; ``--demo-data DIR`` points its GTA5/Cityscapes
roots at the converted built-in demo, ``tools/make_demo_data.py DIR``, whose
small images the recipe pipelines resize to the recipe crops) and reports
the time spent waiting for each batch (data time, as mmengine's
IterTimerHook) next to the step time. With ``--repeats R`` the two variants
run R times, alternating (A B, B A, ...), so that a machine whose speed
drifts (shared hosts) slows both alike; the ratio is the median of the
per-repeat ratios. Reported: median seconds per training iteration after
warm-up (the full UDA step: forward, backward, optimizer steps, and the EMA
teacher update when the config has one; on CUDA between
``torch.cuda.synchronize()`` calls) and peak memory (CUDA
``max_memory_allocated`` on GPU; peak RSS of the process on CPU).
``--amp-dtype`` runs the step under mixed precision (float16: mmengine's
AmpOptimWrapper with loss scaling; bfloat16: BF16AmpOptimWrapper). The
config's ``env_cfg.cudnn_benchmark`` / ``env_cfg.allow_tf32`` and
``channels_last`` apply as in tools/train.py. Pretrained weights are not
loaded (random init has the same cost); SyncBN becomes BN (one process).
"""
import argparse
import copy
import gc
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
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'],
                        default='auto',
                        help='auto: cuda when available, else cpu')
    parser.add_argument('--amp-dtype', default=['float32'], nargs='+',
                        choices=['float32', 'float16', 'bfloat16'],
                        help='precision(s) of the training step (mixed '
                        'precision for float16/bfloat16); several give one '
                        'result per precision')
    parser.add_argument('--same-process', action='store_true',
                        help='measure every variant and precision in one '
                        'process (saves the start-up per variant; CUDA peak '
                        'memory is reset between them, CPU peak RSS is not)')
    parser.add_argument('--channels-last', action='store_true',
                        help='model in channels_last memory format (also '
                        'the config key channels_last=True)')
    parser.add_argument('--dataloader', action='store_true',
                        help="time the config's real train_dataloader and "
                        'report data time per iteration')
    parser.add_argument('--demo-data', metavar='DIR',
                        help='with --dataloader: GTA5/Cityscapes roots -> '
                        'DIR/gta, DIR/cityscapes (tools/make_demo_data.py)')
    parser.add_argument('--num-workers', type=int, default=None,
                        help='with --dataloader: override num_workers')
    parser.add_argument('--json', help='write the results to this file')
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    parser.add_argument('--worker-dtypes', help=argparse.SUPPRESS)
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
    """No weight files: Pretrained init off, ``pretrained=None``, and
    frozen helper networks that load ``*_ckpt`` files (StyleAugmentor) with
    their ``random_weights`` option (same cost)."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained':
            return None
        out = {}
        for key, value in node.items():
            if key == 'pretrained' and isinstance(value, str):
                out[key] = None
            elif key.endswith('_ckpt'):
                continue
            else:
                out[key] = strip_pretrained(value)
        if any(key.endswith('_ckpt') for key in node):
            out['random_weights'] = True
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(strip_pretrained(v) for v in node)
    return node


DEMO_ROOTS = dict(GTAVDataset='gta', CityscapesDataset='cityscapes')


def use_demo_data(dataset_cfg, demo_root):
    """Point the GTA5/Cityscapes datasets of a (UDA) dataset config at the
    converted demo data, in place."""
    if dataset_cfg.get('type') == 'UDADataset':
        for domain in ('source', 'target'):
            if dataset_cfg.get(domain) is not None:
                use_demo_data(dataset_cfg[domain], demo_root)
        return
    kind = dataset_cfg.get('type')
    if kind not in DEMO_ROOTS:
        raise SystemExit(f'--demo-data has no {kind} data (the demo is '
                         'GTA5/Cityscapes-shaped); use a GTA5 config or '
                         'drop --demo-data to use the configured data.')
    dataset_cfg['data_root'] = osp.join(demo_root, DEMO_ROOTS[kind])


def run_worker(args):
    """Measure the (variant, dtype) pairs given to this worker process
    (one pair, or all of them with --same-process) and write a JSON list."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmseg_uda  # noqa: F401

    base_cfg = Config.fromfile(args.config)
    if args.cfg_options:
        from mmengine.config import DictAction
        options = {}
        for item in args.cfg_options:
            key, value = item.split('=', 1)
            options[key] = DictAction._parse_iterable(value)
        base_cfg.merge_from_dict(options)
    init_default_scope(base_cfg.get('default_scope', 'mmseg'))
    device = args.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device visible.')
    results = []
    for variant, amp_dtype in zip(args.variant.split(','),
                                  args.worker_dtypes.split(',')):
        results.append(measure(base_cfg, variant, amp_dtype, device, args))
        gc.collect()  # the variant's model and optimizer state
        if device == 'cuda':
            torch.cuda.empty_cache()
    with open(args.worker_out, 'w') as f:
        json.dump(results, f)


def measure(base_cfg, variant, amp_dtype, device, args):
    """Seconds per iteration and peak memory of one variant in one
    precision (see the module doc)."""
    import torch
    from mmengine.config import ConfigDict
    from mmengine.logging import MessageHub
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from mmseg_uda.engine.hooks import ema_momentum, ema_update
    from mmseg_uda.engine.precision import (apply_backend_flags,
                                            set_amp_dtype, to_channels_last)
    from mmseg_uda.registry import MODELS

    cfg = copy.deepcopy(base_cfg)
    if variant == 'source_only':
        cfg = source_only_variant(cfg)
    if amp_dtype != 'float32':
        set_amp_dtype(cfg.optim_wrapper, amp_dtype)
    batch, shapes = training_shapes(cfg, args)
    env_cfg = cfg.get('env_cfg') or {}
    apply_backend_flags(env_cfg)
    torch.backends.cudnn.benchmark = bool(env_cfg.get('cudnn_benchmark'))
    model_cfg = ConfigDict(strip_pretrained(cfg.model.to_dict()))
    torch.manual_seed(0)  # same initial weights in every precision
    model = MODELS.build(model_cfg)
    model.init_weights()
    # SyncBN needs a process group: one process benchmarks plain BN
    from mmengine.model import revert_sync_batchnorm
    model = revert_sync_batchnorm(model)
    model = model.to(device)
    if args.channels_last or cfg.get('channels_last'):
        model = to_channels_last(model)
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

    next_batch = make_batch
    if args.dataloader:
        from mmengine.runner import Runner
        loader_cfg = copy.deepcopy(cfg.train_dataloader)
        if args.batch_size:
            loader_cfg['batch_size'] = args.batch_size
        if args.num_workers is not None:
            loader_cfg['num_workers'] = args.num_workers
            if args.num_workers == 0:
                loader_cfg['persistent_workers'] = False
        if args.demo_data:
            use_demo_data(loader_cfg['dataset'], args.demo_data)
        loader = Runner.build_dataloader(loader_cfg.to_dict()
                                         if hasattr(loader_cfg, 'to_dict')
                                         else loader_cfg, seed=0)
        workers = loader.num_workers

        def endless():
            while True:
                yield from loader

        batches = endless()
        next_batch = lambda: next(batches)  # noqa: E731

    hub = MessageHub.get_current_instance()
    times, data_times, losses = [], [], []
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    for it in range(args.warmup + args.iters):
        fetch = time.perf_counter()
        data = next_batch()
        hub.update_info('iter', it)
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        log_vars = model.train_step(data, optim)
        if getattr(model, 'teacher', None) is not None:
            ema_update(model.teacher, model.student, ema_momentum(it + 1,
                                                                  0.999))
        if device == 'cuda':
            torch.cuda.synchronize()
        if it >= args.warmup:
            times.append(time.perf_counter() - start)
            data_times.append(start - fetch)
            losses.append(float(log_vars['loss'].detach()))
    if device == 'cuda':
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        device_name = torch.cuda.get_device_name()
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        device_name = f'CPU ({platform.processor() or platform.machine()}, '\
            f'{torch.get_num_threads()} threads)'
    result = dict(
        variant=variant,
        s_per_iter=statistics.median(times),
        amp_dtype=amp_dtype,
        channels_last=bool(args.channels_last or cfg.get('channels_last')),
        losses=losses,
        dataloader=dict(
            data_s_per_iter=statistics.median(data_times),
            num_workers=workers,
            persistent_workers=bool(loader_cfg.get('persistent_workers')),
            pin_memory=bool(loader_cfg.get('pin_memory')),
            demo_data=args.demo_data) if args.dataloader else None,
        peak_memory_mb=peak_mb,
        # a process's peak RSS cannot be reset: with --same-process on CPU
        # it is the peak over this and the variants measured before it
        memory_kind='cuda_max_allocated' if device == 'cuda' else
        ('peak_rss_cumulative' if args.same_process else 'peak_rss'),
        device=device_name,
        batch=batch,
        shapes={k: list(v) for k, v in shapes.items()},
        methods=[m['type'] for m in cfg.model.get('methods', [])],
        torch=torch.__version__,
        cuda=torch.version.cuda if device == 'cuda' else None)
    del model, optim
    return result


def _worker_cmd(args, variants, dtypes, out):
    cmd = [sys.executable, osp.abspath(__file__), args.config,
           '--iters', str(args.iters), '--warmup', str(args.warmup),
           '--variant', ','.join(variants), '--worker-dtypes',
           ','.join(dtypes), '--worker-out', out, '--device', args.device]
    if args.same_process:
        cmd += ['--same-process']
    if args.batch_size:
        cmd += ['--batch-size', str(args.batch_size)]
    if args.crop:
        cmd += ['--crop'] + [str(c) for c in args.crop]
    if args.channels_last:
        cmd += ['--channels-last']
    if args.dataloader:
        cmd += ['--dataloader']
    if args.demo_data:
        cmd += ['--demo-data', args.demo_data]
    if args.num_workers is not None:
        cmd += ['--num-workers', str(args.num_workers)]
    if args.cfg_options:
        cmd += ['--cfg-options'] + args.cfg_options
    return cmd


def summarize(config, dtype, runs):
    """One precision's result: medians over the repeats and the ratios."""
    results = {}
    for variant, rs in runs.items():
        results[variant] = dict(
            rs[0],
            s_per_iter=statistics.median(r['s_per_iter'] for r in rs),
            peak_memory_mb=max(r['peak_memory_mb'] for r in rs))
        if rs[0]['dataloader']:
            results[variant]['dataloader'] = dict(
                rs[0]['dataloader'],
                data_s_per_iter=statistics.median(
                    r['dataloader']['data_s_per_iter'] for r in rs))
    ratios = [m['s_per_iter'] / b['s_per_iter']
              for b, m in zip(runs['source_only'], runs['method'])]
    base, meth = results['source_only'], results['method']
    return dict(config=config, amp_dtype=dtype, source_only=base,
                method=meth, time_ratio=statistics.median(ratios),
                memory_ratio=meth['peak_memory_mb'] / base['peak_memory_mb'],
                time_ratios=ratios, runs=runs)


def report(result):
    base, meth = result['source_only'], result['method']
    cuda = f", CUDA {meth['cuda']}" if meth.get('cuda') else ''
    print(f"\nconfig: {result['config']}\ndevice: {meth['device']}, torch "
          f"{meth['torch']}{cuda}, {meth['amp_dtype']}"
          f"{', channels_last' if meth['channels_last'] else ''}\n"
          f"batch {meth['batch']} per domain, crops "
          f"{meth['shapes']}, methods {meth['methods'] or ['(none)']}")
    with_data = bool(meth['dataloader'])
    print(f"{'variant':<14}{'s/iter':>10}{'peak MB':>12}"
          + (f"{'data s/iter':>14}" if with_data else ''))
    for name, r in (('source only', base), ('method', meth)):
        data = f"{r['dataloader']['data_s_per_iter']:>14.3f}" \
            if with_data else ''
        print(f"{name:<14}{r['s_per_iter']:>10.3f}"
              f"{r['peak_memory_mb']:>12.0f}{data}")
    if with_data:
        d = meth['dataloader']
        print(f"dataloader: {d['num_workers']} workers, persistent_workers="
              f"{d['persistent_workers']}, pin_memory={d['pin_memory']}"
              + (f", demo data {d['demo_data']}" if d['demo_data'] else ''))
    print(f"{'ratio':<14}{result['time_ratio']:>9.2f}x"
          f"{result['memory_ratio']:>11.2f}x  ({meth['memory_kind']})")
    if len(result['time_ratios']) > 1:
        print('time ratio per run: '
              + ', '.join(f'{r:.2f}x' for r in result['time_ratios']))


def main():
    args = parse_args()
    if args.variant:
        run_worker(args)
        return
    if args.repeats < 1:
        raise SystemExit('--repeats must be >= 1')
    dtypes = list(dict.fromkeys(args.amp_dtype))
    runs = {d: {'source_only': [], 'method': []} for d in dtypes}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            order = ['source_only', 'method'] if rep % 2 == 0 else \
                ['method', 'source_only']
            pairs = [(v, d) for d in dtypes for v in order]
            groups = [pairs] if args.same_process else [[p] for p in pairs]
            for n, group in enumerate(groups):
                out = osp.join(tmp, f'run{rep}_{n}.json')
                names = ', '.join(f'{v} {d}' for v, d in group)
                print(f'[benchmark] {names} (run {rep + 1}/{args.repeats}): '
                      f'{args.warmup} warm-up + {args.iters} measured '
                      'iterations ...', flush=True)
                subprocess.run(
                    _worker_cmd(args, [v for v, _ in group],
                                [d for _, d in group], out),
                    check=True, env=dict(os.environ))
                with open(out) as f:
                    for (variant, dtype), r in zip(group, json.load(f)):
                        runs[dtype][variant].append(r)
    results = [summarize(args.config, d, runs[d]) for d in dtypes]
    for result in results:
        report(result)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results[0] if len(results) == 1 else
                      dict(config=args.config, by_dtype=results), f,
                      indent=2)


if __name__ == '__main__':
    main()
