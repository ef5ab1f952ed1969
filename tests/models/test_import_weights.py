"""PyTorch weight import: our networks reproduce the reference's torch.nn ones, ImageNet backbones,
reference workdirs.

torch is needed only to read .pth files: the reference networks' weights, an input and torch's
outputs on it are committed arrays (tests/fixtures/torch_import, written by
`python tools/make_torch_fixtures.py`, described in tools/lib/torch_reference.py). The
tests taking the `torch` fixture, skipped without torch, check that the fixtures equal what that
command writes now and that .pth files read as the same arrays.
"""

import hashlib
import json
import os
import subprocess
import sys

from conftest import REPO
from conftest import tiny_config
from flax import nnx
import jax
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

FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'torch_import')
NUM_JOINTS = 16
# The fixtures' networks (tools/lib/torch_reference.py's MODELS): file stem -> ResNet, width, head.
REFERENCE_MODELS = {
  'reference_resnet18': ('resnet18', 2, 8),
  'reference_resnet50': ('resnet50', 2, 8),
}
NO_TORCH = (
  'torch is not installed (pip install -e ".[torch]"): .pth files go unread and the fixtures '
  'unchecked against torch'
)


@pytest.fixture(scope='module')
def torch():
  """torch, for the tests of .pth files and of the fixtures themselves; they skip without it."""
  return pytest.importorskip('torch', reason=NO_TORCH)


def _fixture(stem):
  """The arrays of tests/fixtures/torch_import/`stem`.npz by name."""
  with np.load(os.path.join(FIXTURES, f'{stem}.npz')) as arrays:
    return {name: arrays[name] for name in arrays.files}


def _save(path, arrays):
  np.savez(path, **arrays)
  return str(path)


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


def _flat(tree):
  return {key: np.asarray(value) for key, value in trees.flatten(tree).items()}


@pytest.fixture(scope='module')
def reference_resnet18():
  """The fixture reference ResNet-18's state_dict, 'module.' prefix stripped."""
  return torch_import.strip_prefix(_fixture('reference_resnet18'), 'module.')


@pytest.fixture(scope='module')
def imagenet_state_dict():
  """A torchvision-layout ResNet-18 classifier's state_dict (width 2): the fixture's backbone
  with its BatchNorm counters, and a 10-class `fc`."""
  state_dict = {
    key.removeprefix('module.'): value
    for key, value in _fixture('reference_resnet18').items()
    if key.removeprefix('module.').startswith(('conv1.', 'bn1.', 'layer'))
  }
  rng = np.random.default_rng(2)
  state_dict['fc.weight'] = rng.normal(size=(10, 16)).astype(np.float32)
  state_dict['fc.bias'] = rng.normal(size=10).astype(np.float32)
  return state_dict


@pytest.fixture(scope='module')
def imagenet_resnet18(imagenet_state_dict, tmp_path_factory):
  """`imagenet_state_dict` saved as an .npz, a file model.init takes without torch."""
  return _save(tmp_path_factory.mktemp('imagenet') / 'resnet18.npz', imagenet_state_dict)


@pytest.fixture(scope='module')
def fresh_resnet18():
  """The pure dict of a randomly initialised width-2 ResNet-18 with depth."""
  return _pure_state(_model_config('resnet18', 2))


@pytest.mark.parametrize(
  'stem',
  [
    pytest.param(stem, marks=[pytest.mark.slow] if stem != 'reference_resnet18' else [])
    for stem in sorted(REFERENCE_MODELS)
  ],
)
def test_imported_reference_model_gives_the_torch_outputs(stem):
  arch, width, head_channels = REFERENCE_MODELS[stem]
  state_dict = _fixture(stem)
  # DataParallel's 'module.' prefix and the BatchNorm counters, as in released checkpoints.
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

  torch_outputs = _fixture('outputs')
  images = torch_outputs['images']
  outputs = model(images)
  assert outputs['heatmaps'].shape == (1, len(images), 16, 16, NUM_JOINTS)
  for ours, theirs in (
    (outputs['heatmaps'][0], torch_outputs[f'{stem}.heatmaps']),
    (outputs['depth_map'], torch_outputs[f'{stem}.depth_map']),
  ):
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max(), rtol=0)


