"""Occlusion Person: a build from small pickles in the release format, unit detection, and
malformed input. No real Occlusion Person data is available: the fixture renders its own people."""

from __future__ import annotations

import os
import pickle

from conftest import tiny_config
import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data import features
from hpe_jax.data.builders import base
from hpe_jax.data.builders import occlusion_person as op
from hpe_jax.training import train

OP = joints.OCCLUSION_PERSON15.index
MPII = joints.MPII16.index
H36M = joints.H36M17.index
WIDTH, HEIGHT = 160, 120
INTRINSICS = {'fx': 250.0, 'fy': 240.0, 'cx': 79.5, 'cy': 59.5}
# A standing person (x right, y down, z forward; mm, relative to the root 'hip'): thighs 430 mm.
TEMPLATE = np.array(
  [
    [0, 0, 0],
    [-100, 0, 0],
    [-100, 430, 0],
    [-100, 850, 0],
    [100, 0, 0],
    [100, 430, 0],
    [100, 850, 0],
    [0, -250, 0],
    [0, -550, 0],
    [180, -500, 0],
    [200, -230, 0],
    [210, 20, 0],
    [-180, -500, 0],
    [-200, -230, 0],
    [-210, 20, 0],
  ],
  np.float64,
)
# (split, occluded joints, joints not annotated); the entry numbering runs across splits.
ENTRIES = (
  ('train', (), ()),
  ('train', ('r_knee', 'l_wrist'), ()),
  ('train', ('neck',), ('r_shoulder',)),
  ('validation', ('r_shoulder',), ()),
  ('validation', ('hip', 'belly', 'l_ankle'), ()),
)


def _entry(n: int, occluded, unannotated) -> dict:
  """Entry n: the template turned and moved in front of the camera, 2D = its projection."""
  angle = 0.4 * n - 0.5
  rotation = np.array(
    [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
  )
  xyz = TEMPLATE @ rotation.T + (40.0 * n - 80, 50.0, 5200.0 + 100 * n)
  intrinsics = np.array([INTRINSICS[k] for k in ('fx', 'fy', 'cx', 'cy')])
  vis = np.ones(15)
  vis[[OP(j) for j in unannotated]] = 0
  vis_2d = np.ones(15)
  vis_2d[[OP(j) for j in occluded]] = 0
  return {
    'image': f'images/s_{n:02d}/cam_{n % 4}/{n:06d}.jpg',
    'joints_2d': geometry.project(xyz, intrinsics),
    'joints_3d': xyz,
    'joints_gt': xyz + 1000.0,
    # multiview-pose style (15, 3) annotated flags and flat (15,) occlusion flags
    'joints_vis': np.repeat(vis[:, None], 3, axis=1),
    'joints_vis_2d': vis_2d,
    'center': np.array([80.0, 60.0]),
    'scale': np.array([0.5, 0.5]),
    'box': np.array([30, 10, 130, 110]),
    'subject': n // 2,
    'action': 3,
    'subaction': 1,
    'camera_id': n % 4,
    'image_id': 100 + n,
    'camera': {
      'R': np.eye(3),
      'T': np.zeros((3, 1)),
      **INTRINSICS,
      'k': np.zeros((3, 1)),
      'p': np.zeros((2, 1)),
    },
  }


def _entries() -> dict[str, list[dict]]:
  splits = {'train': [], 'validation': []}
  for n, (split, occluded, unannotated) in enumerate(ENTRIES):
    splits[split].append(_entry(n, occluded, unannotated))
  return splits


def _write(manual_dir, splits: dict[str, list[dict]], images: bool = True) -> None:
  """The two pickles and, with `images`, one image per entry: white disks on the joints."""
  for split, entries in splits.items():
    with open(os.path.join(manual_dir, op.SPLITS[split]), 'wb') as f:
      pickle.dump(entries, f)
    for entry in entries if images else ():
      image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
      for x, y in entry['joints_2d']:
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
      path = os.path.join(manual_dir, entry['image'])
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'wb') as f:
        f.write(features.encode_jpeg(image))


