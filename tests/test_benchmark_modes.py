"""benchmark.py's GPU-oriented modes, exercised on CPU: several precisions
in one call (--amp-dtype float32 bfloat16), all variants in one process
(--same-process), the real dataloader on the converted demo data with data
time per iteration (--dataloader --demo-data), and benchmark_table.py's
Markdown/JSON report; one config against another (--baseline) at a reduced
crop that scales HRDA's detail crop (--crop S), options for one side only
(--method-cfg-options, e.g. the encoder's with_cp) and the memory growth
during the training steps."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis'))
from benchmark import scale_hrda_crops, use_demo_data  # noqa: E402


def run(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable] + args, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dataloader_mode_two_precisions_one_process_and_table(tmp_path):
    demo = tmp_path / 'demo'
    proc = run(['tools/make_demo_data.py', str(demo), '--num-train', '3',
                '--num-val', '1', '--nproc', '1'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / 'bench.json'
    proc = run([
        'tools/analysis/benchmark.py', 'configs/demo/advent.py',
        '--batch-size', '1', '--warmup', '1', '--iters', '1',
        '--amp-dtype', 'float32', 'bfloat16', '--same-process',
        '--dataloader', '--demo-data', str(demo), '--num-workers', '0',
        '--json', str(out)
    ])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one worker process for the four (variant, precision) pairs
    starts = [line for line in proc.stdout.splitlines()
              if line.startswith('[benchmark]')]
    assert len(starts) == 1 and 'method bfloat16' in starts[0]
    result = json.loads(out.read_text())
    assert [r['amp_dtype'] for r in result['by_dtype']] == [
        'float32', 'bfloat16']
    for one in result['by_dtype']:
        for variant in ('source_only', 'method'):
            r = one[variant]
            assert r['amp_dtype'] == one['amp_dtype']
            assert r['memory_kind'] == 'peak_rss_cumulative'
            data = r['dataloader']
            assert data['demo_data'] == str(demo)
            assert data['num_workers'] == 0
            assert data['data_s_per_iter'] > 0
            assert all(math.isfinite(x) for x in r['losses'])
            assert r['shapes'] == {'source': [128, 128],
                                   'target': [128, 128]}
        assert one['method']['methods'] == ['AdvEnt']
        assert one['time_ratio'] > 0
    # the float32 and bfloat16 losses of the same batches are close
    f32 = result['by_dtype'][0]['method']['losses'][0]
    b16 = result['by_dtype'][1]['method']['losses'][0]
    assert abs(f32 - b16) <= 0.02 + 0.05 * abs(f32)
    assert 'data s/iter' in proc.stdout

    md, js = tmp_path / 'table.md', tmp_path / 'table.json'
    proc = run(['tools/analysis/benchmark_table.py', str(out),
                '--markdown', str(md), '--json', str(js)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in md.read_text().splitlines()
            if line.startswith('| `configs/demo/advent.py`')]
    assert len(rows) == 2
    assert '| float32 |' in rows[0] and '| bfloat16 |' in rows[1]
    assert rows[0].rstrip(' |').split('|')[-1].strip() != '–'  # data time
    table = json.loads(js.read_text())
    assert len(table['results']) == 2 and table['cuda'] == ['None']


def test_demo_data_roots():
    cfg = dict(type='UDADataset',
               source=dict(type='GTAVDataset', data_root='data/gta'),
               target=dict(type='CityscapesDataset',
                           data_root='data/cityscapes'))
    use_demo_data(cfg, '/d')
    assert cfg['source']['data_root'] == '/d/gta'
    assert cfg['target']['data_root'] == '/d/cityscapes'
    with pytest.raises(SystemExit, match='SynthiaDataset'):
        use_demo_data(dict(type='SynthiaDataset', data_root='x'), '/d')


def test_baseline_config_reduced_crop_and_one_sided_options(tmp_path):
    """HRDA (demo) against DAFormer (demo) at a 64 crop: the HRDA detail
    crop follows the crop (64 of 128 -> 32 of 64), the with_cp option
    reaches only CONFIG, and both sides report the memory before the first
    step and the growth during the steps."""
    out = tmp_path / 'vs.json'
    proc = run([
        'tools/analysis/benchmark.py', 'configs/demo/hrda.py',
        '--baseline', 'configs/demo/daformer.py', '--crop', '64',
        '--batch-size', '1', '--warmup', '1', '--iters', '1',
        '--same-process',
        '--method-cfg-options', 'model.segmentor.backbone.with_cp=True',
        '--json', str(out)
    ])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert 'source_only' not in result
    assert result['baseline_config'] == 'configs/demo/daformer.py'
    base, meth = result['baseline'], result['method']
    assert base['config'] == 'configs/demo/daformer.py'
    assert meth['config'] == 'configs/demo/hrda.py'
    assert (base['model'], meth['model']) == ('EncoderDecoder',
                                              'HRDAEncoderDecoder')
    assert base['hr_crop_size'] is None and meth['hr_crop_size'] == [[32, 32]]
    assert (base['with_cp'], meth['with_cp']) == (False, True)
    for r in (base, meth):
        assert r['shapes'] == {'source': [64, 64], 'target': [64, 64]}
        assert r['methods'] == ['SelfTraining']
        assert all(math.isfinite(x) for x in r['losses'])
        assert r['cpu_s_per_iter'] > 0
        # the step peak is reset per variant even in one process
        assert 0 < r['memory_before_steps_mb'] <= r['step_peak_memory_mb']
        assert r['step_memory_growth_mb'] == pytest.approx(
            r['step_peak_memory_mb'] - r['memory_before_steps_mb'])
    assert result['cpu_time_ratio'] == pytest.approx(
        meth['cpu_s_per_iter'] / base['cpu_s_per_iter'])
    assert result['memory_growth_ratio'] == pytest.approx(
        meth['step_memory_growth_mb'] / base['step_memory_growth_mb'])
    assert 'baseline: configs/demo/daformer.py' in proc.stdout
    assert 'growth = peak during the steps' in proc.stdout


def test_crop_scales_hrda_detail_crop():
    from mmengine.config import Config
    pipeline = [dict(type='RandomCrop', crop_size=(1024, 1024))]
    cfg = Config(dict(
        model=dict(type='UDASegmentor', segmentor=dict(
            type='HRDAEncoderDecoder', hr_crop_size=[512, 512])),
        train_dataloader=dict(dataset=dict(
            type='UDADataset', source=dict(pipeline=pipeline)))))
    assert scale_hrda_crops(cfg, (512, 512)) == [[256, 256]]
    assert cfg.model.segmentor.hr_crop_size == [256, 256]
    cfg.model.segmentor.hr_crop_size = [512, 512]
    assert scale_hrda_crops(cfg, (384, 512)) == [[192, 256]]
    cfg.model.segmentor.hr_crop_size = [512, 512]
    with pytest.raises(SystemExit, match='keeps it whole'):
        scale_hrda_crops(cfg, (513, 513))  # 256.5 pixels
