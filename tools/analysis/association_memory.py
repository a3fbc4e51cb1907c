"""Peak memory of PLCA's cycle association loss: chunked vs full matrices.

Measures one forward + backward of :class:`CycleAssociationLoss` for one
(source, target) pair of N pixels each (default N = 16,384: a 1024×1024
crop at stride 8), at the feature level (cosine, C channels), the classifier
level (KL, K classes) or both, with ``chunk_size=<c>`` and with the full
N×N matrices (``chunk_size=None``).

- With a GPU: ``torch.cuda.max_memory_allocated`` minus the memory
  allocated before the forward (the inputs).
- Without: the peak resident set size (``ru_maxrss``) of a fresh
  subprocess per setting, minus its RSS after the inputs were created.

"extra" is that difference: what the loss adds on top of its inputs
(intermediates, saved tensors, gradients of the inputs). Example::

    python tools/analysis/association_memory.py --num-pixels 16384
    python tools/analysis/association_memory.py --num-pixels 4096 \\
        --levels feat --modes full
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

LEVELS = ('feat', 'cls', 'both')
MODES = ('chunked', 'full')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--num-pixels', type=int, default=16384,
        help='pixels per image N (rounded to an h×w grid; default 16384)')
    parser.add_argument(
        '--feat-dim', type=int, default=2048,
        help='feature channels C of the feature level (default 2048, '
        'DeepLab-V2 layer4)')
    parser.add_argument(
        '--num-classes', type=int, default=19,
        help='classes K of the classifier level (default 19)')
    parser.add_argument(
        '--levels', nargs='+', choices=LEVELS, default=list(LEVELS),
        help='association levels to measure (default: all)')
    parser.add_argument(
        '--modes', nargs='+', choices=MODES, default=list(MODES),
        help='chunked and/or full matrices (default: both)')
    parser.add_argument(
        '--chunk-size', type=int, default=1024,
        help='rows per block of the chunked computation (default 1024)')
    parser.add_argument(
        '--alpha', type=float, default=0.5,
        help='spatial aggregation weight (default 0.5)')
    parser.add_argument(
        '--device', choices=('auto', 'cpu', 'cuda'), default='auto',
        help='auto: cuda when available')
    parser.add_argument(
        '--threads', type=int, default=None,
        help='torch CPU threads (default: torch default)')
    parser.add_argument(
        '--json', default=None, help='also write the results to this file')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def grid(num_pixels: int):
    """An h×w grid with h·w >= num_pixels, as square as possible."""
    h = max(2, int(math.isqrt(num_pixels)))
    w = max(1, math.ceil(num_pixels / h))
    return h, w


def current_rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE')


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(setting: dict) -> dict:
    """One forward+backward in this process; returns the measurements."""
    import torch
    import torch.nn.functional as F

    from mmseg_uda.models.losses.cycle_association_loss import \
        CycleAssociationLoss

    if setting.get('threads'):
        torch.set_num_threads(setting['threads'])
    device = torch.device(setting['device'])
    chunk = setting['chunk_size'] if setting['mode'] == 'chunked' else None
    level = setting['level']
    losses = []
    if level in ('feat', 'both'):
        losses.append(('feat', CycleAssociationLoss(
            metric='cos', alpha=setting['alpha'], chunk_size=chunk)))
    if level in ('cls', 'both'):
        losses.append(('cls', CycleAssociationLoss(
            metric='kl', alpha=setting['alpha'], chunk_size=chunk)))

    def make_inputs(h, w):
        g = torch.Generator().manual_seed(0)
        inputs = {}
        if level in ('feat', 'both'):
            c = setting['feat_dim']
            # post-ReLU-like features
            inputs['feat'] = [
                torch.randn(1, c, h, w, generator=g).relu_().to(device)
                .requires_grad_() for _ in range(2)
            ]
        if level in ('cls', 'both'):
            k = setting['num_classes']
            inputs['cls'] = [
                torch.randn(1, k, h, w, generator=g).mul_(3).to(device)
                .requires_grad_() for _ in range(2)
            ]
        label = torch.randint(0, setting['num_classes'], (1, h, w),
                              generator=g).to(device)
        return inputs, label

    def run(inputs, label):
        total = 0
        for name, loss_fn in losses:
            src, tgt = inputs[name]
            if name == 'cls':
                src, tgt = F.softmax(src, 1), F.softmax(tgt, 1)
            total = total + loss_fn(src, tgt, label)
        total.backward()
        return float(total)

    # Warm-up on a tiny grid (loads kernels, allocator pools).
    run(*make_inputs(4, 4))
    h, w = grid(setting['num_pixels'])
    inputs, label = make_inputs(h, w)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = current_rss_bytes()
    start = time.perf_counter()
    value = run(inputs, label)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = peak_rss_bytes()
    seconds = time.perf_counter() - start
    return dict(
        setting,
        num_pixels=h * w,
        grid=[h, w],
        loss=value,
        base_mib=base / 2**20,
        peak_mib=peak / 2**20,
        extra_mib=(peak - base) / 2**20,
        seconds=seconds)


def run_setting(setting: dict) -> dict:
    if setting['device'] == 'cuda':
        return measure(setting)
    # Fresh process per setting: ru_maxrss is a per-process peak. A fixed
    # glibc mmap threshold returns every freed block of >= 1 MiB to the OS at
    # once, so the peak RSS follows the live tensors instead of heap
    # fragmentation (glibc otherwise raises the threshold to 32 MiB).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2**20))
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--worker',
         json.dumps(setting)],
        capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return dict(setting, error=(proc.stderr.strip().splitlines()
                                    or ['killed'])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(results) -> None:
    header = (f"{'level':<6} {'mode':<8} {'N':>7} {'C/K':>6} {'chunk':>6} "
              f"{'peak MiB':>10} {'extra MiB':>10} {'time s':>8}")
    print(header)
    print('-' * len(header))
    for r in results:
        dims = {'feat': str(r['feat_dim']), 'cls': str(r['num_classes']),
                'both': f"{r['feat_dim']}+{r['num_classes']}"}[r['level']]
        chunk = r['chunk_size'] if r['mode'] == 'chunked' else '-'
        if 'error' in r:
            print(f"{r['level']:<6} {r['mode']:<8} {r['num_pixels']:>7} "
                  f"{dims:>6} {chunk:>6}  failed: {r['error']}")
            continue
        print(f"{r['level']:<6} {r['mode']:<8} {r['num_pixels']:>7} "
              f"{dims:>6} {chunk:>6} {r['peak_mib']:>10.1f} "
              f"{r['extra_mib']:>10.1f} {r['seconds']:>8.1f}")
    by_key = {(r['level'], r['mode']): r for r in results if 'error' not in r}
    for level in LEVELS:
        chunked, full = by_key.get((level, 'chunked')), \
            by_key.get((level, 'full'))
        if chunked and full and full['num_pixels'] == chunked['num_pixels']:
            ratio = chunked['extra_mib'] / max(full['extra_mib'], 1e-9)
            print(f'{level}: chunked/full extra memory = {ratio:.3f} '
                  f'(1/{1 / max(ratio, 1e-9):.1f})')


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    import torch
    device = args.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda but no CUDA device is available')
    results = []
    for level in args.levels:
        for mode in args.modes:
            setting = dict(
                level=level, mode=mode, num_pixels=args.num_pixels,
                feat_dim=args.feat_dim, num_classes=args.num_classes,
                chunk_size=args.chunk_size, alpha=args.alpha, device=device,
                threads=args.threads)
            result = run_setting(setting)
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    print(f'device: {device} ('
          + ('CUDA max_memory_allocated' if device == 'cuda' else
             'peak RSS of a fresh process per setting') + ')')
    print_table(results)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
