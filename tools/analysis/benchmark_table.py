"""Collect ``benchmark.py --json`` results into one Markdown table and one
JSON file (the device check's report).

    python tools/analysis/benchmark_table.py RESULT.json [...] \
        --markdown OUT.md --json OUT.json [--title TEXT]

One row per result: config, precision, crops and batch, source-only and
method seconds per iteration, their ratio, peak memory of both and its
ratio, and the data time per iteration when the result was measured with
``--dataloader``. The header names the device, torch and CUDA versions.
"""
import argparse
import json
import os.path as osp


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('results', nargs='+', help='benchmark.py --json files')
    parser.add_argument('--markdown', required=True)
    parser.add_argument('--json', required=True)
    parser.add_argument('--title', default='Step time and peak memory')
    return parser.parse_args(argv)


def _crops(result):
    shapes = result['method']['shapes']
    crops = sorted({f'{h}×{w}' for h, w in shapes.values()})
    return ', '.join(crops)


def row(result):
    # the source-only variant, or the --baseline config's run
    base = result.get('source_only') or result['baseline']
    meth = result['method']
    data = meth.get('dataloader')
    memory_kind = 'MiB' if meth['memory_kind'] == 'cuda_max_allocated' \
        else 'MiB RSS'
    cells = [
        f"`{result['config']}`",
        result.get('amp_dtype', meth.get('amp_dtype', 'float32')),
        f"{meth['batch']}+{meth['batch']} @ {_crops(result)}",
        f"{base['s_per_iter']:.3f}",
        f"{meth['s_per_iter']:.3f}",
        f"{result['time_ratio']:.2f}×",
        f"{base['peak_memory_mb']:.0f} {memory_kind}",
        f"{meth['peak_memory_mb']:.0f} {memory_kind}",
        f"{result['memory_ratio']:.2f}×",
        f"{data['data_s_per_iter']:.3f}" if data else '–',
    ]
    return '| ' + ' | '.join(cells) + ' |'


HEADER = ('| config | precision | batch @ crop | source-only s/iter | '
          'method s/iter | time ratio | source-only peak | method peak | '
          'memory ratio | data s/iter |\n'
          '|---|---|---|---|---|---|---|---|---|---|')


def main(argv=None):
    args = parse_args(argv)
    results = []
    for path in args.results:
        with open(path) as f:
            result = json.load(f)
        # one precision, or several (--amp-dtype A B: {'by_dtype': [...]})
        for one in result.get('by_dtype', [result]):
            one['file'] = osp.basename(path)
            results.append(one)
    devices = sorted({r['method']['device'] for r in results})
    torches = sorted({r['method']['torch'] for r in results})
    cudas = sorted({str(r['method'].get('cuda')) for r in results})
    lines = [
        f'## {args.title}', '',
        f"Device: {', '.join(devices)}; torch {', '.join(torches)}; "
        f"CUDA {', '.join(cudas)}.", '',
        'Median seconds per training iteration after warm-up; peak memory '
        '= torch.cuda.max_memory_allocated on GPU (peak RSS on CPU); '
        'ratios = method / source-only (same model, crop and batch).', '',
        HEADER
    ] + [row(r) for r in results]
    with open(args.markdown, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with open(args.json, 'w') as f:
        json.dump(dict(devices=devices, torch=torches, cuda=cudas,
                       results=results), f, indent=2)
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
