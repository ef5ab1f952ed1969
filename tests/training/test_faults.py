"""Faults injected into tiny runs, builds and predictions: divergence, crashes, concurrent runs,
changed configs, bad labels, full or read-only disks. Each ends in one clear line or a counted,
reported skip, and loses nothing already saved (issue 12's cases, in its order)."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

from conftest import REPO
from conftest import TINY_DATASET
from conftest import realdata_dir
from conftest import tiny_config
from conftest import tiny_main_command
import cv2
from flax import nnx
import grain
import h5py
import jax
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from hpe_jax import default_config
from hpe_jax import joints
from hpe_jax import locks
from hpe_jax.data import datasets
from hpe_jax.data import features
from hpe_jax.data.builders import base
from hpe_jax.data.builders import lsp
from hpe_jax.data.builders import mpii
from hpe_jax.inference import predict_run
from hpe_jax.inference import records as records_lib
from hpe_jax.storage import checkpoint
from hpe_jax.storage import workdir as workdir_lib
from hpe_jax.training import step as step_lib
from hpe_jax.training import train


def _strict_records(workdir) -> list[dict]:
  """metrics.jsonl parsed as strict JSON (NaN or Infinity anywhere fails)."""

  def reject(constant):
    raise ValueError(f'non-standard JSON constant {constant}')

  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line, parse_constant=reject) for line in f]


def _train_steps(workdir) -> list[int]:
  return [r['step'] for r in _strict_records(workdir) if 'split' not in r]


def _config(data_dir, **overrides):
  return tiny_config(data_dir, **{'data.eval': '', **overrides})


def _run_cli(workdir, data_dir, *overrides, setup: str = ''):
  """Runs the tiny command; `setup`: Python run first in the child, which then execs the command
  (no preexec_fn: forking this multithreaded process is unsafe)."""
  command = tiny_main_command(workdir, data_dir, *overrides)
  if setup:
    command = [
      sys.executable,
      '-c',
      f'{setup}\nimport os, sys\nos.execv(sys.argv[1], sys.argv[1:])',
      *command,
    ]
  return subprocess.run(command, capture_output=True, text=True, cwd=REPO)


def _last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


@pytest.fixture(scope='module')
def three_step_run(data_dir, tmp_path_factory) -> str:
  """A finished tiny run with one checkpoint, at step 3 (tests resume copies of it)."""
  workdir = str(tmp_path_factory.mktemp('three_steps') / 'run')
  train.train_and_evaluate(_config(data_dir, **{'train.num_steps': 3}), workdir)
  return workdir


def _copy(run: str, tmp_path) -> str:
  workdir = str(tmp_path / 'run')
  shutil.copytree(run, workdir)
  return workdir


# ---- 1. divergence --------------------------------------------------------------------------


@pytest.mark.slow
def test_divergence_stops_at_once_with_exit_3_and_strict_json(data_dir, tmp_path):
  result = _run_cli(
    tmp_path / 'run', data_dir, '--config.train.lr=1e9', '--config.train.num_steps=20'
  )
  assert result.returncode == 3, result.stderr
  assert _last_line(result.stderr).startswith(
    'error: training diverged at step 2: loss nan, gradient norm nan; no checkpoint was saved '
    'before it'
  )
  assert '--config.train.lr (now 1e+09)' in result.stderr and 'Traceback' not in result.stderr
  records = _strict_records(tmp_path / 'run')
  assert [r['step'] for r in records] == [1, 2]
  assert records[1]['diverged'] is True and records[1]['loss'] is None
  assert checkpoint.saved_steps(str(tmp_path / 'run' / 'checkpoints')) == []


@pytest.mark.slow
def test_divergence_keeps_the_good_checkpoint_and_a_lower_lr_resumes_from_it(
  data_dir, tmp_path, capsys
):
  workdir = str(tmp_path / 'run')
  # lr x 1e12 from step 5: its update is huge but finite, step 6's loss is NaN.
  exploding = {'train.lr_drop_steps': (4,), 'train.lr_drop_factor': 1e12}
  with pytest.raises(
    train.TrainingDiverged, match='diverged at step 6: .* the last good checkpoint is step 3'
  ):
    train.train_and_evaluate(_config(data_dir, **exploding), workdir)
  assert checkpoint.saved_steps(os.path.join(workdir, 'checkpoints')) == [3]
  _, state = step_lib.init_state(_config(data_dir))
  weights, _ = checkpoint.graft(workdir, nnx.to_pure_dict(state['model']))
  assert all(np.isfinite(w).all() for w in jax.tree.leaves(weights))
  assert _strict_records(workdir)[-1]['diverged'] is True

  train.train_and_evaluate(_config(data_dir, **{**exploding, 'train.lr_drop_factor': 0.1}), workdir)
  out = capsys.readouterr().out
  assert 'Resuming with changed settings: train.lr_drop_factor 1000000000000.0 -> 0.1.' in out
  assert 'metrics.jsonl: dropped 3 record(s) after step 3' in out  # 4, 5, 6
  assert _train_steps(workdir) == [1, 2, 3, 4, 5, 6]
  assert all(r['loss'] is not None for r in _strict_records(workdir))


# ---- 2. checkpoints kept ----------------------------------------------------------------------


def test_keep_checkpoints_below_one_is_refused_before_anything_starts(tmp_path):
  result = _run_cli(tmp_path / 'run', '', '--config.train.keep_checkpoints=0')
  assert result.returncode == 2
  assert _last_line(result.stderr) == (
    'error: train.keep_checkpoints=0: keep at least 1 (the newest checkpoint is the trained model)'
  )
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_keep_one_keeps_the_final_checkpoint(data_dir, three_step_run, tmp_path):
  workdir = _copy(three_step_run, tmp_path)
  train.train_and_evaluate(_config(data_dir, **{'train.keep_checkpoints': 1}), workdir)
  assert checkpoint.saved_steps(os.path.join(workdir, 'checkpoints')) == [6]


# ---- 3. and 7. bad labels and truncated images --------------------------------------------------


def _lspet_release(manual_dir: str, joints_xyv: np.ndarray, images: dict[str, bytes]) -> None:
  os.makedirs(os.path.join(manual_dir, 'images'))
  scipy.io.savemat(
    os.path.join(manual_dir, 'joints.mat'), {'joints': joints_xyv.transpose(1, 2, 0)}
  )
  for name, data in images.items():
    with open(os.path.join(manual_dir, 'images', name), 'wb') as f:
      f.write(data)


def test_lspet_nan_and_inf_joints_and_a_truncated_jpeg_are_counted(tmp_path):
  rng = np.random.default_rng(0)
  xy = rng.uniform([10, 10], [70, 90], (10000, 14, 2))
  joints_xyv = np.concatenate([xy, np.ones((10000, 14, 1))], -1)
  joints_xyv[0, 3, 0] = np.nan  # one joint of person 1
  joints_xyv[1, :, :2] = np.inf  # every joint of person 2
  jpeg = lambda: features.encode_jpeg(rng.integers(0, 256, (100, 80, 3), np.uint8))
  whole = jpeg()
  images = {
    'im00001.jpg': jpeg(),
    'im00002.jpg': jpeg(),
    'im00003.jpg': whole[: len(whole) // 2],
    'im00004.jpg': whole,
  }
  _lspet_release(str(tmp_path / 'lspet'), joints_xyv, images)
  builder = lsp.LspExtended(
    config='small', data_dir=str(tmp_path / 'tfds'), file_format='array_record', allow_missing=True
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / 'lspet'))
  )
  report = builder.report['train']
  assert report['counts'] == {
    'written': 2,
    'non-finite joint labels (masked)': 2,
    'no annotated joints': 1,
    'unreadable image': 1,
    'missing image': 9996,
  }
  assert report['examples']['unreadable image'] == ['images/im00003.jpg']
  first = builder.as_data_source('train')[0]
  assert first['image_name'] == b'images/im00001.jpg'
  # The NaN hip also makes the pelvis (their midpoint) NaN: both are masked, nothing else.
  xy, mask = joints.MPII_FROM_LSP(joints_xyv[0, :, :2] - 1, np.ones(14, np.float32))
  expected = mask * np.isfinite(xy).all(axis=-1)
  assert expected.sum() == mask.sum() - 2
  np.testing.assert_array_equal(first['joints_mask'], expected)
  assert np.isfinite(first['joints_2d']).all() and np.isfinite(first['box_center']).all()


def test_truncation_check_on_jpeg_and_png_bytes():
  image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), np.uint8)
  for extension in ('.jpg', '.png'):
    ok, buffer = cv2.imencode(extension, image)
    data = buffer.tobytes()
    assert not base.truncated(data)
    assert not base.truncated(data + b'\0' * 100)  # padding after the end marker
    assert base.truncated(data[:-200])
  assert not base.truncated(b'BM not a jpeg or png')


def test_mpii_h5_nan_joint_is_masked_and_counted(tmp_path):
  realdata = realdata_dir()
  if realdata is None:
    pytest.skip('realdata is absent')
  manual_dir = tmp_path / 'mpii'
  os.makedirs(manual_dir)
  os.symlink(os.path.join(realdata, 'mpii', 'images'), manual_dir / 'images')
  with h5py.File(os.path.join(realdata, 'mpii', 'valid.h5')) as source:
    fields = {key: source[key][()] for key in source}
  names = [n.decode() if isinstance(n, bytes) else str(n) for n in fields['imgname']]
  present = set(os.listdir(manual_dir / 'images'))
  first = next(i for i, n in enumerate(names) if n in present and (fields['part'][i] > 0).all())
  fields['part'] = fields['part'].astype(np.float64)
  fields['part'][first, 0, 0] = np.nan
  for split in ('train.h5', 'valid.h5'):
    with h5py.File(manual_dir / split, 'w') as target:
      for key, value in fields.items():
        target[key] = value
  builder = mpii.Mpii(
    config='small', data_dir=str(tmp_path / 'tfds'), file_format='array_record', allow_missing=True
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  for split in ('train', 'validation'):
    counts = builder.report[split]['counts']
    assert counts['non-finite joint labels (masked)'] == 1, counts
  stored = [
    r
    for r in builder.as_data_source('validation')
    if r['image_name'].decode() == f'images/{names[first]}'
  ]
  assert any(r['joints_mask'][0] == 0 and r['joints_mask'][1:].all() for r in stored)
  assert all(np.isfinite(r['joints_2d']).all() for r in stored)


def test_finite_labels_masks_joints_and_rejects_a_bad_camera():
  person = base.Person(
    image='a.jpg',
    person_index=0,
    joints_2d=np.ones((16, 2), np.float32),
    joints_mask=np.ones(16, np.float32),
    joints_visible=np.ones(16, np.float32),
    box_center=np.zeros(2, np.float32),
    box_side=10.0,
    joints_3d=np.ones((16, 3)),
    eval_joints_3d=np.ones((17, 3)),
    eval_mask=np.ones(17),
    eval_visible=np.ones(17),
    intrinsics=np.ones(4),
    distortion=np.zeros(5),
  )
  person.joints_3d[5, 2] = np.nan
  person.eval_joints_3d[7] = np.inf
  person.fork_joints_3d = np.full((17, 3), np.nan)
  checked, mask, reasons = base.finite_labels(person, person.joints_mask)
  np.testing.assert_array_equal(mask, np.arange(16) != 5)
  np.testing.assert_array_equal(checked.eval_mask, np.arange(17) != 7)
  assert np.isfinite(checked.eval_joints_3d).all()
  assert checked.fork_joints_3d is None  # stored as zeros: the frame leaves mpjpe_fork
  assert reasons == [
    'non-finite joint labels (masked)',
    'non-finite evaluation labels (masked)',
    "non-finite labels of the fork's protocol (left out of mpjpe_fork)",
  ]
  person.intrinsics = np.array([1.0, np.nan, 0, 0])
  assert base.finite_labels(person, person.joints_mask)[0] is None


# ---- 4. resume with a changed config ---------------------------------------------------------


@pytest.mark.slow
def test_resume_refuses_a_changed_model_or_batch_and_keeps_config_json(
  data_dir, three_step_run, tmp_path
):
  workdir = _copy(three_step_run, tmp_path)
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = f.read()
  result = _run_cli(
    workdir,
    data_dir,
    '--config.model.width=16',
    '--config.train.batch_size=16',
    '--config.train.num_steps=6',
    '--config.train.checkpoint_every=3',
  )
  assert result.returncode == 2
  assert _last_line(result.stderr) == (
    f'error: cannot resume {workdir} with this config: model.width 8 -> 16; '
    'train.batch_size 8 -> 16 (its checkpoints hold another model, optimiser state or data '
    'position). Run with the old values to resume, or choose a new --workdir to start afresh'
  )
  with open(os.path.join(workdir, 'config.json')) as f:
    assert f.read() == saved
  assert sorted(os.listdir(workdir)) == [
    'checkpoints',
    'config.json',
    'lock',
    'metrics.jsonl',
    'tensorboard',
  ]


def test_config_changes_sorts_fields_into_refused_and_accepted():
  old = default_config.base_config()
  new = default_config.base_config()
  new.train.num_steps, new.train.lr, new.train.eval_every = 5, 1e-4, 10
  new.data.eval, new.model.init = 'mpii', 'scratch'
  assert workdir_lib.config_changes(old, new) == (
    [],
    [
      "data.eval 'synthetic_humans' -> 'mpii'",
      "model.init '' -> 'scratch'",
      'train.eval_every 0 -> 10',
      'train.lr 0.001 -> 0.0001',
      'train.num_steps 1000 -> 5',
    ],
  )
  new = default_config.base_config()
  new.seed, new.data.augment.flip, new.data.fraction_3d = 1, False, 0.25
  new.train.grad_clip = 1.0  # clipping switched on: the optimiser state gains a part
  refused, accepted = workdir_lib.config_changes(old, new)
  assert (
    refused
    == [
      'data.augment.flip True -> False',
      'data.fraction_3d 0.5 -> 0.25',
      'seed 0 -> 1',
      'train.grad_clip 0.0 -> 1.0',
    ]
    and accepted == []
  )
  old.train.grad_clip = 2.0  # a new threshold for clipping that stays on: accepted
  new = default_config.base_config()
  new.train.grad_clip = 1.0
  assert workdir_lib.config_changes(old, new) == ([], ['train.grad_clip 2.0 -> 1.0'])


@pytest.mark.slow
def test_accepted_changes_keep_the_earlier_config_beside(
  data_dir, three_step_run, tmp_path, capsys
):
  workdir = _copy(three_step_run, tmp_path)
  with open(os.path.join(workdir, 'config.json')) as f:
    first = f.read()
  train.train_and_evaluate(_config(data_dir, **{'train.num_steps': 4, 'train.lr': 5e-4}), workdir)
  assert (
    'Resuming with changed settings: train.lr 0.001 -> 0.0005; train.num_steps 3 -> 4.'
    in capsys.readouterr().out
  )
  with open(os.path.join(workdir, 'config.1.json')) as f:
    assert f.read() == first
  assert workdir_lib.read_config(workdir).train.lr == 5e-4
  assert _train_steps(workdir) == [1, 2, 3, 4]


# ---- 5. one run per workdir ------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_refuses_naming_the_holder(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  os.makedirs(workdir)
  with workdir_lib.exclusive(str(workdir)):
    result = _run_cli(workdir, data_dir)
  assert result.returncode == 2
  assert _last_line(result.stderr) == (
    f'error: {workdir} is in use by another run (PID {os.getpid()}); wait for it to end or '
    f'stop it (kill {os.getpid()}: it saves a checkpoint), or choose another --workdir'
  )
  assert sorted(os.listdir(workdir)) == ['lock']  # nothing else written


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  path = str(tmp_path / 'lock')
  holder = subprocess.Popen(
    [
      sys.executable,
      '-c',
      'import sys, time; from hpe_jax import locks\n'
      'with locks.exclusive(sys.argv[1]):\n  print("held", flush=True); time.sleep(60)',
      path,
    ],
    stdout=subprocess.PIPE,
    text=True,
    cwd=REPO,
  )
  assert holder.stdout.readline().strip() == 'held'
  with pytest.raises(locks.LockHeld) as held:
    with locks.exclusive(path):
      pass
  assert held.value.pid == str(holder.pid)
  holder.kill()
  holder.wait()
  with locks.exclusive(path):
    with open(path) as f:
      assert f.read().strip() == str(os.getpid())


# ---- 6. metrics.jsonl exact after a crash ----------------------------------------------------


def test_resume_drops_records_past_the_checkpoint_and_a_torn_line(tmp_path):
  log = workdir_lib.MetricsLog(str(tmp_path))
  for step in (1, 2, 3, 4):
    log.write({'step': step, 'loss': 1.0 / step})
  log.write({'step': 2, 'split': 'x:test', 'pck': 0.5})
  with open(log.path, 'a') as f:
    f.write('{"step": 5, "lo')  # the kill landed mid-write
  assert log.resume_at(3) == f'{log.path}: dropped 1 record(s) after step 3 and 1 torn line(s)'
  records = _strict_records(tmp_path)
  assert all(isinstance(record.pop('time'), float) for record in records)
  assert records == [
    {'step': 1, 'loss': 1.0},
    {'step': 2, 'loss': 0.5},
    {'step': 3, 'loss': 1 / 3},
    {'step': 2, 'split': 'x:test', 'pck': 0.5},
  ]
  log.write({'step': 4, 'loss': float('nan'), 'x': [float('inf')]})
  last = _strict_records(tmp_path)[-1]
  assert isinstance(last.pop('time'), float) and last == {'step': 4, 'loss': None, 'x': [None]}
  assert log.resume_at(4) == ''


# ---- 8. full disk, unreadable checkpoints ----------------------------------------------------


def _save_tiny_state(directory: str, step: int, **manager_kwargs):
  mngr = checkpoint.manager(directory, **manager_kwargs)
  state = {'w': np.ones((256, 256), np.float32)}
  checkpoint.save(mngr, step, state, iter(grain.MapDataset.range(1).to_iter_dataset()))
  checkpoint.wait(mngr)
  return mngr


def test_a_save_that_does_not_fit_is_refused_before_writing(tmp_path, monkeypatch):
  directory = str(tmp_path / 'checkpoints')
  mngr = _save_tiny_state(directory, 1)
  usage = shutil.disk_usage(directory)
  monkeypatch.setattr(shutil, 'disk_usage', lambda _: usage._replace(free=2**20))
  with pytest.raises(
    checkpoint.CheckpointIOError,
    match=r'saving step 2 in .* needs about 1\.2 MiB; 1\.0 MiB are free\. The '
    'checkpoints saved before are untouched',
  ):
    checkpoint.save(
      mngr,
      2,
      {'w': np.ones((256, 256), np.float32)},
      iter(grain.MapDataset.range(1).to_iter_dataset()),
    )
  assert sorted(os.listdir(directory)) == ['1']


# Files of at most 64 KiB: writing a checkpoint's arrays fails with EFBIG ("File too large").
_LIMIT_FILE_SIZE = 'import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))'


@pytest.mark.slow
def test_a_write_error_mid_save_ends_in_one_line_and_loses_nothing(
  data_dir, three_step_run, tmp_path
):
  workdir = _copy(three_step_run, tmp_path)
  args = ('--config.train.num_steps=6', '--config.train.checkpoint_every=3')
  result = _run_cli(workdir, data_dir, *args, setup=_LIMIT_FILE_SIZE)
  assert result.returncode == 2
  last = _last_line(result.stderr)
  assert re.match(
    rf'error: saving (step 6|a checkpoint) in {workdir}/checkpoints failed: File '
    rf'too large \({workdir}/checkpoints/6\.orbax-checkpoint-tmp/',
    last,
  ), last
  assert 'The checkpoints saved before are untouched' in last
  assert checkpoint.saved_steps(os.path.join(workdir, 'checkpoints')) == [3]
  resumed = _run_cli(workdir, data_dir, *args)
  assert resumed.returncode == 0, resumed.stderr
  assert 'Resumed' in resumed.stdout and 'at step 3.' in resumed.stdout
  assert _train_steps(workdir) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(
  data_dir, three_step_run, tmp_path, capfd
):
  workdir = _copy(three_step_run, tmp_path)
  train.train_and_evaluate(_config(data_dir), workdir)  # steps 4-6: checkpoints 3 and 6
  for path in glob.glob(
    os.path.join(workdir, 'checkpoints', '6', 'state', '**', 'd', '*'), recursive=True
  ):
    os.truncate(path, 10)
  capfd.readouterr()
  train.train_and_evaluate(_config(data_dir, **{'train.num_steps': 7}), workdir)
  out, err = capfd.readouterr()
  assert 'Traceback' not in err  # the failed read's leftovers are not reported again
  moved = os.path.join(workdir, 'unreadable_checkpoints', '6')
  assert f'warning: checkpoint step 6 in {workdir}/checkpoints cannot be read (' in out
  assert f'moved it to {moved}, resuming from step 3' in out
  assert os.path.isdir(moved)
  assert checkpoint.saved_steps(os.path.join(workdir, 'checkpoints')) == [3, 6, 7]
  assert _train_steps(workdir) == list(range(1, 8))


def test_no_readable_checkpoint_is_an_error_that_moves_nothing(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  _save_tiny_state(directory, 1).close()
  for path in glob.glob(os.path.join(directory, '1', 'state', '**', 'd', '*'), recursive=True):
    os.truncate(path, 10)
  data = iter(grain.MapDataset.range(1).to_iter_dataset())
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r'none of the checkpoints in .* can be read; the newest \(step 1\)',
  ):
    checkpoint.restore_newest(directory, {'w': np.zeros((256, 256), np.float32)}, data, print)
  assert os.listdir(directory) == ['1']


# ---- 9. smaller leaks ------------------------------------------------------------------------


@pytest.mark.parametrize(
  'override, message',
  [
    ('--config.train.batch_size=0', 'error: train.batch_size=0 must be positive'),
    ('--config.train.lr=0', 'error: train.lr=0.0 must be a positive number (the default is 1e-3)'),
    ('--config.train.lr=-1e-3', 'error: train.lr=-0.001 must be a positive number'),
    ('--config.train.no_such_field=1', 'error: a --config.* override names no config field'),
  ],
)
@pytest.mark.slow
def test_bad_values_are_one_line_before_anything_starts(tmp_path, override, message):
  result = _run_cli(tmp_path / 'run', '', override)
  assert result.returncode == 2 and _last_line(result.stderr).startswith(message), result.stderr
  assert 'Traceback' not in result.stderr and not (tmp_path / 'run').exists()


# Takes away root's power to write where permissions forbid it (for others a harmless no-op):
# prctl(PR_CAPBSET_DROP) of CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH before the command starts.
_WITHOUT_PERMISSION_OVERRIDE = (
  'import ctypes\nlibc = ctypes.CDLL(None)\n'
  'for capability in (1, 2):\n  libc.prctl(24, capability, 0, 0, 0)'
)


@pytest.mark.slow
def test_a_read_only_workdir_is_one_line(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  os.makedirs(workdir)
  os.chmod(workdir, 0o555)
  try:
    result = _run_cli(workdir, data_dir, setup=_WITHOUT_PERMISSION_OVERRIDE)
  finally:
    os.chmod(workdir, 0o755)
  assert result.returncode == 2
  assert _last_line(result.stderr) == (
    f'error: cannot write in --workdir={workdir} (Permission denied): make it writable or '
    'choose another --workdir'
  )


def test_an_empty_manual_dir_is_one_line(tmp_path):
  os.makedirs(tmp_path / 'downloads')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'hpe_jax.commands.build_dataset',
      'lsp_extended',
      f'--manual_dir={tmp_path / "downloads"}',
      f'--data_dir={tmp_path / "tfds"}',
    ],
    capture_output=True,
    text=True,
  )
  # Exit 2, as every error a user can fix; the instructions are a page, so the line names the
  # command that prints them.
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert result.stderr == (
    f"error: --manual_dir='{tmp_path / 'downloads'}' is empty; lsp_extended is built from "
    'downloaded files: `hpe-build-dataset lsp_extended --help_download` says which and how to lay '
    'them out\n'
  )


def test_the_next_build_removes_an_interrupted_builds_leftovers(tmp_path, capsys):
  leftover = tmp_path / 'synthetic_humans' / 'tiny' / 'incomplete.ABC123_1.2.0'
  os.makedirs(leftover)
  (leftover / 'synthetic_humans-train.array_record-00000-of-00001').write_bytes(b'partial')
  datasets.resolve(TINY_DATASET, '2d', str(tmp_path))
  assert f'Removing {leftover}: the unfinished output of an interrupted build.' in (
    capsys.readouterr().out
  )
  assert not leftover.exists()
  assert not glob.glob(str(tmp_path / 'synthetic_humans' / 'tiny' / 'incomplete.*'))


@pytest.mark.parametrize(
  'box, message',
  [
    ((0, 0, 1e308, 1e308), 'is over 10 times the'),
    ((-500, -500, 100, 100), 'lies wholly outside the'),
    ((10, 1000, 50, 50), 'lies wholly outside the'),
  ],
)
def test_boxes_off_the_image_or_absurdly_large_name_the_image(
  tiny_depth_run, tmp_path, box, message
):
  photo = str(tmp_path / 'photo.jpg')
  cv2.imwrite(photo, np.full((120, 100, 3), 128, np.uint8))
  with pytest.raises(ValueError, match=f'{photo}: box .* {message} 100 x 120 image'):
    predict_run.predict_files(tiny_depth_run, [photo], [box], out_dir=str(tmp_path / 'out'))


def test_low_scores_warn_in_the_json_and_on_stderr(tiny_depth_run, tmp_path, capsys):
  assert records_lib.low_confidence_warning(np.array([0.05, 0.31, 0.1])) == ''
  warning = records_lib.low_confidence_warning(np.full(16, 0.01))
  assert warning.startswith('no joint scores above 0.3 (best 0.01)')
  photo = str(tmp_path / 'flat.jpg')
  cv2.imwrite(photo, np.full((64, 64, 3), 128, np.uint8))
  [result] = predict_run.predict_files(tiny_depth_run, [photo], out_dir=str(tmp_path / 'out'))
  # 6 steps of training, a flat grey image
  assert np.max(result['people'][0]['prediction']['scores']) < 0.3
  assert result['record']['people'][0]['warning'].startswith('no joint scores above 0.3')
  assert f'warning: {photo}: no joint scores above 0.3' in capsys.readouterr().err
