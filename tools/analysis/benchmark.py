"""Measure training speed and memory of a UDA config against its source-only
version (same model, same crop, same batch), or against another config
(``--baseline``), on CPU or a CUDA GPU.

    python tools/analysis/benchmark.py CONFIG [--iters 20] [--warmup 5]
        [--repeats 1] [--device auto|cpu|cuda]
        [--baseline CONFIG2] [--crop S | --crop H W] [--batch-size B]
        [--amp-dtype float32|float16|bfloat16] [--channels-last]
        [--dataloader [--demo-data data/demo] [--num-workers N]]
        [--cfg-options k=v ...] [--method-cfg-options k=v ...]
        [--baseline-cfg-options k=v ...] [--json OUT.json]

Baseline: by default the source-only variant of CONFIG (``methods=[]``,
one optimizer); ``--baseline CONFIG2`` compares CONFIG with another config
instead (e.g. HRDA against DAFormer; CONFIG2 may be CONFIG itself, e.g.
``--method-cfg-options model.segmentor.backbone.with_cp=True`` measures
gradient checkpointing of the MiT encoder against the plain config).
``--cfg-options`` apply to both sides, ``--method-cfg-options`` to CONFIG
only, ``--baseline-cfg-options`` to the baseline only. ``--crop S`` (or
``H W``) sets the training crop of both domains on both sides; an HRDA
segmentor's detail crop (``hr_crop_size``) is scaled with it by the ratio
to the recipe crop (HRDA 1024 -> 512: detail 512 -> 256; the context branch
stays at ``scales[0]`` = 0.5 of the crop), so both sides keep the recipe's
proportions at a size a CPU can run.

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
``torch.cuda.synchronize()`` calls), the CPU seconds of the process per
step (``time.process_time``; on a shared CPU host with one thread per
process this is the robust time ratio, as other processes' load stretches
wall time but not CPU time) and peak memory (CUDA
``max_memory_allocated`` on GPU; peak RSS of the process on CPU) and the
memory growth during the training steps: the peak while the steps run
minus the memory right before the first step (model weights and libraries
are there; the optimizer state, created in the first step, is growth). On
CPU that is Linux's VmHWM, reset through ``/proc/self/clear_refs`` before
the first step, minus VmRSS at that point; on CUDA
``max_memory_allocated`` minus ``memory_allocated`` before the first step.
On CPU the whole-process peak RSS is dominated by the fixed part (Python,
libraries, weights), so the growth ratio is the one that says what the
method adds.
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
import math
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
    parser.add_argument('--crop', type=int, nargs='+', default=None,
                        metavar='S',
                        help='override the training crop (both domains, '
                        'both sides): S (square) or H W; scales an HRDA '
                        'detail crop with it')
    parser.add_argument('--baseline', metavar='CONFIG2',
                        help='compare with this config instead of the '
                        "config's source-only variant")
    parser.add_argument('--cfg-options', nargs='+', default=None,
                        help='override settings of both sides, key=value')
    parser.add_argument('--method-cfg-options', nargs='+', default=None,
                        help='override settings of CONFIG only')
    parser.add_argument('--baseline-cfg-options', nargs='+', default=None,
                        help='override settings of the baseline only')
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
    args = parser.parse_args()
    if args.crop is not None:
        if len(args.crop) not in (1, 2) or min(args.crop) <= 0:
            parser.error('--crop takes S or H W (positive)')
        if len(args.crop) == 1:
            args.crop = args.crop * 2
    return args


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


def recipe_crop(cfg):
    """(H, W) of the config's source training crop (None if unknown)."""
    dataset = cfg.train_dataloader.dataset
    sub = dataset.get('source', dataset)
    pipeline = sub.get('pipeline') if hasattr(sub, 'get') else None
    return _crop_of(pipeline) if pipeline else None


