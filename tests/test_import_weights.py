"""PyTorch weight import: torch reference models vs ours, ImageNet backbones, reference workdirs."""

import json
import os
import subprocess
import sys

from conftest import tiny_config
from flax import nnx
import ml_collections
import numpy as np
import pytest

from hpe_jax import default_config
from hpe_jax import models
from hpe_jax import trees
from hpe_jax.errors import ConfigError
from hpe_jax.models import torch_import
from hpe_jax.storage import checkpoint
from hpe_jax.training import reference_run
from hpe_jax.training import train

torch = pytest.importorskip('torch')
nn = torch.nn

NUM_JOINTS = 16


class TorchBlock(nn.Module):
  """torchvision's BasicBlock / Bottleneck, with its parameter names."""

  def __init__(self, in_features, features, stride, bottleneck):
    super().__init__()
    out = 4 * features if bottleneck else features
    specs = (
      [(in_features, features, 1, 1), (features, features, 3, stride), (features, out, 1, 1)]
      if bottleneck
      else [(in_features, features, 3, stride), (features, features, 3, 1)]
    )
    self.num_convs = len(specs)
    for i, (cin, cout, k, s) in enumerate(specs, 1):
      setattr(self, f'conv{i}', nn.Conv2d(cin, cout, k, s, k // 2, bias=False))
      setattr(self, f'bn{i}', nn.BatchNorm2d(cout))
    self.downsample = None
    if stride != 1 or in_features != out:
      self.downsample = nn.Sequential(
        nn.Conv2d(in_features, out, 1, stride, bias=False), nn.BatchNorm2d(out)
      )
    self.out_features = out

  def forward(self, x):
    y = x
    for i in range(1, self.num_convs + 1):
      y = getattr(self, f'bn{i}')(getattr(self, f'conv{i}')(y))
      if i < self.num_convs:
        y = torch.relu(y)
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchPoseResNet(nn.Module):
  """The reference's model (torchvision ResNet, deconv_layers, `hm` and `depth` 1x1 convs); with
  num_upsample=None, a torchvision ImageNet classifier instead (ResNet + fc)."""

  def __init__(self, arch, width, head_channels=0, num_upsample=None):
    super().__init__()
    bottleneck, stage_blocks = models.resnet.ARCHITECTURES[arch]
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    features = width
    for stage, num_blocks in enumerate(stage_blocks):
      blocks = []
      for i in range(num_blocks):
        blocks.append(
          TorchBlock(features, width * 2**stage, 2 if stage and not i else 1, bottleneck)
        )
        features = blocks[-1].out_features
      setattr(self, f'layer{stage + 1}', nn.Sequential(*blocks))
    self.classifier = num_upsample is None
    if self.classifier:
      self.fc = nn.Linear(features, 10)
      return
    deconvs = []
    for _ in range(num_upsample):
      deconvs += [
        nn.ConvTranspose2d(features, head_channels, 4, 2, 1, 0, bias=False),
        nn.BatchNorm2d(head_channels),
        nn.ReLU(),
      ]
      features = head_channels
    self.deconv_layers = nn.Sequential(*deconvs)
    self.hm = nn.Conv2d(features, NUM_JOINTS, 1)
    self.depth = nn.Conv2d(features, NUM_JOINTS, 1)

  def forward(self, x):
    x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    for stage in range(1, 5):
      x = getattr(self, f'layer{stage}')(x)
    if self.classifier:
      return self.fc(x.mean((2, 3)))
    x = self.deconv_layers(x)
    return self.hm(x), self.depth(x)


def _randomised(module, seed=0):
  """`module` in eval mode with random weights, biases and BatchNorm running statistics."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, value in module.state_dict().items():
      if not value.is_floating_point():
        continue
      if name.endswith('running_var'):
        value.copy_(0.5 + torch.rand(value.shape, generator=generator))
      elif name.endswith(('running_mean', 'bias')):
        value.copy_(0.1 * torch.randn(value.shape, generator=generator))
      elif value.ndim == 1:  # BatchNorm scale
        value.copy_(0.5 + torch.rand(value.shape, generator=generator))
      else:  # He-scaled, so activations keep their size through the depth
        # A stride-2 transposed conv (I, O, 4, 4) sums I x 2 x 2 terms per output pixel.
        fan_in = value.shape[0] * 4 if 'deconv' in name else value[0].numel()
        value.copy_(torch.randn(value.shape, generator=generator) * (2 / fan_in) ** 0.5)
  return module.eval()


def _numpy_state_dict(module, prefix=''):
  return {prefix + name: value.numpy() for name, value in module.state_dict().items()}


def _model_config(arch, width, head_channels=16, num_upsample=3, depth=True):
  config = default_config.base_config()
  config.model.update(
    name=arch, width=width, head_channels=head_channels, num_upsample=num_upsample, depth=depth
  )
  return config


def _build(config, *, abstract=False):
  """The model `config` describes; abstract: its arrays only shapes (skips the slow random init,
  for weights that will all be replaced or only checked)."""

  def build():
    return models.create_model(config.model, with_depth=config.model.depth, rngs=nnx.Rngs(1))

  return nnx.eval_shape(build) if abstract else build()


def _pure_state(config, *, abstract=False):
  return nnx.to_pure_dict(nnx.state(_build(config, abstract=abstract)))


@pytest.fixture(scope='module')
def fresh_resnet18():
  """The pure dict of a randomly initialised width-8 ResNet-18 with depth."""
  return _pure_state(_model_config('resnet18', 8))


def _flat(tree):
  return {key: np.asarray(value) for key, value in trees.flatten(tree).items()}


@pytest.mark.parametrize(
  'arch, width, head_channels',
  [
    ('resnet18', 64, 256),  # the reference's own widths
    ('resnet50', 16, 32),  # bottlenecks, narrowed to stay fast
  ],
)
def test_imported_reference_model_gives_the_torch_outputs(arch, width, head_channels):
  torch_model = _randomised(TorchPoseResNet(arch, width, head_channels, num_upsample=3))
  # DataParallel's 'module.' prefix and the BatchNorm counters, as in released checkpoints.
  state_dict = _numpy_state_dict(torch_model, prefix='module.')
  assert any(key.endswith('num_batches_tracked') for key in state_dict)
  prefix = torch_import.find_prefix(state_dict)
  assert prefix == 'module.'
  state_dict = torch_import.strip_prefix(state_dict, prefix)
  assert torch_import.detect_architecture(state_dict) == arch
  heads = torch_import.find_heads(state_dict)
  assert heads == {'heatmap_conv': 'hm', 'depth_conv': 'depth'}

  model = _build(_model_config(arch, width, head_channels), abstract=True)  # every array filled
  model.eval()
  graphdef, state = nnx.split(model)
  filled, unused = torch_import.fill(
    nnx.to_pure_dict(state),
    state_dict,
    parts=('backbone', 'head', 'heatmap_conv', 'depth_conv'),
    heads=heads,
    source='test',
  )
  assert unused == []
  nnx.replace_by_pure_dict(state, filled)
  model = nnx.merge(graphdef, state)

  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    heatmaps, depth = (
      t.numpy().transpose(0, 2, 3, 1)
      for t in torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
    )
  outputs = model(images)
  assert outputs['heatmaps'].shape == (1, 2, 16, 16, NUM_JOINTS)
  for ours, theirs in ((outputs['heatmaps'][0], heatmaps), (outputs['depth_map'], depth)):
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max(), rtol=0)


@pytest.fixture(scope='module')
def imagenet_resnet18(tmp_path_factory):
  """A randomised torchvision-layout ResNet-18 classifier (width 8) saved as a .pth."""
  path = str(tmp_path_factory.mktemp('imagenet') / 'resnet18.pth')
  torch.save(_randomised(TorchPoseResNet('resnet18', 8), seed=2).state_dict(), path)
  return path


def test_imagenet_weights_fill_the_backbone_and_leave_the_head(
  imagenet_resnet18, fresh_resnet18, tmp_path
):
  source = {key: value.numpy() for key, value in torch.load(imagenet_resnet18).items()}
  npz = str(tmp_path / 'resnet18.npz')
  assert torch_import.convert_imagenet(imagenet_resnet18, npz).unused == []
  with np.load(npz) as arrays:  # the classifier and the BatchNorm counters are left out
    assert not [key for key in arrays.files if key.startswith('fc.') or 'num_batches' in key]

  fresh = fresh_resnet18
  for path in (imagenet_resnet18, npz):  # torch's file and the converted one alike
    loaded, unused = torch_import.init_backbone(fresh, path)
    assert unused == []
    loaded, flat_fresh = _flat(loaded), _flat(fresh)
    backbone = [key for key in loaded if key.startswith('backbone/')]
    assert (
      len(backbone)
      == len({torch_import.torch_key(k) for k in backbone})
      == len(
        [k for k in source if k.startswith(('conv1', 'bn1', 'layer')) and 'num_batches' not in k]
      )
    )
    for key in backbone:
      expected = source[torch_import.torch_key(key)]
      if expected.ndim == 4:
        expected = expected.transpose(2, 3, 1, 0)
      np.testing.assert_array_equal(loaded[key], expected, err_msg=key)
    for key in set(loaded) - set(backbone):  # the head keeps its fresh initialisation
      np.testing.assert_array_equal(loaded[key], flat_fresh[key], err_msg=key)


def test_unused_source_keys_other_than_fc_are_reported(imagenet_resnet18, fresh_resnet18, tmp_path):
  state_dict = dict(torch.load(imagenet_resnet18), extra_layer=torch.zeros(3))
  path = str(tmp_path / 'extra.pth')
  torch.save(state_dict, path)
  _, unused = torch_import.init_backbone(fresh_resnet18, path)
  assert unused == ['extra_layer']


def test_missing_or_misshapen_weights_are_one_line_errors_naming_the_key(
  imagenet_resnet18, fresh_resnet18, tmp_path
):
  state_dict = torch.load(imagenet_resnet18)
  del state_dict['layer2.0.downsample.1.running_var']
  path = str(tmp_path / 'missing.pth')
  torch.save(state_dict, path)
  with pytest.raises(default_config.ConfigError) as error:
    torch_import.init_backbone(fresh_resnet18, path)
  assert 'missing layer2.0.downsample.1.running_var' in str(error.value)
  assert f'model.init={path!r}' in str(error.value) and '\n' not in str(error.value)

  wider = _pure_state(_model_config('resnet18', 16), abstract=True)
  with pytest.raises(
    default_config.ConfigError,
    match=r'shape mismatch: conv1.weight is \(8, 3, 7, 7\), the model needs '
    r'\(16, 3, 7, 7\)',
  ):
    torch_import.init_backbone(wider, imagenet_resnet18)
  hourglass = _model_config('hourglass', 8)
  hourglass.model.update(num_stacks=1, hourglass_features=8)
  with pytest.raises(default_config.ConfigError, match='only ResNet models'):
    torch_import.init_backbone(_pure_state(hourglass, abstract=True), imagenet_resnet18)
  with pytest.raises(default_config.ConfigError, match='no weights file'):
    torch_import.init_backbone(fresh_resnet18, str(tmp_path / 'nothing.pth'))


def test_reference_checkpoint_becomes_a_workdir_that_grafts_exactly(tmp_path, capsys):
  torch_model = _randomised(TorchPoseResNet('resnet18', 8, 16, num_upsample=3), seed=3)
  src = str(tmp_path / 'model_last.pth')
  torch.save(
    {
      'epoch': 140,
      'state_dict': {'module.' + key: value for key, value in torch_model.state_dict().items()},
    },
    src,
  )
  workdir = str(tmp_path / 'reference')
  reference_run.import_reference(src, workdir, input_format='rgb')
  assert f'--config.init_from={workdir}' in capsys.readouterr().out

  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  assert (
    config.model.name,
    config.model.width,
    config.model.head_channels,
    config.model.num_upsample,
    config.model.depth,
  ) == ('resnet18', 8, 16, 3, True)
  assert checkpoint.find_checkpoint(workdir)[1] == 0
  fresh = _pure_state(config)
  grafted, newly_initialised = checkpoint.graft(workdir, fresh)
  assert newly_initialised == []
  expected, _ = torch_import.fill(
    fresh,
    _numpy_state_dict(torch_model),
    parts=('backbone', 'head', 'heatmap_conv', 'depth_conv'),
    heads={'heatmap_conv': 'hm', 'depth_conv': 'depth'},
    source='',
  )
  grafted, expected = _flat(grafted), _flat(expected)
  assert set(grafted) == set(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(grafted[key], value, err_msg=key)

  # Refused: a second import into the workdir, another --arch, parts our model has no place for;
  # each a one-line ConfigError (the command's exit 2: test_command_refuses_in_one_line).
  extra = str(tmp_path / 'extra.pth')
  torch.save(dict(torch_model.state_dict(), offsets=torch.zeros(2)), extra)
  other = str(tmp_path / 'other')
  errors = []
  for kwargs in (
    {'src': src, 'workdir': workdir},
    {'src': src, 'workdir': other, 'arch': 'resnet34'},
    {'src': extra, 'workdir': other},
  ):
    with pytest.raises(ConfigError) as error:
      reference_run.import_reference(**kwargs)
    assert error.value.exit_code == 2 and '\n' not in str(error.value)
    errors.append(str(error.value))
  assert len(errors) == 3
  assert 'already holds checkpoints' in errors[0] and 'not --arch=resnet34' in errors[1]
  assert "no place for: ['offsets']" in errors[2]


def test_command_refuses_in_one_line(tmp_path):
  """hpe-import-weights (through its tools/ shim) ends a refusal with one `error:` line, exit 2."""
  src = str(tmp_path / 'model_last.pth')
  torch.save(TorchPoseResNet('resnet18', 8, 16, num_upsample=3).state_dict(), src)
  workdir = tmp_path / 'used'
  (workdir / 'checkpoints' / '0').mkdir(parents=True)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(repo, 'tools', 'import_weights.py'),
      'reference',
      src,
      f'--workdir={workdir}',
      '--input=rgb',
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.splitlines() == [
    f'error: {workdir / "checkpoints"} already holds checkpoints; choose a new --workdir'
  ]


def test_bgr256_fold_gives_the_reference_stem_on_our_input():
  torch_model = _randomised(TorchPoseResNet('resnet18', 8), seed=4)
  state_dict = _numpy_state_dict(torch_model)
  folded = torch_import.fold_bgr256_input(state_dict)
  pixels = np.random.default_rng(1).integers(0, 256, size=(1, 32, 32, 3)).astype(np.float32)
  mean, std = torch_import.IMAGENET_MEAN, torch_import.IMAGENET_STD
  ours = (pixels / 255 - mean) / std  # RGB, as interface.normalize_images
  reference = (pixels[..., ::-1] / 256 - mean) / std  # BGR with RGB-ordered mean and std

  def stem(images, weights):
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32))
    x = nn.functional.conv2d(
      x, torch.from_numpy(weights['conv1.weight'].copy()), stride=2, padding=3
    )
    return nn.functional.batch_norm(
      x,
      torch.from_numpy(weights['bn1.running_mean']),
      torch.from_numpy(weights['bn1.running_var']),
      torch.from_numpy(weights['bn1.weight']),
      torch.from_numpy(weights['bn1.bias']),
      eps=1e-5,
    ).numpy()

  expected, got = stem(reference, state_dict), stem(ours, folded)
  interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # windows clear of padding
  np.testing.assert_allclose(got[interior], expected[interior], atol=1e-4)
  assert np.abs(got - expected).max() > 1e-3  # the border sees the padding: not exact there


def test_model_init_scratch_trains_from_random_weights_and_says_so(data_dir, tmp_path, capsys):
  """The explicit opt-out of a recipe's ImageNet start: no file is read, the log and config.json
  say it."""
  config = tiny_config(data_dir, **{'model.init': 'scratch', 'train.num_steps': 1, 'data.eval': ''})
  train.train_and_evaluate(config, str(tmp_path))
  assert "Random initial weights (model.init='scratch')." in capsys.readouterr().out
  with open(os.path.join(tmp_path, 'config.json')) as f:
    assert json.load(f)['model']['init'] == 'scratch'


def test_training_with_model_init_starts_from_the_imported_backbone(
  imagenet_resnet18, data_dir, tmp_path
):
  # lr 1e-30 (0 is refused): one Adam step moves each parameter by about 1e-30, leaving it as it
  # started to far below float32 precision (batch statistics still move).
  config = tiny_config(
    data_dir,
    **{'model.init': imagenet_resnet18, 'train.num_steps': 1, 'train.lr': 1e-30, 'data.eval': ''},
  )
  train.train_and_evaluate(config, str(tmp_path))
  mngr = checkpoint.manager(os.path.join(tmp_path, 'checkpoints'), read_only=True)
  trained = _flat(
    mngr.restore(
      1, args=checkpoint.ocp.args.Composite(state=checkpoint.ocp.args.StandardRestore())
    ).state['model']
  )
  source = {key: value.numpy() for key, value in torch.load(imagenet_resnet18).items()}
  backbone_params = [
    key
    for key in trained
    if key.startswith('backbone/') and key.rsplit('/', 1)[1] in ('kernel', 'scale', 'bias')
  ]
  assert len(backbone_params) == 3 * 20  # resnet18: 20 convs and their BatchNorms
  for key in backbone_params:
    expected = source[torch_import.torch_key(key)]
    if expected.ndim == 4:
      expected = expected.transpose(2, 3, 1, 0)
    np.testing.assert_allclose(trained[key], expected, rtol=1e-6, atol=1e-20, err_msg=key)
