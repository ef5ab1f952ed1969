"""Shared test fixtures: a tiny built synthetic dataset and a tiny training config."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile

# One persistent compilation cache for the whole session, set before anything imports jax and
# inherited by the commands tests run: the tiny models compile once rather than once per run.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='hpe_jax_tests_jit_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
# Every compiled program goes in it, also the small ones (a model's initialisers), so that each
# command a test runs reads back what this process or an earlier command compiled.
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
# The tests compile hundreds of tiny programs and run each a few times: LLVM's optimisations of
# their CPU code cost more than they save (they took a third of the suite's time). The programs
# (HLO) are the same, only their machine code is less optimised; unless $XLA_FLAGS sets the
# level, it is 0 here and in the commands the tests run.
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0'
  ).strip()

# The tests run in one process per core (pyproject's addopts): on a GPU, each takes the memory it
# needs rather than JAX's default 75% of it, which would leave the second process none.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import cv2
import h5py
import numpy as np
import pytest

from hpe_jax import default_config
from hpe_jax import geometry
from hpe_jax.data import pipeline

TINY_DATASET = 'synthetic_humans/tiny'
TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def realdata_dir() -> str | None:
  """$HPE_REALDATA or ../shared/realdata beside the repo, if present."""
  for path in (
    os.environ.get('HPE_REALDATA', ''),
    os.path.join(REPO, '..', 'shared', 'realdata'),
  ):
    if path and os.path.isdir(path):
      return path
  return None


def photo_path(directory) -> str:
  """A real MPII photo if realdata is present, else a synthetic JPEG (so nothing is skipped)."""
  realdata = realdata_dir()
  images = os.path.join(realdata or '', 'mpii', 'images')
  if realdata and os.path.isdir(images) and os.listdir(images):
    return os.path.join(images, sorted(os.listdir(images))[0])
  path = os.path.join(directory, 'synthetic.jpg')
  rng = np.random.default_rng(0)
  cv2.imwrite(path, cv2.GaussianBlur(rng.integers(0, 256, (360, 480, 3), np.uint8), (9, 9), 3))
  return path


TWO_PEOPLE_PHOTO = '052475643.jpg'  # MPII: two men seated side by side, 854 x 480
# valid.h5 annotates only the man on the left in this photo; the man on the right's box
# (x, y, w, h) is read off the photo, around his head, hands and shoes.
RIGHT_MAN_BOX = (455.0, 100.0, 145.0, 352.0)


def annotated_box(realdata: str, image_name: str) -> tuple[float, ...]:
  """The box of the person valid.h5 annotates in `image_name`: the extent of the annotated
  joints widened by 10% on each side (as a detector's box reaches past the joints).

  valid.h5's center and scale (side = 200 * scale) give a padded square instead, wide enough here
  to reach past the other man's centre: a detector's box is tight.
  """
  with h5py.File(os.path.join(realdata, 'mpii', 'valid.h5')) as f:
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f['imgname'][:]]
    [row] = [i for i, name in enumerate(names) if name == image_name]
    part = f['part'][row]
  part = part[(part > 0).all(1)]  # (0, 0): not annotated
  low, high = part.min(0), part.max(0)
  margin = 0.1 * (high - low)
  x, y = low - margin
  w, h = high - low + 2 * margin
  return (float(x), float(y), float(w), float(h))


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A data directory holding the tiny synthetic dataset, built once per test session."""
  from hpe_jax.data import datasets

  path = str(tmp_path_factory.mktemp('tfds'))
  datasets.resolve(TINY_DATASET, '2d', path)
  return path


def tiny_config(data_dir: str, *, depth: bool = False, **overrides):
  """A pretrain (or, with depth, fine-tune) config small enough for a test to train in seconds."""
  c = default_config.base_config()
  c.model.name = 'resnet18'
  c.model.width = 8
  c.model.head_channels = 16
  c.model.depth = depth
  c.data.data_dir = data_dir
  c.data.train_2d = TINY_DATASET
  c.data.train_3d = TINY_DATASET if depth else ''
  c.data.eval = TINY_DATASET
  c.data.image_size = 64
  c.data.threads = 1
  c.train.batch_size = 8
  c.train.num_steps = 6
  c.train.log_every = 1
  c.train.checkpoint_every = 3
  c.train.depth_weight = 0.1 if depth else 0.0
  c.train.geometric_weight = 0.01 if depth else 0.0
  for key, value in overrides.items():
    c.update_from_flattened_dict({key: value})
  return c


def tiny_main_command(workdir, data_dir: str, *overrides: str) -> list[str]:
  """The `python -m hpe_jax.main` command of a tiny 2D run (no evaluation) in `workdir`: the
  train step of `tiny_config(data_dir)`, so that it reads that step back from the compilation
  cache (configs/pretrain.py's learning-rate drop would make it another program)."""
  return [
    sys.executable,
    '-m',
    'hpe_jax.main',
    f'--config={REPO}/configs/pretrain.py',
    f'--workdir={workdir}',
    f'--config.data.data_dir={data_dir}',
    f'--config.data.train_2d={TINY_DATASET}',
    '--config.data.eval=',
    '--config.model.width=8',
    '--config.model.head_channels=16',
    '--config.data.image_size=64',
    '--config.train.batch_size=8',
    '--config.data.threads=1',
    '--config.train.log_every=1',
    '--config.train.lr_drop_steps=()',
    *overrides,
  ]


@pytest.fixture(scope='session')
def tiny_2d_run(data_dir, tmp_path_factory) -> str:
  """The workdir of `tiny_config(data_dir)` trained: 6 steps, checkpoints 3 and 6 (grafting,
  resuming)."""
  from hpe_jax.training import train

  workdir = str(tmp_path_factory.mktemp('tiny_2d_run'))
  train.train_and_evaluate(tiny_config(data_dir), workdir)
  return workdir


def metrics_records(workdir) -> list[dict]:
  """The records of a run's metrics.jsonl, in order."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='session')
def tiny_depth_run(data_dir, tmp_path_factory) -> str:
  """The workdir of a tiny depth model trained for a few steps (evaluate, predict, study)."""
  from hpe_jax.training import train

  workdir = str(tmp_path_factory.mktemp('tiny_depth_run'))
  train.train_and_evaluate(tiny_config(data_dir, depth=True), workdir)
  return workdir


def oracle_predictions(ref, *, projected_2d: bool, image_size: int = 64) -> dict:
  """The evaluation fields of every example of a built split (`pipeline.eval_batches`) with a
  perfect prediction: 'pred_depth' = the ground-truth depth targets, 'pred_xy' = the stored 2D
  labels or, with `projected_2d`, the 3D labels projected through the stored camera (lens
  distortion included; the stored 2D where a joint has no label), in input pixels.
  `scoring.score` takes the result."""
  config = default_config.base_config()
  config.data.image_size = image_size
  config.data.threads = 1
  batches = list(pipeline.eval_batches(ref, config, batch_size=4))
  r = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
  valid = r.pop('valid')
  r = {key: value[valid] for key, value in r.items()}
  r['pred_depth'] = r['depth']
  r['pred_xy'] = r['joints']
  if projected_2d:
    with np.errstate(divide='ignore', invalid='ignore'):  # unlabelled joints: zeros in 3D
      image_xy = geometry.project(
        r['joints_3d'].astype(np.float64), r['intrinsics'], r['distortion']
      )
    image_xy = np.where(r['joints_mask'][..., None] > 0, image_xy, r['joints_2d'])
    r['pred_xy'] = np.stack(
      [
        geometry.transform_points(geometry.invert_affine(affine), xy)
        for affine, xy in zip(r['input_to_image'].astype(np.float64), image_xy)
      ]
    )
  return r


def assert_same_example(ours: dict, theirs: dict) -> None:
  """Two parsed examples hold the same keys, types, dtypes, shapes and values."""
  assert ours.keys() == theirs.keys()
  for key, value in theirs.items():
    assert type(ours[key]) is type(value), key
    if isinstance(value, np.ndarray):
      assert (ours[key].dtype, ours[key].shape) == (value.dtype, value.shape), key
    np.testing.assert_array_equal(ours[key], value, err_msg=key)
