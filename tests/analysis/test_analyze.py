"""hpe-analyze (hpe_jax.analysis.analyze_run, hpe_jax.commands.analyze): the synthetic squat
clip's true joints give exactly its repetitions and their angles; the files it writes read back;
bad input is a one-line error or a stated skip."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from conftest import TESTS
import numpy as np
import pytest

from hpe_jax import joints
from hpe_jax.analysis import analyze_run
from hpe_jax.analysis import angles
from hpe_jax.data.synthetic import clip

REPS = 3


@pytest.fixture(scope='module')
def squat_truth(tmp_path_factory):
  """Two people squatting REPS times, 120 frames at 30 fps, as a frames file of true joints."""
  folder = tmp_path_factory.mktemp('squat')
  video = folder / 'squat.mp4'
  labels = clip.write_clip(
    str(video), frames=120, width=96, height=72, people=2, motion='squat', reps=REPS, seed=2
  )
  jsonl = folder / 'squat_truth.jsonl'
  clip.write_truth(labels, jsonl, video=str(video))
  return {'labels': labels, 'jsonl': str(jsonl), 'folder': folder}


@pytest.fixture(scope='module')
def analysed(squat_truth):
  lines = []
  summary = analyze_run.analyze(
    squat_truth['jsonl'], reps='knee_flexion_left', skeleton='h36m17', log=lines.append
  )
  return summary, lines


def test_true_squats_count_exactly(analysed):
  summary, _ = analysed
  counts = {track: r['count'] for track, r in summary['repetitions']['tracks'].items()}
  assert counts == {'0': REPS, '1': REPS}
  for result in summary['repetitions']['tracks'].values():
    for rep in result['repetitions']:
      assert 85 < rep['max_deg'] < 115 and rep['min_deg'] < 20  # the squat's bottom and top
      assert 0.5 < rep['duration_s'] < 120 / 30 / REPS


def test_angles_csv_holds_every_frame_and_the_registry_angles(analysed, squat_truth):
  summary, _ = analysed
  with open(summary['files']['angles']) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['time_s', 'frame', 'track', *angles.NAMES]
  assert len(rows) == 120 * 2
  assert [(int(r['frame']), int(r['track'])) for r in rows[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
  # The CSV's angles are the registry's on the true joints (to its 0.1 degree).
  true_3d = squat_truth['labels']['joints_3d'][:, 1].astype(np.float64)
  expected = angles.compute(true_3d, np.array([0.0, -1.0, 0.0]))
  got = np.array([float(r['knee_flexion_right']) for r in rows if r['track'] == '1'])
  np.testing.assert_allclose(got, expected['knee_flexion_right'], atol=0.06)
  stats = summary['tracks'][1]['angles']['knee_flexion_right']
  assert stats['frames_measured'] == 120
  assert stats['max'] == pytest.approx(np.max(expected['knee_flexion_right']), abs=0.06)


def test_pandas_reads_the_csv_as_is(analysed):
  pandas = pytest.importorskip('pandas', reason='pandas is not installed')
  frame = pandas.read_csv(analysed[0]['files']['angles'])
  assert frame['knee_flexion_left'].dtype == np.float64 and len(frame) == 240


def test_joints_csv_is_h36m17_in_mm_y_up(analysed, squat_truth):
  summary, _ = analysed
  with open(summary['files']['joints']) as f:
    header = next(csv.reader(f))
  assert header[3:6] == [f'{joints.H36M17[0]}_x', f'{joints.H36M17[0]}_y', f'{joints.H36M17[0]}_z']
  assert len(header) == 3 + 17 * 3
  table = np.loadtxt(summary['files']['joints'], delimiter=',', skiprows=1)
  head = joints.H36M17.index('head')
  # y up: the head is above the pelvis (at 0), by about a standing person's 750 mm at frame 0.
  assert 600 < table[0, 3 + 3 * head + 1] < 900
  assert summary['joint_names'] == list(joints.H36M17)


def test_summary_and_report_files(analysed):
  summary, _ = analysed
  files = summary['files']
  with open(files['summary']) as f:
    assert json.load(f)['repetitions']['angle'] == 'knee_flexion_left'
  assert summary['up']['method'] == 'camera' and 'level' in summary['up']['note']
  for key in ('plot', 'markdown', 'report', 'angles', 'joints'):
    assert os.path.getsize(files[key]) > 0, key
  for track in ('track0', 'track1'):
    assert [os.path.splitext(p)[1] for p in files[track]] == ['.trc', '.c3d', '.bvh']
    assert all(os.path.getsize(p) > 0 for p in files[track])


def _frames_file(path, lines) -> str:
  with open(path, 'w') as f:
    for line in lines:
      f.write((line if isinstance(line, str) else json.dumps(line)) + '\n')
  return str(path)


def _person(track, depth=True, score=0.9):
  rng = np.random.default_rng(track)
  return {
    'joints_2d': rng.uniform(0, 100, (16, 2)).tolist(),
    'scores': [score] * 16,
    'joints_3d': rng.uniform(-500, 500, (16, 3)).tolist() if depth else None,
    'track': track,
  }


@pytest.mark.parametrize(
  'lines, match',
  [
    (['[{"image_id": 1, "keypoints": []}]'], r':1: a JSON list, not an object: not a frames'),
    ([{'image_id': 1}], r':1: no "frame": not a frames file of hpe-predict \(one \{"frame"'),
    (['not json'], r':1: not JSON'),
    ([{'frame': 0, 'time_s': 0.0, 'people': [{'joints_2d': []}]}], r':1: no .*track'),
    ([], 'holds no frames'),
    ([{'frame': i, 'time_s': i / 30, 'people': []} for i in range(5)], 'no person was predicted'),
  ],
)
def test_files_that_are_not_ours_are_one_line_errors(tmp_path, lines, match):
  path = _frames_file(tmp_path / 'x.jsonl', lines)
  with pytest.raises(analyze_run.AnalysisError, match=match) as error:
    analyze_run.analyze(path, log=lambda line: None)
  assert '\n' not in str(error.value)


def test_short_tracks_are_skipped_and_said(tmp_path):
  lines = [
    {'frame': i, 'time_s': i / 30, 'people': [_person(0)] + ([_person(1)] if i < 4 else [])}
    for i in range(20)
  ]
  said = []
  summary = analyze_run.analyze(_frames_file(tmp_path / 'x.jsonl', lines), log=said.append)
  assert [t['track'] for t in summary['tracks']] == [0]
  assert summary['skipped_tracks'][0]['track'] == 1 and summary['skipped_tracks'][0]['frames'] == 4
  assert any(line.startswith('track 1: skipped') for line in said)
  lines = [{'frame': i, 'time_s': i / 30, 'people': [_person(0)]} for i in range(5)]
  with pytest.raises(analyze_run.AnalysisError, match='too short to analyse'):
    analyze_run.analyze(_frames_file(tmp_path / 'y.jsonl', lines), log=said.append)


def test_low_scores_leave_gaps(tmp_path):
  lines = [
    {'frame': i, 'time_s': i / 30, 'people': [_person(0, score=0.1 if i % 2 else 0.9)]}
    for i in range(20)
  ]
  summary = analyze_run.analyze(_frames_file(tmp_path / 'x.jsonl', lines), log=lambda line: None)
  assert summary['tracks'][0]['angles']['knee_flexion_left']['frames_measured'] == 10
  with open(summary['files']['angles']) as f:
    rows = list(csv.DictReader(f))
  assert rows[1]['knee_flexion_left'] == '' and rows[0]['knee_flexion_left'] != ''


def test_a_two_d_run_gives_image_angles_said_once(tmp_path):
  lines = [{'frame': i, 'time_s': i / 30, 'people': [_person(0, depth=False)]} for i in range(12)]
  said = []
  summary = analyze_run.analyze(_frames_file(tmp_path / 'x.jsonl', lines), log=said.append)
  assert summary['angles_from'] == '2d' and 'image plane' in summary['note']
  assert sum('2D joints only' in line for line in said) == 1
  assert not any(key.startswith('track') for key in summary['files'])


def test_unknown_options_are_refused_before_reading():
  with pytest.raises(analyze_run.AnalysisError, match='--reps=knee: no angle .*knee_flexion_left'):
    analyze_run.analyze('missing.jsonl', reps='knee')
  with pytest.raises(analyze_run.AnalysisError, match='--skeleton=coco'):
    analyze_run.analyze('missing.jsonl', skeleton='coco')


def test_floor_up_needs_people_to_cover_ground(squat_truth):
  with pytest.raises(analyze_run.up_lib.FloorError, match='too little ground.*--up=camera'):
    analyze_run.analyze(squat_truth['jsonl'], up='floor', log=lambda line: None)


def test_floor_up_of_walkers_finds_the_cameras_pitch(tmp_path):
  labels = clip.write_clip(
    str(tmp_path / 'walk.mp4'), frames=90, width=160, height=120, people=2, seed=4
  )
  clip.write_truth(labels, tmp_path / 'walk.jsonl')
  focal = float(labels['intrinsics'][0])
  summary = analyze_run.analyze(
    str(tmp_path / 'walk.jsonl'), up='floor', focal_px=focal, log=lambda line: None
  )
  found = np.array(summary['up']['vector'])
  # The truth: the world's up seen from the clip's camera (it looks a little down).
  true_3d = labels['joints_3d'].reshape(-1, 16, 3).astype(np.float64)
  ankles = np.concatenate([true_3d[:, 0], true_3d[:, 5]])
  lowest = ankles[ankles[:, 1] > np.percentile(ankles[:, 1], 70)]
  _, _, vt = np.linalg.svd(lowest - lowest.mean(0))
  truth = vt[2] * np.sign(-vt[2][1])
  assert np.degrees(np.arccos(np.clip(found @ truth, -1, 1))) < 5.0


def test_the_command_prints_the_counts_and_refuses_bad_flags(squat_truth, tmp_path):
  out = tmp_path / 'analysis'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'hpe_jax.commands.analyze',
      squat_truth['jsonl'],
      '--reps=knee_flexion_right',
      f'--analysis_dir={out}',
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr
  assert f'repetitions of knee_flexion_right: track 0: {REPS}, track 1: {REPS}' in result.stdout
  assert (out / 'report.html').is_file()
  result = subprocess.run(
    [sys.executable, '-m', 'hpe_jax.commands.analyze', squat_truth['jsonl'], '--reps=elbow'],
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode != 0
  assert result.stderr.strip().count('\n') == 0 and 'elbow_flexion_left' in result.stderr


@pytest.mark.slow
def test_an_imported_reference_checkpoint_predicts_and_analyses(squat_truth, tmp_path):
  """The real-world path: the reference's released network (here the committed fixture's,
  random weights) imported with hpe-import-weights, then predict and analyze on a video."""
  from hpe_jax.inference import predict_run
  from hpe_jax.training import reference_run

  workdir = str(tmp_path / 'reference')
  reference_run.import_reference(
    os.path.join(TESTS, 'fixtures', 'torch_import', 'reference_resnet18.npz'),
    workdir,
    input_format='rgb',
    image_size=64,
    log=lambda line: None,
  )
  video = str(squat_truth['folder'] / 'squat.mp4')
  result = predict_run.predict(
    [video],
    workdir=workdir,
    out_dir=str(tmp_path / 'predictions'),
    log=lambda line: None,
    warn=lambda line: None,
  )
  jsonl = result['videos'][0]['files']['jsonl']
  # Random weights score every joint low: --min_score=0 keeps them, so that every file is made.
  summary = analyze_run.analyze(jsonl, reps='knee_flexion_left', min_score=0.0, log=lambda l: None)
  assert summary['angles_from'] == '3d' and summary['tracks'][0]['frames'] == 120
  assert summary['tracks'][0]['angles']['knee_flexion_left']['frames_measured'] == 120
  assert [os.path.splitext(p)[1] for p in summary['files']['track0']] == ['.trc', '.c3d', '.bvh']
  with open(summary['files']['report']) as f:
    assert 'data:video/mp4;base64,' in f.read()  # the overlay hpe-predict wrote, embedded