def scale_hrda_crops(cfg, crop):
    """Scale the detail crop of every HRDA segmentor in ``cfg.model`` by
    ``crop`` / the recipe crop, in place (HRDA: 512 in 1024, so 256 in 512),
    so that a reduced ``--crop`` keeps the recipe's detail/context sizes
    relative to the crop. Returns the new detail crops."""
    base = recipe_crop(cfg)
    found = []

    def visit(node):
        if isinstance(node, dict):
            if node.get('type') == 'HRDAEncoderDecoder' and \
                    node.get('hr_crop_size') is not None:
                if base is None:
                    raise SystemExit(
                        'benchmark.py --crop: cannot infer the recipe crop '
                        'from the source pipeline to scale hr_crop_size; '
                        'set it with --cfg-options '
                        'model.segmentor.hr_crop_size=[H,W].')
                new = []
                for hr, c, b in zip(node['hr_crop_size'], crop, base):
                    size = hr * c / b
                    if size != int(size):
                        raise SystemExit(
                            f'benchmark.py --crop {crop[0]} {crop[1]}: the '
                            f'HRDA detail crop {list(node["hr_crop_size"])} '
                            f'of the {list(base)} recipe crop scales to '
                            f'{size:g} pixels; pick a crop that keeps it '
                            'whole (HRDA checks that it lies on its '
                            'context grid).')
                    new.append(int(size))
                node['hr_crop_size'] = new
                found.append(new)
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(cfg.model)
    return found


def _hrda_crops(node):
    """The ``hr_crop_size`` of every HRDA segmentor under ``node``."""
    if isinstance(node, dict):
        own = [node['hr_crop_size']] if node.get('type') == \
            'HRDAEncoderDecoder' and node.get('hr_crop_size') else []
        return own + [c for v in node.values() for c in _hrda_crops(v)]
    if isinstance(node, (list, tuple)):
        return [c for v in node for c in _hrda_crops(v)]
    return []


def with_cp_of(model_cfg):
    """True when a backbone of the model config has ``with_cp=True``."""
    if isinstance(model_cfg, dict):
        if model_cfg.get('with_cp') is True:
            return True
        return any(with_cp_of(v) for v in model_cfg.values())
    if isinstance(model_cfg, (list, tuple)):
        return any(with_cp_of(v) for v in model_cfg)
    return False


