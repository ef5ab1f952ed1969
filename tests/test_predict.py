"""Predicting on image files: the CLI's pictures and JSON, boxes, errors, 2D-only runs.

The runs are freshly initialised tiny models saved like training saves them (no training: the
poses are arbitrary, but every property checked here holds for any weights).
"""

import json
import os
import shutil
import subprocess
import sys

from conftest import realdata_dir
from conftest import tiny_config
import cv2
from flax import nnx
import grain
import numpy as np
import pytest

from hpe_jax import inference
from hpe_jax import joints
from hpe_jax.inference import image_files
from hpe_jax.inference import visualize
from hpe_jax.storage import checkpoint
from hpe_jax.training import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOX = (100, 40, 150, 260)  # x, y, w, h: a box well inside every test image


def _make_run(workdir: str, depth: bool) -> str:
  """A run directory as training leaves it (config.json and a checkpoint), untrained."""
  config = tiny_config('', depth=depth)
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  _, state = step_lib.init_state(config)
  mngr = checkpoint.manager(os.path.join(workdir, 'checkpoints'))
  data_iterator = iter(grain.MapDataset.range(1).to_iter_dataset())
  checkpoint.save(
    mngr, 1, {name: nnx.to_pure_dict(part) for name, part in state.items()}, data_iterator
  )
  mngr.wait_until_finished()
  mngr.close()
  return workdir


def _photo(directory) -> str:
  """A real MPII photo if realdata is present, else a synthetic JPEG (so nothing is skipped)."""
  realdata = realdata_dir()
  images = os.path.join(realdata or '', 'mpii', 'images')
  if realdata and os.path.isdir(images) and os.listdir(images):
    return os.path.join(images, sorted(os.listdir(images))[0])
  path = os.path.join(directory, 'synthetic.jpg')
  rng = np.random.default_rng(0)
  cv2.imwrite(path, cv2.GaussianBlur(rng.integers(0, 256, (360, 480, 3), np.uint8), (9, 9), 3))
  return path


def _read_rgb(path):
  return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def _predict_command(workdir, *args):
  return [sys.executable, '-m', 'hpe_jax.predict', f'--workdir={workdir}', *args]


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
  """One CLI call on a photo (whole) and a copy of it under another name (with BOX)."""
  directory = tmp_path_factory.mktemp('predict')
  workdir = _make_run(str(directory / 'run'), depth=True)
  photo = _photo(str(directory))
  boxed = str(directory / 'boxed.jpg')
  shutil.copyfile(photo, boxed)
  process = subprocess.run(
    _predict_command(workdir, photo, boxed, '--bbox=none', '--bbox=' + ','.join(map(str, BOX))),
    capture_output=True,
    text=True,
    cwd=REPO,
  )
  assert process.returncode == 0, process.stderr
  outputs = [
    image_files.output_paths(os.path.join(workdir, 'predictions'), p) for p in (photo, boxed)
  ]
  records = []
  for files in outputs:
    with open(files['json']) as f:
      records.append(json.load(f))
  return {
    'workdir': workdir,
    'images': (photo, boxed),
    'outputs': outputs,
    'records': records,
    'stdout': process.stdout,
  }


def test_cli_writes_overlay_3d_plot_and_json_per_image_and_says_where(cli_run):
  for image, files in zip(cli_run['images'], cli_run['outputs']):
    assert os.path.dirname(files['json']) == os.path.join(cli_run['workdir'], 'predictions')
    for path in files.values():
      assert os.path.isfile(path) and path in cli_run['stdout']
    assert cv2.imread(files['3d']) is not None
  assert [r['image'] for r in cli_run['records']] == list(cli_run['images'])


def test_json_joints_equal_the_predictor_on_the_same_image(cli_run):
  predictor = inference.load(cli_run['workdir'])
  for image, box, record in zip(cli_run['images'], (None, BOX), cli_run['records']):
    expected = predictor.predict(_read_rgb(image), box)
    assert list(record['joints_2d']) == list(joints.MPII16)
    assert list(record['joints_3d']) == list(joints.MPII16)
    np.testing.assert_allclose(
      [[j['x'], j['y']] for j in record['joints_2d'].values()],
      expected['joints_2d'],
      rtol=0,
      atol=1e-4,
    )
    np.testing.assert_allclose(
      [j['score'] for j in record['joints_2d'].values()], expected['scores'], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
      [[j['x'], j['y'], j['z']] for j in record['joints_3d'].values()],
      expected['joints_3d'],
      rtol=0,
      atol=1e-3,
    )


def _distance_to_segments(points, starts, ends):
  """(P, 2) points, (S, 2) segment ends -> (P,) distance of each point to the nearest segment."""
  direction = ends - starts
  length2 = np.maximum((direction**2).sum(-1), 1e-12)
  t = np.clip(((points[:, None] - starts) * direction).sum(-1) / length2, 0, 1)
  nearest = starts + t[..., None] * direction
  return np.linalg.norm(points[:, None] - nearest, axis=-1).min(1)


def test_overlay_is_the_image_changed_only_near_the_drawn_skeleton(cli_run):
  image = _read_rgb(cli_run['images'][0])
  overlay = _read_rgb(cli_run['outputs'][0]['2d'])
  assert overlay.shape == image.shape
  joints_2d = np.array([[j['x'], j['y']] for j in cli_run['records'][0]['joints_2d'].values()])
  changed = np.argwhere((overlay != image).any(-1))[:, ::-1].astype(np.float64)  # (x, y)
  bones = np.array(joints.BONES + tuple((i, i) for i in range(joints.NUM_JOINTS)))
  distance = _distance_to_segments(changed, joints_2d[bones[:, 0]], joints_2d[bones[:, 1]])
  # A ring's outer edge, plus anti-aliasing.
  reach = visualize.marker_radius(image.shape) + visualize.line_width(image.shape) / 2 + 2
  assert distance.max() <= reach
  height, width = image.shape[:2]
  for x, y in joints_2d:  # and every joint in the image was drawn
    if 0 <= x < width and 0 <= y < height:
      assert (np.linalg.norm(changed - (x, y), axis=1) <= reach).any(), (x, y)