def _build(manual_dir, data_dir, **kwargs) -> op.OcclusionPerson:
  builder = op.OcclusionPerson(
    config='small', data_dir=str(data_dir), file_format='array_record', **kwargs
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


def _records(builder, split: str) -> list[dict]:
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def test_build_stores_consistent_2d_3d_and_occlusion(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  _write(manual_dir, _entries())
  builder = _build(manual_dir, tmp_path / 'tfds')
  assert builder.name == 'occlusion_person'
  assert {s: builder.report[s]['counts']['written'] for s in op.SPLITS} == {
    'train': 3,
    'validation': 2,
  }
  assert all(builder.report[s]['counts'].get(op.OFF_PROJECTION, 0) == 0 for s in op.SPLITS)
  records = _records(builder, 'train') + _records(builder, 'validation')
  entries = [e for split in op.SPLITS for e in _entries()[split]]
  crop_size = builder.builder_config.crop_size
  for n, ((_, occluded, unannotated), r) in enumerate(zip(ENTRIES, records)):
    mask = r['joints_mask'] > 0
    np.testing.assert_allclose(
      geometry.project(r['joints_3d'][mask], r['intrinsics']), r['joints_2d'][mask], atol=1e-3
    )
    assert r['has_3d'] and r['camera'] == str(n % 4).encode() and r['frame'] == 100 + n
    assert r['subject'] == str(n // 2).encode() and r['action'] == b'3'
    # Occlusion splits the eval joints exactly: nose and head are missing, and H36M names the
    # release joints (hip -> pelvis, belly -> spine, neck -> thorax).
    h36m_name = {'hip': 'pelvis', 'belly': 'spine', 'neck': 'thorax'}
    expected_mask = np.ones(17)
    expected_mask[[H36M('nose'), H36M('head')]] = 0
    expected_mask[[H36M(h36m_name.get(j, j)) for j in unannotated]] = 0
    expected_visible = expected_mask.copy()
    expected_visible[[H36M(h36m_name.get(j, j)) for j in occluded]] = 0
    np.testing.assert_array_equal(r['eval_mask'], expected_mask)
    np.testing.assert_array_equal(r['eval_visible'], expected_visible)
    np.testing.assert_allclose(
      r['eval_joints_3d'][H36M('thorax')], r['joints_3d'][MPII('upper_neck')], atol=1e-3
    )
    # The study fork's labels (datasets/occlusion_person.py convert_kps_unrealcv_mpii, then
    # mpii_to_h36m), every joint annotated or not: in numpy from its code.
    source = entries[n]['joints_3d']
    names = list(joints.OCCLUSION_PERSON15)
    mpii = np.stack(
      [
        source[names.index(name)]
        if name in names
        else (source[names.index('l_shoulder')] + source[names.index('r_shoulder')]) / 2
        if name == 'thorax'
        else source[names.index('neck')]  # head top <- neck; upper neck <- neck
        for name in [{'pelvis': 'hip', 'upper_neck': 'neck'}.get(j, j) for j in joints.MPII16]
      ]
    )
    fork = mpii[[6, 2, 1, 0, 3, 4, 5, 7, 8, 9, 9, 13, 14, 15, 12, 11, 10]]
    np.testing.assert_allclose(r['fork_joints_3d'], fork, atol=1e-3)
    # MPII: no head top; thorax (mid-shoulders) only where both shoulders are annotated.
    assert r['joints_mask'][MPII('head_top')] == 0
    assert r['joints_mask'][MPII('thorax')] == (not unannotated)
    if 'r_shoulder' in occluded:
      assert r['joints_visible'][MPII('thorax')] == 0
    # The crop holds every annotated joint, on its white disk.
    crop = np.asarray(r['image'])
    in_crop = geometry.transform_points(
      geometry.invert_affine(r['crop_to_image']), r['joints_2d'][mask]
    )
    assert ((in_crop >= 0) & (in_crop <= crop_size - 1)).all()
    values = cv2.remap(crop, in_crop.astype(np.float32).reshape(1, -1, 2), None, cv2.INTER_LINEAR)
    assert values.min() > 150


def test_metres_are_detected_and_converted(tmp_path):
  entries = _entries()['train']
  for entry in entries:
    entry['joints_3d'] = entry['joints_3d'] / 1000
  path = str(tmp_path / 'unrealcv_train.pkl')
  with open(path, 'wb') as f:
    pickle.dump(entries, f)
  people, counts = op.read_split(path)
  assert counts == {op.OFF_PROJECTION: 0, op.IN_METRES: 3}
  thigh = np.linalg.norm(people[0].joints_3d[MPII('r_hip')] - people[0].joints_3d[MPII('r_knee')])
  assert thigh == pytest.approx(430, abs=1e-2)

  for entry in entries:  # centimetres fit neither range
    entry['joints_3d'] = entry['joints_3d'] * 100
  with open(path, 'wb') as f:
    pickle.dump(entries, f)
  with pytest.raises(base.AnnotationError, match='median thigh length'):
    op.read_split(path)


def test_malformed_input(tmp_path):
  path = tmp_path / 'unrealcv_train.pkl'
  entries = _entries()['train']
  path.write_bytes(pickle.dumps(entries)[:100])
  with pytest.raises(base.AnnotationError, match=r'cannot read .*unrealcv_train\.pkl: '):
    op.read_split(str(path))

  del entries[1]['joints_3d']
  path.write_bytes(pickle.dumps(entries))
  with pytest.raises(base.AnnotationError, match=r"entry 1 field 'joints_3d' is missing"):
    op.read_split(str(path))

  path.write_bytes(pickle.dumps({'image': 'x.jpg'}))
  with pytest.raises(base.AnnotationError, match='expected a list of dicts'):
    op.read_split(str(path))


def test_missing_images_are_an_error(tmp_path):
  _write(tmp_path, _entries(), images=False)
  with pytest.raises(base.MissingImagesError):
    _build(tmp_path, tmp_path / 'tfds')


@pytest.mark.slow
def test_finetune_end_to_end_on_the_fixture(data_dir, tmp_path):
  """A fusion fine-tune mixing synthetic 2D samples with this 3D dataset trains and reports
  the 3D protocols, per action and split by occlusion."""
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  _write(manual_dir, _entries())
  _build(manual_dir, data_dir)
  config = tiny_config(
    data_dir,
    depth=True,
    **{
      'data.train_3d': 'occlusion_person/small',
      'train.num_steps': 2,
      'data.eval': 'occlusion_person/small:validation',
    },
  )
  final = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert final['num_examples'] == 2
  for key in ('mpjpe', 'pa_mpjpe', 'mpjpe_visible', 'mpjpe_occluded', 'pck3d_150', 'auc_3d'):
    assert np.isfinite(final[key]), key
  assert list(final['per_action']) == ['3'] and final['per_action']['3']['num_examples'] == 2
  assert final['per_action']['3']['mpjpe'] == pytest.approx(final['mpjpe'])
