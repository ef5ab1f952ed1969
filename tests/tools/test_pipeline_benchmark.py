"""tools/benchmark_pipeline.py's measurements on the tiny set: rates and the per-part times."""

import json
import os
import subprocess
import sys

from conftest import REPO
from conftest import tiny_config
import cv2
import numpy as np
import pytest

from hpe_jax import default_config
from tools.lib import benchmark_pipeline


def test_pipeline_rates_count_images_per_core(data_dir):
  config = tiny_config(data_dir, depth=True)
  run = default_config.describe(config)
  lines = list(benchmark_pipeline.pipeline_rates(run, [0], batches=2, repeats=1))
  assert [line['workers'] for line in lines] == [0]
  line = lines[0]
  assert line['measure'] == 'pipeline' and line['train_3d'] == line['train_2d']
  # 0 workers: data.threads (1) threads on as many cores
  assert line['images_per_s_per_core'] == line['images_per_s'] > 0


def test_part_times_cover_the_whole_and_restore_opencvs_threads(data_dir):
  config = tiny_config(data_dir, depth=True)
  threads = cv2.getNumThreads()
  line = benchmark_pipeline.part_times(default_config.describe(config), images=32)
  assert cv2.getNumThreads() == threads
  times = line['ms_per_image']
  parts = ('read', 'parse', 'decode', 'warp_and_labels', 'batch')
  assert set(times) == {*parts, 'rest', 'whole'}
  assert all(times[k] > 0 for k in parts) and times['whole'] > 0
  assert np.isclose(sum(times[k] for k in (*parts, 'rest')), times['whole'], atol=0.005)
  assert line['source'] == config.data.train_2d  # the first 2D source


@pytest.mark.slow
def test_command_prints_one_json_line_per_measurement(data_dir):
  result = subprocess.run(
    [
      sys.executable,
      'tools/benchmark_pipeline.py',
      f'--config={REPO}/configs/finetune.py',
      f'--config.data.data_dir={data_dir}',
      '--config.data.train_2d=synthetic_humans/tiny',
      '--config.data.train_3d=synthetic_humans/tiny',
      '--config.data.image_size=64',
      '--config.data.eval=',
      '--config.init_from=',
      '--workers=0',
      '--batches=2',
      '--repeats=1',
      '--noloop',
      '--parts=16',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert [line['measure'] for line in lines] == ['pipeline', 'parts']
  assert lines[0]['images_per_s_per_core'] > 0 and lines[1]['ms_per_image']['whole'] > 0


@pytest.mark.slow
def test_gpu_script_time_boxes_every_command_and_needs_an_output_dir(tmp_path):
  script = os.path.join(REPO, 'tools', 'gpu_benchmarks.sh')
  (tmp_path / 'realdata' / 'lspet').mkdir(parents=True)
  # Every command is cut off, the builds before they read anything.
  env = {**os.environ, 'HPE_GPU_LIMIT_S': '0.2', 'HPE_REALDATA': str(tmp_path / 'realdata')}
  result = subprocess.run(
    ['bash', script, str(tmp_path / 'out')], cwd=REPO, env=env, capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr  # one command's failure does not stop the rest
  log = (tmp_path / 'out' / 'log.txt').read_text()
  assert log.count('exit code 124') == 5  # 2 steps, 2 builds, the pipeline
  assert sorted(p.name for p in (tmp_path / 'out').glob('*.jsonl')) == [
    'pipeline_bf16.jsonl',
    'step_bf16.jsonl',
    'step_fp32.jsonl',
  ]
  result = subprocess.run(['bash', script], cwd=REPO, capture_output=True, text=True)
  assert result.returncode != 0 and 'usage: bash tools/gpu_benchmarks.sh OUT_DIR' in result.stderr


def test_gpu_script_stops_at_once_without_the_real_images(tmp_path):
  env = {**os.environ, 'HPE_REALDATA': str(tmp_path / 'nowhere')}
  result = subprocess.run(
    ['bash', os.path.join(REPO, 'tools', 'gpu_benchmarks.sh'), str(tmp_path / 'out')],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 2
  assert (
    result.stderr.startswith(f'no {tmp_path}/nowhere/lspet: ')
    and 'set HPE_REALDATA' in result.stderr
  )
  assert not (tmp_path / 'out').exists()  # nothing measured, nothing written
