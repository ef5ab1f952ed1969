"""Tests of hpe_jax.losses against plain-numpy references and hand-derived gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import default_config
from hpe_jax import joints
from hpe_jax import losses

_EPS = 1e-8


def _np_smooth_l1(x):
  return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


def _np_bones(xy, z, visible, b):
  """[(group, [(a, c, w, l_e) for each counted bone])] of sample b."""
  out = []
  for group in joints.GEOMETRIC_BONE_GROUPS.values():
    bones = []
    for (a, c), w in group:
      if visible[b, a] > 0 and visible[b, c] > 0:
        squared = np.sum((xy[b, a] - xy[b, c]) ** 2) + (z[b, a] - z[b, c]) ** 2
        bones.append((a, c, w, w * np.sqrt(squared + _EPS)))
    out.append(bones)
  return out


def _np_geometric_loss(xy, z, visible, is_2d):
  total = 0.0
  for b in range(len(xy)):
    if not is_2d[b]:
      continue
    for bones in _np_bones(xy, z, visible, b):
      if bones:
        lengths = np.array([l for *_, l in bones])
        total += np.sum((lengths - lengths.mean()) ** 2) / (2 * len(bones))
  return total / len(xy)


def _np_geometric_grad(xy, z, visible, is_2d):
  """Analytic gradient. With n counted bones of mean E in a group, dL/dl_e = (l_e - E) / (n B)
  (the E terms cancel since sum_e (l_e - E) = 0), and for bone (a, c) with p = (x, y, z):
  dl_e/dp_a = w_e^2 (p_a - p_c) / l_e = -dl_e/dp_c."""
  grad_xy, grad_z = np.zeros_like(xy), np.zeros_like(z)
  for b in range(len(xy)):
    if not is_2d[b]:
      continue
    for bones in _np_bones(xy, z, visible, b):
      if not bones:
        continue
      mean = np.mean([l for *_, l in bones])
      for a, c, w, l in bones:
        dl = (l - mean) / (len(bones) * len(xy))
        grad_xy[b, a] += dl * w**2 * (xy[b, a] - xy[b, c]) / l
        grad_xy[b, c] -= dl * w**2 * (xy[b, a] - xy[b, c]) / l
        grad_z[b, a] += dl * w**2 * (z[b, a] - z[b, c]) / l
        grad_z[b, c] -= dl * w**2 * (z[b, a] - z[b, c]) / l
  return grad_xy, grad_z


def _geometric_batch(seed, batch=6):
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, 1, (batch, 16, 2))
  z = rng.normal(0, 0.2, (batch, 16))
  visible = (rng.uniform(size=(batch, 16)) < 0.8).astype(np.float64)
  is_2d = rng.uniform(size=batch) < 0.7
  is_2d[:3] = True
  visible[0] = 0  # a 2D sample without visible joints
  visible[1] = 1
  visible[1, [10, 13, 14, 3]] = 0  # one counted bone in the arms and pelvis groups: L_g = 0
  xy[2, 1], z[2, 1] = xy[2, 0], z[2, 0]  # a zero-length bone: still a finite gradient
  visible[2, :2] = 1
  is_2d[-1] = False  # a 3D sample: ignored, but counted in B
  return xy, z, visible, is_2d


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_geometric_loss_and_gradient(seed):
  xy, z, visible, is_2d = _geometric_batch(seed)
  args = tuple(jnp.asarray(a, jnp.float32) for a in (xy, z, visible)) + (jnp.asarray(is_2d),)
  loss, (grad_xy, grad_z) = jax.jit(jax.value_and_grad(losses.geometric_loss, (0, 1)))(*args)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, _np_geometric_loss(xy, z, visible, is_2d), rtol=1e-5)
  want_xy, want_z = _np_geometric_grad(xy, z, visible, is_2d)
  np.testing.assert_allclose(grad_xy, want_xy, atol=1e-6)
  np.testing.assert_allclose(grad_z, want_z, atol=1e-6)
  assert np.abs(want_z).max() > 1e-3  # the gradient is not trivially zero
  assert not np.any(grad_z[~is_2d]) and not np.any(grad_z[0])


def test_geometric_loss_finite_differences():
  xy, z, visible, is_2d = _geometric_batch(3)
  visible[:] = 1
  f = lambda z_: _np_geometric_loss(xy, z_, visible, is_2d)
  grad_z = np.zeros_like(z)
  for index in np.ndindex(*z.shape):
    dz = np.zeros_like(z)
    dz[index] = 1e-6
    grad_z[index] = (f(z + dz) - f(z - dz)) / 2e-6
  np.testing.assert_allclose(_np_geometric_grad(xy, z, visible, is_2d)[1], grad_z, atol=1e-7)


def test_geometric_loss_known_value():
  # Sample 0: legs of unit length (weighted w, 1, 1, w), the other groups not visible, so
  # L = sum (l - E)^2 / (2 * 4); sample 1: nothing visible. B = 2.
  xy = np.zeros((2, 16, 2), np.float32)
  for a, c in ((0, 1), (1, 2), (3, 4), (4, 5)):
    xy[0, c] = xy[0, a] + (0, 1)
  visible = np.zeros((2, 16), np.float32)
  visible[0, :6] = 1
  w = joints.GEOMETRIC_BONE_GROUPS['legs'][0][1]
  lengths = np.array([w, 1, 1, w])
  want = np.sum((lengths - lengths.mean()) ** 2) / 8 / 2
  loss = losses.geometric_loss(xy, jnp.zeros((2, 16)), visible, jnp.array([True, True]))
  np.testing.assert_allclose(loss, want, rtol=1e-4)


def test_losses_finite_with_empty_masks():
  xy, z, _, _ = _geometric_batch(4)
  for is_2d in (np.zeros(6, bool), np.ones(6, bool)):
    loss, grads = jax.value_and_grad(losses.geometric_loss, (0, 1))(xy, z, np.zeros((6, 16)), is_2d)
    assert loss == 0 and all(np.all(g == 0) for g in grads)
  pred = jnp.ones((3, 16))
  loss, grad = jax.value_and_grad(losses.depth_loss)(
    pred, jnp.full((3, 16), jnp.nan), jnp.zeros((3, 16))
  )
  assert loss == 0 and np.all(grad == 0)


def test_smooth_l1():
  x = np.array([-3.0, -1.0, -0.999, -0.5, 0.0, 0.25, 0.999, 1.0, 2.5])
  np.testing.assert_allclose(
    losses.smooth_l1(x), [2.5, 0.5, 0.4990005, 0.125, 0, 0.03125, 0.4990005, 0.5, 2.0], rtol=1e-6
  )


def test_depth_loss():
  rng = np.random.default_rng(5)
  pred = rng.normal(0, 1.5, (4, 16))  # differences both below and above 1 in magnitude
  target = rng.normal(0, 1.5, (4, 16))
  mask = (rng.uniform(size=(4, 16)) < 0.6).astype(np.float64)
  target[mask == 0] = np.nan  # unmasked targets must not matter
  diff = np.abs(pred - target)[mask > 0]
  assert np.any(diff < 1) and np.any(diff > 1)
  want = np.nansum(mask * _np_smooth_l1(pred - target)) / (mask.sum() + 1e-4)
  loss, grad = jax.value_and_grad(losses.depth_loss)(pred.astype(np.float32), target, mask)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  want_grad = mask * np.clip(np.nan_to_num(pred - target), -1, 1) / (mask.sum() + 1e-4)
  np.testing.assert_allclose(grad, want_grad, atol=1e-6)


def test_heatmap_loss():
  rng = np.random.default_rng(6)
  pred, target = rng.normal(size=(2, 2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(
    losses.heatmap_loss(pred, target), np.mean((pred - target) ** 2), rtol=1e-6
  )
  np.testing.assert_allclose(
    losses.heatmap_loss(jnp.asarray(pred, jnp.bfloat16), target),
    np.mean((pred.astype(jnp.bfloat16).astype(np.float32) - target) ** 2),
    rtol=1e-5,
  )


def _objective_inputs(seed, depth_output):
  """A 1:1 2D/3D batch of 64 px and random model outputs (16 px maps; no depth, a depth map as
  ResNets give, or regressed depth as the hourglass gives)."""
  rng = np.random.default_rng(seed)
  b = 8
  batch = {
    'image': np.zeros((b, 64, 64, 3), np.uint8),
    'joints': rng.uniform(-8, 72, (b, 16, 2)).astype(np.float32),
    'joints_mask': (rng.uniform(size=(b, 16)) < 0.8).astype(np.float32),
    'depth': rng.normal(0, 1.0, (b, 16)).astype(np.float32),
    'has_3d': np.arange(b) < b // 2,
  }
  outputs = {'heatmaps': rng.uniform(0, 1, (2, b, 16, 16, 16)).astype(np.float32)}
  if depth_output == 'depth_map':
    outputs['depth_map'] = rng.normal(0, 1.0, (b, 16, 16, 16)).astype(np.float32)
  elif depth_output == 'depth':
    outputs['depth'] = rng.normal(0, 1.0, (b, 16)).astype(np.float32)
  return outputs, batch


@pytest.mark.parametrize('depth_output', [None, 'depth_map', 'depth'])
def test_objective_is_the_weighted_sum_of_the_losses_the_outputs_allow(depth_output):
  outputs, batch = _objective_inputs(0, depth_output)
  config = losses.LossConfig(depth_weight=0.1, geometric_weight=0.01)
  total, metrics = jax.jit(losses.compute_losses, static_argnums=2)(outputs, batch, config)
  names = [name for name, loss in losses.LOSSES.items() if depth_output or not loss.needs_depth]
  assert set(metrics) == {f'{name}_loss' for name in names} | {'loss'}
  assert all(float(metrics[f'{name}_loss']) > 0 for name in names)  # every term is exercised
  want = metrics['heatmap_loss']
  if depth_output:
    want = want + 0.1 * metrics['depth_loss'] + 0.01 * metrics['geometric_loss']
  assert total == metrics['loss']
  np.testing.assert_allclose(total, want, rtol=1e-6)


@pytest.mark.parametrize(
  'name', [name for name, loss in losses.LOSSES.items() if loss.samples != 'all']
)
def test_each_loss_reads_only_its_samples(name):
  """Everything of the other samples replaced (their joints, masks, depths and the model's
  outputs): the loss is unchanged."""
  outputs, batch = _objective_inputs(1, 'depth_map')
  config = losses.LossConfig()
  want = losses.compute_losses(outputs, batch, config)[1][f'{name}_loss']
  others = batch['has_3d'] if losses.LOSSES[name].samples == '2d' else ~batch['has_3d']
  new_outputs, new_batch = _objective_inputs(2, 'depth_map')
  for tree, new in ((outputs, new_outputs), (batch, new_batch)):
    for key, value in tree.items():
      shape = [1] * value.ndim
      shape[1 if key == 'heatmaps' else 0] = -1  # the sample axis
      tree[key] = np.where(others.reshape(shape), new[key], value)
  got = losses.compute_losses(outputs, batch, config)[1][f'{name}_loss']
  assert float(want) > 0
  np.testing.assert_array_equal(got, want)


def test_loss_weights_are_loss_config_and_train_fields():
  config = default_config.base_config()
  weights = [loss.weight for loss in losses.LOSSES.values() if loss.weight]
  config.train.update({weight: 0.5 + i for i, weight in enumerate(weights)})
  config.data.sigma = 1.5
  assert losses.loss_config(config) == losses.LossConfig(
    sigma=1.5, **{weight: 0.5 + i for i, weight in enumerate(weights)}
  )
