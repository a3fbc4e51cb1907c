"""The measurement scripts behind the README's performance table run and
report what they say (tiny sizes; the timings themselves are not checked)."""
import json
import os
import os.path as osp
import statistics
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_script(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable] + args, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_benchmark_alternating_repeats(tmp_path):
    out = tmp_path / 'bench.json'
    proc = run_script([
        'tools/analysis/benchmark.py', 'configs/demo/cdga.py', '--crop',
        '64', '64', '--batch-size', '1', '--warmup', '0', '--iters', '1',
        '--repeats', '2', '--json',
        str(out)
    ])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # run 1: source-only first; run 2: the method first
    starts = [line.split()[1] for line in proc.stdout.splitlines()
              if line.startswith('[benchmark]')]
    assert starts == ['source_only', 'method', 'method', 'source_only']
    result = json.loads(out.read_text())
    assert result['method']['methods'] == ['CDGA']
    assert result['source_only']['methods'] == []
    assert result['method']['shapes'] == {
        'source': [64, 64], 'target': [64, 64]}
    runs = result['runs']
    assert len(runs['source_only']) == len(runs['method']) == 2
    ratios = [m['s_per_iter'] / b['s_per_iter']
              for b, m in zip(runs['source_only'], runs['method'])]
    assert result['time_ratios'] == ratios
    assert result['time_ratio'] == statistics.median(ratios)
    assert result['method']['s_per_iter'] == statistics.median(
        r['s_per_iter'] for r in runs['method'])
    assert result['memory_ratio'] > 0


def test_association_memory_tool(tmp_path):
    out = tmp_path / 'mem.json'
    proc = run_script([
        'tools/analysis/association_memory.py', '--num-pixels', '256',
        '--feat-dim', '32', '--levels', 'feat', '--chunk-size', '64',
        '--json',
        str(out)
    ])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {(r['level'], r['mode']) for r in results} == {
        ('feat', 'chunked'), ('feat', 'full')}
    assert all(r['num_pixels'] >= 256 for r in results)
