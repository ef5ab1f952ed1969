"""Evaluating trained runs (evaluation.trained_run and its CLI) and the prediction readout
(inference.readout): flip test geometry, saved results, reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO
from conftest import TINY_DATASET
from conftest import tiny_config
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import joints
from hpe_jax import targets
from hpe_jax.evaluation import report
from hpe_jax.evaluation import trained_run
from hpe_jax.inference import readout
from hpe_jax.training import step as step_lib

HEADLINE = ('pck', 'pckh', 'mpjpe', 'pa_mpjpe')


def test_unmirror_maps_mirrored_targets_onto_the_originals():
  """Heatmaps rendered for the mirrored joints (x -> S - 1 - x, left/right swapped), unmirrored,
  are the heatmaps of the original joints: the flip test's geometry is exact."""
  size, stride = 16, 4
  xy = jax.random.uniform(jax.random.key(0), (2, joints.NUM_JOINTS, 2), minval=4, maxval=60)
  mask = jnp.ones(xy.shape[:2])
  mirrored = xy.at[..., 0].set(size * stride - 1 - xy[..., 0])[:, joints.MPII_FLIP]
  render = lambda p: targets.gaussian_heatmaps(targets.input_to_heatmap(p, stride), mask, size, 2.0)
  depth = jax.random.normal(jax.random.key(1), (2, joints.NUM_JOINTS))
  unmirrored = readout.unmirror_outputs(
    {'heatmaps': render(mirrored)[None], 'depth': depth[:, joints.MPII_FLIP]}
  )
  np.testing.assert_allclose(unmirrored['heatmaps'][0], render(xy), atol=1e-6)
  np.testing.assert_array_equal(unmirrored['depth'], depth)


@pytest.mark.parametrize('subpixel', [False, True])
def test_flip_test_prediction_is_mirror_equivariant(data_dir, subpixel):
  """With the flip test, predicting on a mirrored image gives the mirrored prediction exactly;
  with the integer argmax it is the reference's readout, which `reference_readout` adds as
  legacy_xy / legacy_depth whatever flip_test and subpixel say."""
  config = tiny_config(data_dir, depth=True)
  defs, state = step_lib.init_state(config)
  images = jax.random.randint(jax.random.key(2), (2, 64, 64, 3), 0, 256).astype(jnp.uint8)
  predict = jax.jit(
    lambda s, i: readout.predict_step(
      defs.eval_model, s, i, dtype=jnp.float32, flip_test=True, subpixel=subpixel
    )
  )
  plain = predict(state['model'], images)
  mirrored = predict(state['model'], images[:, :, ::-1])
  np.testing.assert_allclose(
    mirrored['pred_xy'][..., 0], 63 - plain['pred_xy'][:, joints.MPII_FLIP, 0], atol=1e-4
  )
  np.testing.assert_allclose(
    mirrored['pred_xy'][..., 1], plain['pred_xy'][:, joints.MPII_FLIP, 1], atol=1e-4
  )
  np.testing.assert_allclose(
    mirrored['pred_depth'], plain['pred_depth'][:, joints.MPII_FLIP], atol=1e-5
  )
  if not subpixel:  # flip test + argmax: the reference's readout, which legacy_* always give
    for flip_test, sub in ((False, True), (True, True)):
      other = jax.jit(
        lambda s, i, f=flip_test, p=sub: readout.predict_step(
          defs.eval_model, s, i, dtype=jnp.float32, flip_test=f, subpixel=p, reference_readout=True
        )
      )(state['model'], images)
      np.testing.assert_array_equal(other['legacy_xy'], plain['pred_xy'])
      np.testing.assert_allclose(other['legacy_depth'], plain['pred_depth'], atol=1e-6)
    assert 'legacy_xy' not in plain