def test_imagenet_weights_fill_the_backbone_and_leave_the_head(
  imagenet_resnet18, imagenet_state_dict, fresh_resnet18, tmp_path
):
  source = imagenet_state_dict
  npz = str(tmp_path / 'converted.npz')
  assert torch_import.convert_imagenet(imagenet_resnet18, npz).unused == []
  with np.load(npz) as arrays:  # the classifier and the BatchNorm counters are left out
    assert not [key for key in arrays.files if key.startswith('fc.') or 'num_batches' in key]

  fresh = fresh_resnet18
  for path in (imagenet_resnet18, npz):  # the whole state_dict and the converted one alike
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


def test_the_importer_says_which_weights_it_read(imagenet_resnet18, tmp_path):
  """torchvision names each ImageNet file by its SHA-256's first 8 hex digits; the importer and
  model.init name the file they read by that hash, through a converted .npz too."""
  for arch, (old, new) in torch_import.TORCHVISION_IMAGENET_FILES.items():
    for name, other in ((old, new), (new, old)):
      prefix = name.removesuffix('.pth').rsplit('-', 1)[1]
      assert name.startswith(arch + '-') and len(prefix) == 8
      described = torch_import.describe_sha256(prefix + '0' * 56)
      assert f"torchvision's ImageNet {arch} ({name}, the same tensors as {other})" in described
  lines = []
  out = str(tmp_path / 'converted.npz')
  torch_import.convert_imagenet(imagenet_resnet18, out, log=lines.append)
  sha256 = hashlib.sha256(open(imagenet_resnet18, 'rb').read()).hexdigest()
  unknown = f"SHA-256 {sha256[:8]}...: not one of torchvision's ImageNet ResNet files"
  assert lines[0] == f'Read {imagenet_resnet18}: {unknown}.'
  assert torch_import.weights_origin(out) == f'converted from a file of {unknown}'
  assert torch_import.weights_origin(imagenet_resnet18) == 'an .npz that records no source file'
  pth = tmp_path / 'resnet.pth'  # a .pth is described by its own hash (no torch needed)
  pth.write_bytes(b'not really weights')
  assert torch_import.weights_origin(str(pth)).startswith(
    f'SHA-256 {hashlib.sha256(b"not really weights").hexdigest()[:8]}...: not one of'
  )
  with np.load(out) as arrays:  # the record is no weight: model.init reads the arrays alone
    assert set(torch_import.read_state_dict(out)) == set(arrays.files) - {'__source_sha256__'}


def test_unused_source_keys_other_than_fc_are_reported(
  imagenet_state_dict, fresh_resnet18, tmp_path
):
  path = _save(tmp_path / 'extra.npz', dict(imagenet_state_dict, extra_layer=np.zeros(3)))
  _, unused = torch_import.init_backbone(fresh_resnet18, path)
  assert unused == ['extra_layer']


def test_missing_or_misshapen_weights_are_one_line_errors_naming_the_key(
  imagenet_resnet18, imagenet_state_dict, fresh_resnet18, tmp_path
):
  state_dict = dict(imagenet_state_dict)
  del state_dict['layer2.0.downsample.1.running_var']
  path = _save(tmp_path / 'missing.npz', state_dict)
  with pytest.raises(default_config.ConfigError) as error:
    torch_import.init_backbone(fresh_resnet18, path)
  assert 'missing layer2.0.downsample.1.running_var' in str(error.value)
  assert f'model.init={path!r}' in str(error.value) and '\n' not in str(error.value)

  wider = _pure_state(_model_config('resnet18', 4), abstract=True)
  with pytest.raises(
    default_config.ConfigError,
    match=r'shape mismatch: conv1.weight is \(2, 3, 7, 7\), the model needs '
    r'\(4, 3, 7, 7\)',
  ):
    torch_import.init_backbone(wider, imagenet_resnet18)
  hourglass = _model_config('hourglass', 8)
  hourglass.model.update(num_stacks=1, hourglass_features=8)
  with pytest.raises(default_config.ConfigError, match='only ResNet models'):
    torch_import.init_backbone(_pure_state(hourglass, abstract=True), imagenet_resnet18)
  with pytest.raises(default_config.ConfigError, match='no weights file'):
    torch_import.init_backbone(fresh_resnet18, str(tmp_path / 'nothing.pth'))


