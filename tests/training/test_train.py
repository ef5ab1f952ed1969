"""Training end to end: stages, grafting, other models and dtypes, CLI errors, the loop's parts."""

import dataclasses
import os
import re
import subprocess

from conftest import TINY_DATASET
from conftest import metrics_records
from conftest import tiny_config
from conftest import tiny_main_command
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import models
from hpe_jax.models import layers
from hpe_jax.models import xla_cpu
from hpe_jax.storage import checkpoint
from hpe_jax.training import train


def test_pretrain_logs_losses_and_2d_metrics(tiny_2d_run):
  records = metrics_records(tiny_2d_run)
  steps = [r for r in records if 'loss' in r]
  assert [r['step'] for r in steps] == list(range(1, 7))
  assert all(np.isfinite(r['loss']) and r['loss'] > 0 for r in steps)
  final = records[-1]
  assert final['split'] == f'{TINY_DATASET}:test' and final['num_examples'] == 32
  assert 0 <= final['pck'] <= 1 and 0 <= final['pck_mean_pose'] <= 1
  assert 'mpjpe' not in final  # a 2D model has no depth
  assert sorted(os.listdir(os.path.join(tiny_2d_run, 'checkpoints'))) == ['3', '6']


def test_finetune_grafts_the_2d_weights_and_reports_3d_metrics(tiny_2d_run, data_dir, tmp_path):
  config = tiny_config(data_dir, depth=True, init_from=tiny_2d_run)
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  final = metrics_records(workdir)[-1]
  for key in (
    'mpjpe',
    'pa_mpjpe',
    'mpjpe_mean_pose',
    'pa_mpjpe_mean_pose',
    'pck',
    'pckh',
    'mpjpe_visible',
    'mpjpe_occluded',
  ):
    assert np.isfinite(final[key]), key
  assert final['pa_mpjpe'] <= final['mpjpe']
  assert 0 <= final['auc_3d'] <= final['pck3d_150'] <= 1
  assert 'per_action' not in final  # the synthetic people do no named actions
  steps = [r for r in metrics_records(workdir) if 'loss' in r]
  assert all('depth_loss' in r and 'geometric_loss' in r for r in steps)


@pytest.mark.parametrize(
  'overrides',
  [
    # Each compiles a train step of its own: slow. The fast suite checks their forward passes
    # (tests/models/test_models.py) and trains resnet18 in float32. One stack: the loss over
    # several stacks is tests/test_losses.py's, and two stacks compile twice as long.
    pytest.param(
      {'model.name': 'hourglass', 'model.num_stacks': 1, 'model.hourglass_features': 16},
      id='hourglass',
      marks=pytest.mark.slow,
    ),
    pytest.param({'model.dtype': 'bfloat16'}, id='bfloat16', marks=pytest.mark.slow),
  ],
)
def test_other_models_and_bfloat16_train_from_scratch(data_dir, tmp_path, overrides):
  config = tiny_config(data_dir, depth=True, **{'train.num_steps': 2, **overrides})
  final = train.train_and_evaluate(config, str(tmp_path))
  steps = [r for r in metrics_records(tmp_path) if 'loss' in r]
  assert len(steps) == 2 and all(np.isfinite(r['depth_loss']) for r in steps)
  assert np.isfinite(final['mpjpe'])


def _model_state(config, depth):
  model = models.create_model(config.model, with_depth=depth, rngs=nnx.Rngs(123))
  return nnx.to_pure_dict(nnx.state(model))


def _flat(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}/'))
    else:
      out[f'{prefix}{key}'] = np.asarray(value)
  return out


def test_graft_copies_every_shared_weight_and_keeps_fresh_depth_parts(tiny_2d_run, data_dir):
  config = tiny_config(data_dir)
  saved = _flat(_model_state(config, False))  # the shapes; values come from the checkpoint
  fresh = _model_state(config, True)
  grafted, new_keys = checkpoint.graft(tiny_2d_run, fresh)
  grafted, fresh = _flat(grafted), _flat(fresh)
  assert new_keys == ['depth_conv/bias', 'depth_conv/kernel']
  mngr = checkpoint.manager(os.path.join(tiny_2d_run, 'checkpoints'), read_only=True)
  trained = _flat(
    mngr.restore(
      6, args=checkpoint.ocp.args.Composite(state=checkpoint.ocp.args.StandardRestore())
    ).state['model']
  )
  assert set(trained) == set(saved)
  for key in saved:
    np.testing.assert_array_equal(grafted[key], trained[key], err_msg=key)
  for key in new_keys:
    np.testing.assert_array_equal(grafted[key], fresh[key])
  assert not np.array_equal(grafted['heatmap_conv/kernel'], fresh['heatmap_conv/kernel'])


def test_graft_onto_another_architecture_lists_the_disagreements(tiny_2d_run, data_dir):
  config = tiny_config(data_dir, **{'model.name': 'resnet34'})
  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.graft(tiny_2d_run, _model_state(config, True))
  message = str(error.value)
  assert 'missing from the checkpoint' in message and 'backbone/layer1/2/conv1/kernel' in message
  wider = tiny_config(data_dir, **{'model.width': 16})
  with pytest.raises(checkpoint.CheckpointError, match='shape mismatches: .*stem_conv/kernel'):
    checkpoint.graft(tiny_2d_run, _model_state(wider, True))