def test_evaluate_run_saves_the_results_and_each_readout(tiny_depth_run):
  results = trained_run.evaluate_run(
    tiny_depth_run, [TINY_DATASET], readout_ablation=True, log=lambda line: None
  )
  ((name, result),) = results.items()
  assert name == f'{TINY_DATASET}:test' and result['num_examples'] == 32
  with open(os.path.join(tiny_depth_run, 'eval', 'synthetic_humans_tiny_test.json')) as f:
    saved = json.load(f)
  assert saved['step'] == 6 and saved['flip_test'] and saved['subpixel']
  for key in HEADLINE:
    assert saved[key] == pytest.approx(result[key])
    # The default readout is flip test + sub-pixel: the ablation's row of that name agrees.
    assert result['readout']['flip+subpixel'][key] == pytest.approx(result[key], rel=1e-6)
  # The training run's own final evaluation (same weights, same readout) agrees too.
  with open(os.path.join(tiny_depth_run, 'metrics.jsonl')) as f:
    final = [json.loads(line) for line in f][-1]
  for key in HEADLINE:
    assert final[key] == pytest.approx(result[key], rel=1e-5), key
  # The readouts differ (flip test changes the predictions).
  assert result['readout']['argmax']['mpjpe'] != result['readout']['flip+subpixel']['mpjpe']
  with open(os.path.join(tiny_depth_run, 'eval', 'synthetic_humans_tiny_test.md')) as f:
    table = f.read()
  assert f'| MPJPE (P1), mm | {result["mpjpe"]:.4g} |' in table and '| argmax |' in table
  assert 'readout: flip test + sub-pixel)' in table.splitlines()[0]
  # The legacy figure is scored from the reference's readout (integer argmax with the flip test)
  # whatever the configured one: it equals the 'flip' row's, and the other rows keep their own.
  assert result['mpjpe_legacy'] == pytest.approx(result['readout']['flip']['mpjpe_legacy'])
  assert result['readout']['flip+subpixel']['mpjpe_legacy'] != result['mpjpe_legacy']
  assert result['readout']['argmax']['mpjpe_legacy'] != result['mpjpe_legacy']
  assert final['mpjpe_legacy'] == pytest.approx(result['mpjpe_legacy'], rel=1e-5)
  assert "| MPJPE, the reference's legacy figure, mm |" in table


def test_readout_flags_select_the_readout(tiny_depth_run):
  # Batches of 12 (the run trained with 8): the last one is padded, and the scores are the same.
  results = trained_run.evaluate_run(
    tiny_depth_run,
    [TINY_DATASET],
    flip_test=False,
    subpixel=False,
    limit=16,
    batch_size=12,
    log=lambda line: None,
  )
  result = results[f'{TINY_DATASET}:test']
  assert result['num_examples'] == 16
  ablation = trained_run.evaluate_run(
    tiny_depth_run, [TINY_DATASET], readout_ablation=True, limit=16, log=lambda line: None
  )
  argmax = ablation[f'{TINY_DATASET}:test']['readout']['argmax']
  for key in HEADLINE:
    assert result[key] == pytest.approx(argmax[key], rel=1e-6)


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path, tiny_depth_run):
  for args, message in (
    ([f'--workdir={tmp_path}'], 'no config.json'),
    ([f'--workdir={tiny_depth_run}', '--dataset=no_such_dataset'], 'no_such_dataset'),
    ([f'--workdir={tiny_depth_run}', '--limit=-5'], '--limit=-5'),
    ([f'--workdir={tiny_depth_run}', '--batch_size=0'], '--batch_size=0'),
  ):
    run = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.commands.evaluate', *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and 'Traceback' not in run.stderr


def test_markdown_per_action_table_averages_over_actions():
  row = lambda mpjpe, n: {'mpjpe': mpjpe, 'pa_mpjpe': mpjpe / 2, 'num_examples': n}
  results = {
    'mpjpe': 60.0,
    'pa_mpjpe': 30.0,
    'mpjpe_mean_pose': 300.0,
    'num_examples': 4,
    'images_per_s': 10.0,
    'per_action': {'Directions': row(50.0, 1), 'Walking': row(70.0, 3)},
  }
  table = report.markdown('h36m', results)
  assert '| MPJPE (P1), mm | 60 | 300 |' in table
  assert '| Walking | 3 | 70 | 35 |' in table
  assert '| mean over actions | 4 | 60 | 30 |' in table  # (50 + 70) / 2, not frame-weighted