def test_a_pth_file_without_torch_is_a_one_line_error(fresh_resnet18, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises, installed or not
  path = tmp_path / 'resnet18.pth'
  path.write_bytes(b'')
  with pytest.raises(ConfigError) as error:
    torch_import.init_backbone(fresh_resnet18, str(path))
  message = str(error.value)
  assert message.startswith(f'model.init={str(path)!r}: {str(path)!r} is a PyTorch file')
  assert 'torch is not installed: pip install -e .[torch]' in message and '\n' not in message


def test_reference_checkpoint_becomes_a_workdir_that_grafts_exactly(
  reference_resnet18, tmp_path, capsys
):
  src = os.path.join(FIXTURES, 'reference_resnet18.npz')  # 'module.' names, as released
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
  ) == ('resnet18', 2, 8, 3, True)
  assert checkpoint.find_checkpoint(workdir)[1] == 0
  fresh = _pure_state(config)
  grafted, newly_initialised = checkpoint.graft(workdir, fresh)
  assert newly_initialised == []
  expected, _ = torch_import.fill(
    fresh,
    reference_resnet18,
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
  extra = _save(tmp_path / 'extra.npz', dict(reference_resnet18, offsets=np.zeros(2)))
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


@pytest.mark.slow
def test_command_refuses_in_one_line(tmp_path):
  """hpe-import-weights ends a refusal with one `error:` line, exit 2."""
  workdir = tmp_path / 'used'
  (workdir / 'checkpoints' / '0').mkdir(parents=True)
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'hpe_jax.commands.import_weights',
      'reference',
      os.path.join(FIXTURES, 'reference_resnet18.npz'),
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


def _stem(images, weights):
  """conv1 (7x7, stride 2, padding 3) and bn1 in eval mode: (B, H, W, 3) -> (B, C, H/2, W/2)."""
  x = jax.lax.conv_general_dilated(
    images.transpose(0, 3, 1, 2).astype(np.float32),
    weights['conv1.weight'],
    window_strides=(2, 2),
    padding=((3, 3), (3, 3)),
    dimension_numbers=('NCHW', 'OIHW', 'NCHW'),
    precision=jax.lax.Precision.HIGHEST,
  )
  scale = weights['bn1.weight'] / np.sqrt(weights['bn1.running_var'] + 1e-5)
  shift = weights['bn1.bias'] - weights['bn1.running_mean'] * scale
  return np.asarray(x) * scale[:, None, None] + shift[:, None, None]


def test_bgr256_fold_gives_the_reference_stem_on_our_input(reference_resnet18):
  folded = torch_import.fold_bgr256_input(reference_resnet18)
  pixels = np.random.default_rng(1).integers(0, 256, size=(1, 32, 32, 3)).astype(np.float32)
  mean, std = torch_import.IMAGENET_MEAN, torch_import.IMAGENET_STD
  ours = (pixels / 255 - mean) / std  # RGB, as interface.normalize_images
  reference = (pixels[..., ::-1] / 256 - mean) / std  # BGR with RGB-ordered mean and std

  expected, got = _stem(reference, reference_resnet18), _stem(ours, folded)
  interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # windows clear of padding
  np.testing.assert_allclose(got[interior], expected[interior], atol=1e-4)
  assert np.abs(got - expected).max() > 1e-3  # the border sees the padding: not exact there


def test_fixtures_are_what_the_command_writes_now(torch, tmp_path):
  """tools/make_torch_fixtures.py rewrites the committed fixtures unchanged: the same arrays,
  the weights and images exactly, torch's outputs to float32 rounding."""
  del torch  # only needed installed: the command runs it
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, 'tools', 'make_torch_fixtures.py'),
      f'--out={tmp_path}',
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  stems = sorted(name.removesuffix('.npz') for name in os.listdir(FIXTURES))
  assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(FIXTURES))
  assert stems == sorted([*REFERENCE_MODELS, 'outputs'])
  hint = 'stale fixture: rerun python tools/make_torch_fixtures.py and commit'
  for stem in stems:
    committed = _fixture(stem)
    with np.load(tmp_path / f'{stem}.npz') as arrays:
      written = {name: arrays[name] for name in arrays.files}
    assert list(written) == list(committed), f'{stem}: {hint}'
    for name, value in written.items():
      assert value.dtype == committed[name].dtype, f'{stem} {name}: {hint}'
      if name.endswith(('.heatmaps', '.depth_map')):
        scale = np.abs(value).max()
        np.testing.assert_allclose(
          committed[name], value, rtol=0, atol=1e-5 * scale, err_msg=f'{name}: {hint}'
        )
      else:
        np.testing.assert_array_equal(committed[name], value, err_msg=f'{stem} {name}: {hint}')