def test_bbox_sets_the_square_the_model_saw(cli_run):
  whole, boxed = cli_run['records']
  height, width = whole['image_size']['height'], whole['image_size']['width']
  assert whole['box'] is None
  assert whole['square']['center'] == [(width - 1) / 2, (height - 1) / 2]
  assert whole['square']['side'] == max(width, height)
  x, y, w, h = BOX
  assert boxed['box'] == list(BOX)
  # The box centre (pixel centres are integers), its longer side padded by inference.BOX_PAD.
  assert boxed['square']['center'] == [x + w / 2 - 0.5, y + h / 2 - 0.5]
  assert boxed['square']['side'] == pytest.approx(1.25 * max(w, h))
  # Whatever the weights, the model only sees its square: every joint lies inside it.
  for record in (whole, boxed):
    center, half = np.array(record['square']['center']), record['square']['side'] / 2
    xy = np.array([[j['x'], j['y']] for j in record['joints_2d'].values()])
    assert (np.abs(xy - center) <= half + 1e-6).all()


def test_3d_joints_are_root_relative_with_the_canonical_limb_sum(cli_run):
  for record in cli_run['records']:
    pose = np.array([[j['x'], j['y'], j['z']] for j in record['joints_3d'].values()])
    np.testing.assert_array_equal(pose[joints.PELVIS], 0)
    limbs = sum(np.linalg.norm(pose[a] - pose[b]) for a, b in joints.CANONICAL_LIMB_LENGTHS_MM)
    canonical = sum(joints.CANONICAL_LIMB_LENGTHS_MM.values())
    assert limbs == pytest.approx(canonical, rel=1e-6)
    assert f'{canonical:.2f} mm' in record['scale_rule']


@pytest.mark.parametrize(
  'args, message',
  [
    (('missing.jpg',), 'error: missing.jpg: no such image file'),
    (('README.md',), 'error: README.md: cannot be read as an image'),
    (('README.md', '--bbox=1,2,3'), 'error: --bbox=1,2,3 is not x,y,w,h'),
    (('README.md', '--bbox=1,2,0,4'), 'error: --bbox=1,2,0,4 has no area'),
    (('a.jpg', 'b.jpg', 'c.jpg', '--bbox=1,2,3,4', '--bbox=none'), 'error: 2 boxes for 3 images'),
  ],
  ids=['missing', 'not-an-image', 'bbox-3-numbers', 'bbox-no-area', 'bbox-count'],
)
def test_bad_images_and_boxes_fail_with_one_line_and_exit_code_2(args, message):
  # No run needed: these are checked before the model loads.
  process = subprocess.run(
    _predict_command('runs/none', *args), capture_output=True, text=True, cwd=REPO
  )
  assert process.returncode == 2
  assert process.stderr.startswith(message) and process.stderr.count('\n') == 1, process.stderr


def test_two_images_whose_outputs_would_collide_are_refused_before_loading(tmp_path):
  for folder in ('a', 'b'):
    os.makedirs(tmp_path / folder)
    cv2.imwrite(str(tmp_path / folder / 'photo.png'), np.zeros((8, 8, 3), np.uint8))
  paths = [str(tmp_path / 'a' / 'photo.png'), str(tmp_path / 'b' / 'photo.png')]
  with pytest.raises(ValueError, match='would both write .*photo.json'):
    image_files.predict_files(str(tmp_path / 'no_run'), paths, out_dir=str(tmp_path / 'out'))


def test_a_2d_only_run_writes_the_overlay_and_2d_json_and_says_3d_needs_fine_tuning(tmp_path):
  workdir = _make_run(str(tmp_path / 'run2d'), depth=False)
  image = _photo(str(tmp_path))
  out_dir = str(tmp_path / 'out')
  [result] = image_files.predict_files(workdir, [image], [BOX], out_dir=out_dir)
  assert result['files']['3d'] is None
  assert sorted(os.listdir(out_dir)) == sorted(
    os.path.basename(p) for p in (result['files']['2d'], result['files']['json'])
  )
  with open(result['files']['json']) as f:
    record = json.load(f)
  assert record == result['record'] and record['joints_3d'] is None
  assert 'fine-tuned' in record['note_3d'] and len(record['joints_2d']) == joints.NUM_JOINTS


def test_an_out_dir_that_cannot_be_created_fails_with_one_line_naming_it(tmp_path):
  workdir = _make_run(str(tmp_path / 'run'), depth=False)
  image = _photo(str(tmp_path))
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  out_dir = str(blocker / 'out')
  process = subprocess.run(
    _predict_command(workdir, image, f'--out_dir={out_dir}'),
    capture_output=True,
    text=True,
    cwd=REPO,
  )
  assert process.returncode == 2, process.stderr
  assert process.stderr.startswith(
    f'error: --out_dir={out_dir} cannot be created (Not a directory)'
  ), process.stderr
  assert process.stderr.count('\n') == 1 and not os.path.exists(out_dir)


def test_inference_imports_nothing_of_training():
  """The dependency runs one way: training uses inference's predict step, never the reverse."""
  code = (
    'import sys; import hpe_jax.inference, hpe_jax.evaluation.trained_run; '
    'print(sorted(m for m in sys.modules if m.startswith("hpe_jax.training")))'
  )
  process = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, check=True
  )
  assert process.stdout.strip() == '[]'
