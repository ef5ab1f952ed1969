"""The PyTorch peer (tools/lib/torch_peer.py) trains what hpe_jax trains: same losses, same
networks.

Speed is compared by tools/compare_peer.py (tools/lib/compare_peer.py), not here.
"""

import os

from conftest import REPO
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import default_config
from hpe_jax import losses
from hpe_jax import models
from hpe_jax.errors import ConfigError

torch = pytest.importorskip(
  'torch', reason='torch is not installed: pip install -e ".[torch]" to check the PyTorch peer'
)

from tools.lib import benchmark  # noqa: E402  (after the skip: compare_peer needs torch)
from tools.lib import compare_peer  # noqa: E402
from tools.lib import torch_peer  # noqa: E402

J = 16
LOSS_CONFIG = losses.LossConfig(sigma=2.0, depth_weight=0.1, geometric_weight=0.01)


@pytest.fixture(autouse=True)
def one_torch_thread():
  """Tiny ops on one thread: with several, a busy machine stalls each op at OpenMP barriers
  (seconds per forward pass)."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def _batch(rng, batch_size=8, image_size=64):
  """A 1:1 2D/3D batch with joints on and off the map, unannotated joints and depths on both
  sides of smooth-L1's kink."""
  return {
    'image': rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8),
    'joints': rng.uniform(-8, image_size + 8, (batch_size, J, 2)).astype(np.float32),
    'joints_mask': (rng.uniform(size=(batch_size, J)) < 0.8).astype(np.float32),
    'depth': rng.normal(0, 1.0, (batch_size, J)).astype(np.float32),
    'has_3d': np.arange(batch_size) < batch_size // 2,
  }


def _outputs(rng, kind, batch_size=8, size=16):
  """Random model outputs in hpe_jax's layout (NHWC maps, stacked heatmaps)."""
  stacks = 2 if kind == 'hourglass' else 1
  outputs = {'heatmaps': rng.uniform(0, 1, (stacks, batch_size, size, size, J))}
  if kind == 'hourglass':
    outputs['depth'] = rng.normal(0, 1.0, (batch_size, J))
  else:
    outputs['depth_map'] = rng.normal(0, 1.0, (batch_size, size, size, J))
  return {key: value.astype(np.float32) for key, value in outputs.items()}


def _to_torch_layout(outputs):
  """hpe_jax's NHWC maps -> the peer's NCHW ones."""
  return {
    key: torch.from_numpy(np.moveaxis(value, -1, -3).copy() if value.ndim >= 4 else value)
    for key, value in outputs.items()
  }


def _tiny_finetune_config():
  """configs/finetune.py at width 8, head 16, 64 px, batch 4."""
  config = default_config.load_config(os.path.join(REPO, 'configs', 'finetune.py'))
  config.model.update(width=8, head_channels=16)
  config.data.image_size = 64
  config.train.batch_size = 4
  return config


@pytest.mark.parametrize('kind', ['resnet', 'hourglass'])
@pytest.mark.parametrize('seed', [0, 1])
def test_peer_losses_equal_hpe_jax_losses(kind, seed):
  rng = np.random.default_rng(seed)
  batch, outputs = _batch(rng), _outputs(rng, kind)
  _, ours = jax.jit(losses.compute_losses, static_argnums=2)(outputs, batch, LOSS_CONFIG)
  _, theirs = torch_peer.compute_losses(
    _to_torch_layout(outputs), torch_peer.to_tensors(batch, torch.device('cpu')), LOSS_CONFIG
  )
  assert set(theirs) == set(ours) == {'loss', 'heatmap_loss', 'depth_loss', 'geometric_loss'}
  for name, value in ours.items():
    assert float(value) > 0, name  # every term is exercised
    np.testing.assert_allclose(
      float(theirs[name]), float(value), rtol=1e-5, atol=1e-7, err_msg=name
    )


def _model_config(name, **fields):
  config = default_config.base_config().model
  config.update(
    name=name,
    width=8,
    head_channels=16,
    num_stacks=2,
    hourglass_features=16,
    image_size=64,
    depth=True,
    **fields,
  )
  return config


@pytest.mark.parametrize('name', ['resnet18', 'resnet50', 'hourglass'])
def test_peer_models_have_hpe_jax_parameters_and_output_shapes(name):
  config = _model_config(name)

  def build_and_run():
    model = models.create_model(config, with_depth=True, rngs=nnx.Rngs(0))
    return nnx.state(model, nnx.Param), model(jnp.zeros((2, 64, 64, 3)))

  our_parameters, our_outputs = nnx.eval_shape(build_and_run)  # shapes only
  peer = torch_peer.create_model(config, with_depth=True)
  assert sum(p.numel() for p in peer.parameters()) == sum(
    leaf.size for leaf in jax.tree.leaves(our_parameters)
  )
  with torch.no_grad():
    peer_outputs = peer(torch.zeros(2, 3, 64, 64))
  assert set(peer_outputs) == set(our_outputs)
  for key, value in our_outputs.items():
    expected = (
      value.shape[:-3] + (value.shape[-1],) + value.shape[-3:-1] if value.ndim >= 4 else value.shape
    )
    assert tuple(peer_outputs[key].shape) == expected, key


def test_peers_are_hpe_jax_backbones_and_a_backbone_without_one_is_named(monkeypatch):
  assert set(torch_peer.PEERS) <= set(models.BACKBONES)
  assert set(torch_peer.TERMS) == set(losses.LOSSES)
  monkeypatch.delitem(torch_peer.PEERS, 'hourglass')
  with pytest.raises(ConfigError, match="model.name='hourglass' has no PyTorch peer"):
    torch_peer.create_model(_model_config('hourglass'), with_depth=True)


def test_eager_peer_step_trains():
  config = _tiny_finetune_config()
  config.train.lr = 1e-2
  batch = _batch(np.random.default_rng(0), batch_size=4)
  peer = torch_peer.PeerTrainStep(
    config, batch, LOSS_CONFIG, mode='eager', device=torch.device('cpu')
  )
  losses = [float(peer.step()) for _ in range(4)]
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_compare_peer_parts_run_what_the_steps_run():
  """compare_peer --parts times the step's own forward and losses: the losses equal the ones
  the full steps report (hpe_jax and the peer, same initialisation and batch). In-process: the
  library defines no flags (the commands do), so nothing collides."""
  config = _tiny_finetune_config()
  batch = _batch(np.random.default_rng(0), batch_size=4)
  parts = compare_peer.hpe_jax_parts(config, batch)
  forward_loss = float(parts['forward']())
  grads = nnx.to_pure_dict(parts['forward_backward']())
  _, metrics = benchmark.JaxTrainStep(config, batch).step()
  np.testing.assert_allclose(forward_loss, float(metrics['loss']), rtol=1e-5)
  assert np.isfinite(forward_loss) and 'backbone' in grads and 'head' in grads
  peer = torch_peer.PeerTrainStep(
    config, batch, LOSS_CONFIG, mode='eager', device=torch.device('cpu')
  )
  peer_forward = float(peer.forward_losses())
  peer.forward_backward()
  assert all(p.grad is not None for p in peer.model.parameters())
  np.testing.assert_allclose(peer_forward, float(peer.step()), rtol=1e-5)