def _proc_status_kb(key):
    """A field of /proc/self/status in KiB (Linux), else None."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux,
    ``echo 5 > /proc/self/clear_refs``); False where not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        return False
    return _proc_status_kb('VmHWM') is not None


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

    # mmengine's INFO lines (one per initialised parameter) would bury the
    # report; warnings still show
    import logging
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)

    def load(path, side_options):
        cfg = Config.fromfile(path)
        for items in (args.cfg_options, side_options):
            if items:
                from mmengine.config import DictAction
                options = {}
                for item in items:
                    key, value = item.split('=', 1)
                    options[key] = DictAction._parse_iterable(value)
                cfg.merge_from_dict(options)
        return cfg

    configs = dict(method=load(args.config, args.method_cfg_options))
    if args.baseline:
        configs['baseline'] = load(args.baseline, args.baseline_cfg_options)
    else:
        configs['source_only'] = load(args.config,
                                      args.baseline_cfg_options)
    init_default_scope(configs['method'].get('default_scope', 'mmseg'))
    device = args.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device visible.')
    results = []
    for variant, amp_dtype in zip(args.variant.split(','),
                                  args.worker_dtypes.split(',')):
        results.append(measure(configs[variant], variant, amp_dtype, device,
                               args))
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
    # --crop shapes the synthetic batches only (the real dataloader keeps
    # the pipeline's crop), so the detail crop follows it only then
    hr_crops = scale_hrda_crops(cfg, args.crop) \
        if args.crop and not args.dataloader else [
        list(c) for c in _hrda_crops(cfg.model)]
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
    times, cpu_times, data_times, losses = [], [], [], []
    gc.collect()
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before_mb = torch.cuda.memory_allocated() / 2**20
    else:
        rss_reset = reset_peak_rss()
        before_mb = _proc_status_kb('VmRSS') / 1024 if rss_reset else None
    for it in range(args.warmup + args.iters):
        fetch = time.perf_counter()
        data = next_batch()
        hub.update_info('iter', it)
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        cpu_start = time.process_time()
        log_vars = model.train_step(data, optim)
        if getattr(model, 'teacher', None) is not None:
            # as EMATeacherHook: frozen (requires_grad=False) parameters
            # are not averaged
            ema_update(model.teacher, model.student,
                       ema_momentum(it + 1, 0.999), trainable_only=True)
        if device == 'cuda':
            torch.cuda.synchronize()
        if it >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            data_times.append(start - fetch)
            losses.append(float(log_vars['loss'].detach()))
    if device == 'cuda':
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        step_peak_mb = peak_mb
        device_name = torch.cuda.get_device_name()
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        step_peak_mb = _proc_status_kb('VmHWM') / 1024 \
            if before_mb is not None else None
        device_name = f'CPU ({platform.processor() or platform.machine()}, '\
            f'{torch.get_num_threads()} threads)'
    result = dict(
        variant=variant,
        s_per_iter=statistics.median(times),
        # CPU seconds of this process (all its threads) per step: on a
        # shared CPU host, unlike wall time, barely affected by other load
        cpu_s_per_iter=statistics.median(cpu_times),
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
        # memory right before the first step and the peak while the steps
        # ran (CPU: RSS and VmHWM reset before the first step; CUDA:
        # memory_allocated and max_memory_allocated); growth = peak - before
        memory_before_steps_mb=before_mb,
        step_peak_memory_mb=step_peak_mb,
        step_memory_growth_mb=None if before_mb is None else
        step_peak_mb - before_mb,
        # a process's peak RSS cannot be reset: with --same-process on CPU
        # it is the peak over this and the variants measured before it
        memory_kind='cuda_max_allocated' if device == 'cuda' else
        ('peak_rss_cumulative' if args.same_process else 'peak_rss'),
        device=device_name,
        batch=batch,
        shapes={k: list(v) for k, v in shapes.items()},
        methods=[m['type'] for m in cfg.model.get('methods', [])],
        config=args.baseline if variant == 'baseline' else args.config,
        model=cfg.model.get('segmentor', cfg.model).get('type'),
        backbone=cfg.model.get('segmentor', cfg.model).get(
            'backbone', {}).get('type'),
        hr_crop_size=hr_crops or None,
        with_cp=with_cp_of(cfg.model.to_dict()),
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
    if args.baseline:
        cmd += ['--baseline', args.baseline]
    for flag, items in (('--cfg-options', args.cfg_options),
                        ('--method-cfg-options', args.method_cfg_options),
                        ('--baseline-cfg-options',
                         args.baseline_cfg_options)):
        if items:
            cmd += [flag] + items
    return cmd


def _ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def summarize(config, dtype, runs, baseline=None):
    """One precision's result: medians over the repeats and the ratios
    (CONFIG / baseline); the per-run ratios pair the runs of one repeat."""
    base_key = 'baseline' if baseline else 'source_only'
    results = {}
    for variant, rs in runs.items():
        growth = [r.get('step_memory_growth_mb') for r in rs]
        results[variant] = dict(
            rs[0],
            s_per_iter=statistics.median(r['s_per_iter'] for r in rs),
            cpu_s_per_iter=statistics.median(
                r.get('cpu_s_per_iter', math.nan) for r in rs),
            peak_memory_mb=max(r['peak_memory_mb'] for r in rs),
            step_memory_growth_mb=None if None in growth else max(growth),
            step_peak_memory_mb=None if None in growth else max(
                r['step_peak_memory_mb'] for r in rs))
        if rs[0]['dataloader']:
            results[variant]['dataloader'] = dict(
                rs[0]['dataloader'],
                data_s_per_iter=statistics.median(
                    r['dataloader']['data_s_per_iter'] for r in rs))
    pairs = list(zip(runs[base_key], runs['method']))
    ratios = [m['s_per_iter'] / b['s_per_iter'] for b, m in pairs]
    cpu_ratios = [m.get('cpu_s_per_iter', math.nan) /
                  b.get('cpu_s_per_iter', math.nan) for b, m in pairs]
    base, meth = results[base_key], results['method']
    out = dict(config=config, amp_dtype=dtype)
    if baseline:
        out['baseline_config'] = baseline
    out.update({
        base_key: base, 'method': meth,
        'time_ratio': statistics.median(ratios),
        'memory_ratio': meth['peak_memory_mb'] / base['peak_memory_mb'],
        # peak minus the memory right before the first step (module doc)
        'memory_growth_ratio': _ratio(meth['step_memory_growth_mb'],
                                      base['step_memory_growth_mb']),
        'time_ratios': ratios,
        'cpu_time_ratio': statistics.median(cpu_ratios),
        'cpu_time_ratios': cpu_ratios,
        'memory_ratios': [m['peak_memory_mb'] / b['peak_memory_mb']
                          for b, m in pairs],
        'memory_growth_ratios': [
            _ratio(m.get('step_memory_growth_mb'),
                   b.get('step_memory_growth_mb')) for b, m in pairs],
        'runs': runs})
    return out


def _describe(r):
    extras = [r.get('model'), r.get('backbone')]
    if r.get('hr_crop_size'):
        extras.append('detail crop ' + ', '.join(
            f'{h}x{w}' for h, w in r['hr_crop_size']))
    if r.get('with_cp'):
        extras.append('with_cp')
    return ', '.join(e for e in extras if e)


def report(result):
    baseline = result.get('baseline_config')
    base_key = 'baseline' if baseline else 'source_only'
    base, meth = result[base_key], result['method']
    cuda = f", CUDA {meth['cuda']}" if meth.get('cuda') else ''
    print(f"\nconfig: {result['config']} ({_describe(meth)})"
          + (f"\nbaseline: {baseline} ({_describe(base)})" if baseline
             else '') +
          f"\ndevice: {meth['device']}, torch "
          f"{meth['torch']}{cuda}, {meth['amp_dtype']}"
          f"{', channels_last' if meth['channels_last'] else ''}\n"
          f"batch {meth['batch']} per domain, crops "
          f"{meth['shapes']}, methods {meth['methods'] or ['(none)']}")
    with_data = bool(meth['dataloader'])
    with_growth = meth.get('step_memory_growth_mb') is not None and \
        base.get('step_memory_growth_mb') is not None
    print(f"{'variant':<14}{'s/iter':>10}{'peak MB':>12}"
          + (f"{'before MB':>12}{'growth MB':>12}" if with_growth else '')
          + (f"{'data s/iter':>14}" if with_data else ''))
    for name, r in (('baseline' if baseline else 'source only', base),
                    ('method', meth)):
        data = f"{r['dataloader']['data_s_per_iter']:>14.3f}" \
            if with_data else ''
        growth = f"{r['memory_before_steps_mb']:>12.0f}" \
            f"{r['step_memory_growth_mb']:>12.0f}" if with_growth else ''
        print(f"{name:<14}{r['s_per_iter']:>10.3f}"
              f"{r['peak_memory_mb']:>12.0f}{growth}{data}")
    if with_data:
        d = meth['dataloader']
        print(f"dataloader: {d['num_workers']} workers, persistent_workers="
              f"{d['persistent_workers']}, pin_memory={d['pin_memory']}"
              + (f", demo data {d['demo_data']}" if d['demo_data'] else ''))
    growth = f"{result['memory_growth_ratio']:>23.2f}x" if with_growth \
        else ''
    print(f"{'ratio':<14}{result['time_ratio']:>9.2f}x"
          f"{result['memory_ratio']:>11.2f}x{growth}  ({meth['memory_kind']}"
          + ('; growth = peak during the steps - memory before the first '
             'step' if with_growth else '') + ')')
    print(f"CPU time per step (this process): {base['cpu_s_per_iter']:.3f} "
          f"vs {meth['cpu_s_per_iter']:.3f} s, ratio "
          f"{result['cpu_time_ratio']:.2f}x"
          + (' (per run ' + ', '.join(f'{r:.2f}x' for r in
                                      result['cpu_time_ratios']) + ')'
             if len(result['cpu_time_ratios']) > 1 else ''))
    if len(result['time_ratios']) > 1:
        print('per run: time ' + ', '.join(
            f'{r:.2f}x' for r in result['time_ratios']) + '; peak memory '
            + ', '.join(f'{r:.2f}x' for r in result['memory_ratios'])
            + ('; growth ' + ', '.join(
                f'{r:.2f}x' for r in result['memory_growth_ratios'])
               if with_growth else ''))


def main():
    args = parse_args()
    if args.variant:
        run_worker(args)
        return
    if args.repeats < 1:
        raise SystemExit('--repeats must be >= 1')
    if args.baseline and not osp.isfile(args.baseline):
        raise SystemExit(f'--baseline {args.baseline}: no such config file.')
    dtypes = list(dict.fromkeys(args.amp_dtype))
    base_key = 'baseline' if args.baseline else 'source_only'
    runs = {d: {base_key: [], 'method': []} for d in dtypes}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            order = [base_key, 'method'] if rep % 2 == 0 else \
                ['method', base_key]
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
    results = [summarize(args.config, d, runs[d], args.baseline)
               for d in dtypes]
    for result in results:
        report(result)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results[0] if len(results) == 1 else
                      dict(config=args.config, by_dtype=results), f,
                      indent=2)


if __name__ == '__main__':
    main()