def test_pth_files_read_as_their_arrays(
  torch, imagenet_resnet18, imagenet_state_dict, fresh_resnet18, tmp_path
):
  """A state_dict saved by torch, bare or under 'state_dict' or 'model' as training scripts save
  it, reads as the same arrays; model.init and hpe-import-weights take it as they take the .npz."""

  def tensors(state_dict, prefix=''):
    return {prefix + key: torch.from_numpy(value) for key, value in state_dict.items()}

  def assert_same(got, expected):
    assert list(got) == list(expected)
    for key, value in expected.items():
      np.testing.assert_array_equal(got[key], value, err_msg=key)

  pth = str(tmp_path / 'resnet18.pth')
  torch.save(tensors(imagenet_state_dict), pth)
  assert_same(torch_import.read_state_dict(pth), imagenet_state_dict)
  (from_pth, unused_pth), (from_npz, unused_npz) = (
    torch_import.init_backbone(fresh_resnet18, path) for path in (pth, imagenet_resnet18)
  )
  assert unused_pth == unused_npz == []
  assert_same(_flat(from_pth), _flat(from_npz))
  torch_import.convert_imagenet(pth, str(tmp_path / 'from_pth.npz'))
  torch_import.convert_imagenet(imagenet_resnet18, str(tmp_path / 'from_npz.npz'))
  with np.load(tmp_path / 'from_pth.npz') as got, np.load(tmp_path / 'from_npz.npz') as expected:
    assert_same(dict(got), dict(expected))

  reference = _fixture('reference_resnet18')  # 'module.' names
  npz_read = torch_import.load_state_dict(os.path.join(FIXTURES, 'reference_resnet18.npz'))
  for wrapper in ('state_dict', 'model'):
    wrapped = str(tmp_path / f'{wrapper}.pth')
    torch.save({'epoch': 140, wrapper: tensors(reference)}, wrapped)
    state_dict, arch = torch_import.load_state_dict(wrapped)
    assert arch == npz_read[1] == 'resnet18'
    assert_same(state_dict, npz_read[0])


@pytest.mark.slow
def test_model_init_scratch_trains_from_random_weights_and_says_so(data_dir, tmp_path, capsys):
  """The explicit opt-out of a recipe's ImageNet start: no file is read, the log and config.json
  say it."""
  config = tiny_config(data_dir, **{'model.init': 'scratch', 'train.num_steps': 1, 'data.eval': ''})
  train.train_and_evaluate(config, str(tmp_path))
  assert "Random initial weights (model.init='scratch')." in capsys.readouterr().out
  with open(os.path.join(tmp_path, 'config.json')) as f:
    assert json.load(f)['model']['init'] == 'scratch'


@pytest.mark.slow
def test_training_with_model_init_starts_from_the_imported_backbone(
  imagenet_resnet18, imagenet_state_dict, data_dir, tmp_path
):
  # lr 1e-30 (0 is refused): one Adam step moves each parameter by about 1e-30, leaving it as it
  # started to far below float32 precision (batch statistics still move).
  config = tiny_config(
    data_dir,
    **{
      'model.init': imagenet_resnet18,
      'model.width': 2,
      'train.num_steps': 1,
      'train.lr': 1e-30,
      'data.eval': '',
    },
  )
  train.train_and_evaluate(config, str(tmp_path))
  mngr = checkpoint.manager(os.path.join(tmp_path, 'checkpoints'), read_only=True)
  trained = _flat(
    mngr.restore(
      1, args=checkpoint.ocp.args.Composite(state=checkpoint.ocp.args.StandardRestore())
    ).state['model']
  )
  backbone_params = [
    key
    for key in trained
    if key.startswith('backbone/') and key.rsplit('/', 1)[1] in ('kernel', 'scale', 'bias')
  ]
  assert len(backbone_params) == 3 * 20  # resnet18: 20 convs and their BatchNorms
  for key in backbone_params:
    expected = imagenet_state_dict[torch_import.torch_key(key)]
    if expected.ndim == 4:
      expected = expected.transpose(2, 3, 1, 0)
    np.testing.assert_allclose(trained[key], expected, rtol=1e-6, atol=1e-20, err_msg=key)