def test_graft_from_a_path_without_checkpoints_says_what_to_do(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match='holds no checkpoint.*init_from'):
    checkpoint.find_checkpoint(str(tmp_path))


@pytest.mark.parametrize(
  'override, message',
  [
    ('--config.model.name=resnet19', "model.name='resnet19' is not one of"),
    ('--config.data.train_2d=nonexistent', "unknown dataset 'nonexistent'"),
    ('--config.init_from=/no/such/run', "'/no/such/run' holds no checkpoint. Train the 2D"),
    ('--config.data.image_size=100', 'data.image_size=100 must be a multiple of 32'),
    ('--workdir=/proc/hpe_jax_run', '--workdir=/proc/hpe_jax_run cannot be created'),
  ],
)
@pytest.mark.slow
def test_cli_errors_are_one_clear_message(data_dir, tmp_path, override, message):
  result = subprocess.run(
    tiny_main_command(tmp_path / 'run', data_dir, override), capture_output=True, text=True
  )
  assert result.returncode == 2
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


def ynn_fused_ops(hlo: str) -> set[str]:
  """The HLO opcodes inside the computations a compiled module hands to YNNPACK."""
  bodies = dict(re.findall(r'^%(\S+) .*?\{\n(.*?)\n\}', hlo, re.M | re.S))
  called = re.findall(r'calls=%([^,\s]+),.*"kind":"__ynn_fusion"', hlo)
  return {op for name in called for op in re.findall(r' = \S+ ([a-z-]+)\(', bodies[name])}


def test_cpu_steps_run_convolutions_on_xla_and_keep_ynnpack_dots():
  """xla_cpu.compiler_options takes convolutions away from YNNPACK on CPU (its kernels were the
  slower ones here) and leaves it the dots; a jaxlib that renames the option fails here."""
  mesh = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  options = xla_cpu.compiler_options(mesh)
  assert options  # the CPU mesh gets them

  def conv_then_dot(x, kernel, matrix):  # ResNet-18's layer1 shapes
    return layers.conv2d(x, kernel, (1, 1), ((1, 1), (1, 1))).reshape(-1, 64) @ matrix

  args = (jnp.ones((8, 32, 32, 64)), jnp.ones((3, 3, 64, 64)), jnp.ones((64, 64)))
  hlo = jax.jit(conv_then_dot, compiler_options=options).lower(*args).compile().as_text()
  assert ' convolution(' in hlo
  assert 'dot' in ynn_fused_ops(hlo) and 'convolution' not in ynn_fused_ops(hlo)


def test_schedule_logs_evaluates_and_checkpoints_when_due():
  schedule = train._Schedule(
    num_steps=10, log_every=4, eval_every=3, checkpoint_every=5, evaluates=True
  )
  steps = range(1, 11)
  assert [s for s in steps if schedule.log_due(s)] == [4, 8, 10]  # and the last step
  assert [s for s in steps if schedule.eval_due(s)] == [3, 6, 9]  # the last step's: after the loop
  assert [s for s in steps if schedule.checkpoint_due(s)] == [5]  # step 10's: after its evaluation
  unevaluated = dataclasses.replace(schedule, evaluates=False)
  assert not any(unevaluated.eval_due(s) for s in steps)
  assert [s for s in steps if unevaluated.checkpoint_due(s)] == [5, 10]
  assert not any(dataclasses.replace(schedule, eval_every=0).eval_due(s) for s in steps)


def test_logging_window_means_its_steps_and_times_all_but_the_first():
  def metrics(loss):
    return {
      'loss': jnp.float32(loss),
      'heatmap_loss': jnp.float32(loss / 2),
      'grad_norm': jnp.float32(1.0),
      'finite': jnp.bool_(True),
    }

  window = train._LoggingWindow(
    num_steps=10,
    batch_size=8,
    learning_rate=lambda step: 0.1 * step,
    clock=iter([100, 102]).__next__,
  )
  for loss in (1.0, 3.0):
    window.add(metrics(loss))
  record, line = window.close(2)
  # The first window includes compilation: no rate, no ETA.
  assert record == {'step': 2, 'loss': 2.0, 'heatmap_loss': 1.0, 'grad_norm': 1.0, 'lr': 0.1}
  assert line == 'step 2/10 | loss 2.0000e+00 (heatmap 1.000e+00)'
  for loss in (1.0, 2.0, 3.0, 6.0):
    window.add(metrics(loss))
  record, line = window.close(6)
  assert record['loss'] == 3.0 and record['lr'] == 0.5
  assert record['images_per_s'] == 16.0  # 4 steps of 8 images in 2 s
  assert line == 'step 6/10 | loss 3.0000e+00 (heatmap 1.500e+00) | 16.0 img/s | ETA 0m02s'
