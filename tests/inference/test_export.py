"""The deployable model: `hpe-export` writes a file that `load_exported` runs without
Flax or the model code, predicting what the live model (`inference.load`) predicts."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

from conftest import REPO
from conftest import realdata_dir
import cv2
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax import inference
from hpe_jax.inference import export_run
from hpe_jax.inference import exported
from hpe_jax.inference import image_io
from hpe_jax.inference import predict_run
from hpe_jax.models import xla_cpu
from hpe_jax.storage import checkpoint

BOX = (100, 40, 150, 260)  # x, y, w, h: inside every MPII test photo
# The live model runs the XLA:CPU forms of the layers, the export the stock ones
# (export_run.export_predictor says why): the same arithmetic up to float32 rounding, so the
# same heatmap peaks; what differs is the last bits of the depth read-out and peak values.
ATOL = 1e-4  # pixels, heatmap values and mm


@pytest.fixture(scope='module')
def model_file(tiny_depth_run, tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp('export') / 'model.hpe')
  export_run.export(tiny_depth_run, path)
  return path


@pytest.fixture(scope='module')
def models(tiny_depth_run, model_file):
  return inference.load(tiny_depth_run), inference.load_exported(model_file)


def _real_photos(count: int) -> list[str]:
  realdata = realdata_dir()
  images = os.path.join(realdata or '', 'mpii', 'images')
  if not realdata or not os.path.isdir(images) or not os.listdir(images):
    pytest.skip('no real photos: ../shared/realdata/mpii/images is absent')
  return [os.path.join(images, name) for name in sorted(os.listdir(images))[:count]]


def test_the_file_holds_module_weights_and_header(model_file, tiny_depth_run):
  with zipfile.ZipFile(model_file) as archive:
    names = set(archive.namelist())
    header = json.loads(archive.read(exported.HEADER))
  assert {exported.HEADER, exported.MODULE, exported.WEIGHTS.format(0)} <= names
  assert len(names) == 2 + len(header['weights'])
  run_config = inference.load_run_config(tiny_depth_run)
  assert header['format'] == exported.FORMAT
  assert header['format_version'] == exported.FORMAT_VERSION
  assert header['image_size'] == run_config.data.image_size
  assert header['num_joints'] == len(header['joints']) == 16
  assert header['has_depth'] is True
  assert (header['flip_test'], header['subpixel']) == (
    run_config.eval.flip_test,
    run_config.eval.subpixel,
  )
  assert header['platforms'] == ['cpu', 'cuda']
  assert header['compiler_options'] == {'cpu': xla_cpu.CPU_COMPILER_OPTIONS}


def test_exported_model_predicts_as_the_live_model_on_real_photos(models):
  live, deployed = models
  assert (deployed.image_size, deployed.has_depth, deployed.step) == (
    live.image_size,
    live.has_depth,
    live.step,
  )
  for path in _real_photos(3):
    image = image_io.read_image(path)
    for box in (None, BOX):
      want, got = live.predict(image, box), deployed.predict(image, box)
      assert set(got) == set(want) == {'joints_2d', 'scores', 'box_center', 'box_side', 'joints_3d'}
      for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=ATOL, err_msg=f'{path} {key}')


def test_the_batch_dimension_is_symbolic(models):
  _, deployed = models
  assert not isinstance(deployed.exported.in_avals[-1].shape[0], int)
  size = deployed.image_size
  images = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), np.uint8)
  three = deployed.predict_inputs(images)
  one = deployed.predict_inputs(images[1:2])
  assert three['pred_xy'].shape == (3, 16, 2) and one['pred_xy'].shape == (1, 16, 2)
  assert set(three) == {'pred_xy', 'pred_peak', 'pred_depth'}
  for key in three:
    np.testing.assert_allclose(one[key][0], three[key][1], rtol=0, atol=ATOL)
  with pytest.raises(ValueError, match='uint8 RGB'):
    deployed.predict_inputs(images[:, :-1])


_NO_MODEL_CODE = """
import sys
import numpy as np
from hpe_jax import inference
model = inference.load_exported(sys.argv[1])
image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), np.uint8)
result = model.predict(image, box=(10, 10, 50, 80))
assert result['joints_3d'].shape == (16, 3)
print(sorted(m for m in ('flax', 'hpe_jax.models', 'hpe_jax.training') if m in sys.modules))
"""


def test_load_exported_runs_without_flax_or_model_code(model_file):
  result = subprocess.run(
    [sys.executable, '-c', _NO_MODEL_CODE, model_file],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == '[]'


def test_predict_files_with_an_exported_model(model_file, tmp_path):
  [photo] = _real_photos(1)
  [result] = predict_run.predict_files(
    None, [photo], [BOX], out_dir=str(tmp_path / 'out'), model=model_file
  )
  assert result['record']['run']['model'] == model_file
  assert os.path.isfile(result['files']['3d'])


def _one_line(error: errors.HpeError, *words: str) -> None:
  message = str(error)
  assert '\n' not in message
  for word in words:
    assert word in message


def test_a_missing_file_is_named(tmp_path):
  with pytest.raises(exported.ExportError) as e:
    inference.load_exported(str(tmp_path / 'none.hpe'))
  _one_line(e.value, 'none.hpe', 'no such file', 'hpe-export')


def test_a_file_that_is_not_an_export_is_refused(tmp_path, tiny_depth_run):
  for path in (os.path.join(tiny_depth_run, 'config.json'), str(tmp_path / 'other.zip')):
    if path.endswith('.zip'):
      with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('readme.txt', 'not a model')
    with pytest.raises(exported.ExportError) as e:
      inference.load_exported(path)
    _one_line(e.value, path, 'not an exported model')


def test_an_unknown_format_version_is_refused(model_file, tmp_path):
  path = _with_header(model_file, str(tmp_path / 'future.hpe'), format_version=99)
  with pytest.raises(exported.ExportError) as e:
    inference.load_exported(path)
  _one_line(e.value, path, 'format version 99', f'reads version {exported.FORMAT_VERSION}')


def _with_header(model_file: str, path: str, **fields) -> str:
  """A copy of `model_file` at `path` whose header has `fields` replaced."""
  with zipfile.ZipFile(model_file) as source, zipfile.ZipFile(path, 'w') as target:
    for item in source.infolist():
      data = source.read(item)
      if item.filename == exported.HEADER:
        data = json.dumps({**json.loads(data), **fields})
      target.writestr(item, data)
  return path


def test_compiler_options_this_jaxlib_lacks_fall_back_to_the_defaults(models, model_file, tmp_path):
  options = {'cpu': {'xla_cpu_an_option_no_jaxlib_has': 'true'}}
  path = _with_header(model_file, str(tmp_path / 'options.hpe'), compiler_options=options)
  inputs = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), np.uint8)
  with pytest.warns(UserWarning, match="xla_cpu_an_option_no_jaxlib_has.*XLA's default options"):
    outputs = inference.load_exported(path).predict_inputs(inputs)
  expected = models[1].predict_inputs(inputs)
  for key in expected:
    np.testing.assert_array_equal(outputs[key], expected[key])


def test_an_out_that_cannot_be_written(tiny_depth_run, tmp_path):
  out = str(tmp_path / 'no_such_dir' / 'model.hpe')
  with pytest.raises(exported.ExportError) as e:
    export_run.export(tiny_depth_run, out)
  _one_line(e.value, f'--out={out}', 'cannot be written')
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(exported.ExportError):
    export_run.export(tiny_depth_run, str(blocker / 'model.hpe'))


def test_a_workdir_without_a_checkpoint(tiny_depth_run, tmp_path):
  workdir = tmp_path / 'untrained'
  workdir.mkdir()
  shutil.copy(os.path.join(tiny_depth_run, 'config.json'), workdir)
  out = tmp_path / 'model.hpe'
  with pytest.raises(checkpoint.CheckpointError) as e:
    export_run.export(str(workdir), str(out))
  _one_line(e.value, str(workdir))
  assert sorted(os.listdir(tmp_path)) == ['untrained']  # no partial file left behind


def test_an_unknown_platform(tiny_depth_run, tmp_path):
  with pytest.raises(exported.ExportError) as e:
    export_run.export(tiny_depth_run, str(tmp_path / 'm.hpe'), platforms=('cpu', 'gpu0'))
  _one_line(e.value, 'gpu0', '--platforms')


def _command(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', *args], capture_output=True, text=True, cwd=REPO, timeout=120
  )


@pytest.mark.slow
def test_command_line_errors_are_one_line(model_file, tmp_path):
  photo = str(tmp_path / 'photo.jpg')
  cv2.imwrite(photo, np.zeros((40, 30, 3), np.uint8))
  for args, words in (
    (
      ('hpe_jax.commands.predict', f'--model={model_file}', '--workdir=runs/x', photo),
      'exactly one',
    ),
    (('hpe_jax.commands.predict', photo), 'exactly one'),
    (('hpe_jax.commands.predict', f'--model={tmp_path / "none.hpe"}', photo), 'no such file'),
    (
      ('hpe_jax.commands.export', f'--workdir={tmp_path}', f'--out={tmp_path / "m.hpe"}'),
      'config.json',
    ),
  ):
    result = _command(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and words in lines[0], lines
