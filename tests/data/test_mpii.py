"""MPII: the readers of the three encodings against the real files (valid.h5, the mmpose json
sample, the standard evaluator's ground truth), PCKh against the MPII evaluator's logic, a real
json build, a synthetic official .mat, and malformed input. Tests taking the `realdata` fixture
skip when realdata is absent."""

from __future__ import annotations

import json
import os
import shutil

from conftest import realdata_dir
import cv2
import h5py
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax import metrics
from hpe_jax.data import features
from hpe_jax.data.builders import base
from hpe_jax.data.builders import mpii

VALID_PEOPLE = 2958  # Tompson's validation split
VALID_ANNOTATED_JOINTS = 44_240  # realdata README
JSON_SAMPLE = 5  # test_mpii.json holds valid.h5 people 0-4


@pytest.fixture(scope='module')
def realdata() -> str:
  path = realdata_dir()
  if path is None:
    pytest.skip('realdata is absent')
  return os.path.join(path, 'mpii')


@pytest.fixture(scope='module')
def valid_h5(realdata) -> dict:
  with h5py.File(os.path.join(realdata, 'valid.h5'), 'r') as f:
    return {key: f[key][()] for key in f}


@pytest.fixture(scope='module')
def evaluator_gt(realdata) -> dict:
  """detections_our_format.mat: the standard evaluator's layout, joints x coords x people."""
  return scipy.io.loadmat(os.path.join(realdata, 'detections_our_format.mat'))


def _head_sizes(headboxes_src: np.ndarray) -> np.ndarray:
  """PCKh's head size: 0.6 x the diagonal of each head box. (2, 2, N) -> (N,)."""
  return 0.6 * np.linalg.norm(headboxes_src[1] - headboxes_src[0], axis=0)


# ---- the real files --------------------------------------------------------------------------


def test_h5_reader_on_valid_h5(realdata, valid_h5):
  people, skipped = mpii.read_h5(os.path.join(realdata, 'valid.h5'))
  assert len(people) == VALID_PEOPLE and not skipped
  part = valid_h5['part']
  annotated = np.any(part != 0, axis=-1)
  mask = np.stack([p.joints_mask for p in people])
  np.testing.assert_array_equal(mask, annotated)
  assert mask.sum() == VALID_ANNOTATED_JOINTS
  xy = np.stack([p.joints_2d for p in people])
  assert xy.shape == (VALID_PEOPLE, joints.NUM_JOINTS, 2)
  np.testing.assert_allclose(xy[annotated], part[annotated] - 1, atol=1e-4)  # 1-based -> 0-based
  visible = np.stack([p.joints_visible for p in people])
  np.testing.assert_array_equal(visible, valid_h5['visible'] * annotated)
  # Undoing Newell's box adjustment and redoing it (the reference's) gives back his box.
  np.testing.assert_allclose(
    np.stack([p.box_center for p in people]), valid_h5['center'] - 1, atol=1e-3
  )
  np.testing.assert_allclose([p.box_side for p in people], 200 * valid_h5['scale'], rtol=1e-6)
  np.testing.assert_allclose([p.head_size for p in people], valid_h5['normalize'])
  assert [p.image for p in people[:2]] == ['images/005808361.jpg', 'images/052475643.jpg']


def test_h5_and_json_encode_the_same_people_the_same_way(realdata, valid_h5):
  h5_people, _ = mpii.read_h5(os.path.join(realdata, 'valid.h5'))
  json_people, skipped = mpii.read_json(os.path.join(realdata, 'test_mpii.json'))
  assert len(json_people) == JSON_SAMPLE and not skipped
  for h5_person, json_person, h5_visible in zip(h5_people, json_people, valid_h5['visible']):
    assert h5_person.image == json_person.image
    np.testing.assert_array_equal(h5_person.joints_mask, json_person.joints_mask)
    np.testing.assert_allclose(h5_person.box_center, json_person.box_center, atol=1e-3)
    assert abs(h5_person.box_side - json_person.box_side) < 1e-3
    # No constant offset: both are 1-based. The h5 truncates (Newell casts to int): equal at
    # whole-pixel joints, up to 1 px lower at the sub-pixel necks and head tops.
    m = json_person.joints_mask > 0
    diff = (json_person.joints_2d - h5_person.joints_2d)[m]
    whole = np.abs(json_person.joints_2d - np.round(json_person.joints_2d))[m] < 1e-3
    assert np.abs(diff[whole]).max() < 1e-3
    assert np.all((diff[~whole] > 0) & (diff[~whole] < 1))
    # json joints_vis is the annotation mask, not MPII's occlusion flag.
    assert np.all(json_person.joints_visible == json_person.joints_mask)
  occluded = valid_h5['visible'][:JSON_SAMPLE] == 0
  assert np.any(occluded & (np.stack([p.joints_mask for p in json_people]) > 0))


def test_evaluator_ground_truth_is_valid_h5(realdata, valid_h5, evaluator_gt):
  names = [str(np.squeeze(n)) for n in np.ravel(evaluator_gt['dataset_joints'])]
  assert names == [
    'rank',
    'rkne',
    'rhip',
    'lhip',
    'lkne',
    'lank',
    'pelv',
    'thor',
    'neck',
    'head',
    'rwri',
    'relb',
    'rsho',
    'lsho',
    'lelb',
    'lwri',
  ]  # = joints.MPII16
  gt = evaluator_gt['pos_gt_src'].transpose(2, 0, 1)  # (N, 16, 2), 1-based
  part = valid_h5['part']
  annotated = np.any(part != 0, axis=-1)
  np.testing.assert_array_equal(evaluator_gt['jnt_missing'].T == 0, annotated)
  # valid.h5 holds the ground truth truncated toward zero ...
  agree = (np.abs(gt - part).max(-1) < 1) & np.all(np.abs(part) <= np.abs(gt) + 1e-3, axis=-1)
  # ... except 13 joints (11 people) that the evaluator's file stores with a coordinate of 0.
  differ = annotated & ~agree
  assert differ.sum() == 13 and np.all(np.any(gt[differ] == 0, axis=-1))
  h5_people, _ = mpii.read_h5(os.path.join(realdata, 'valid.h5'))
  np.testing.assert_allclose(
    [p.head_size for p in h5_people], _head_sizes(evaluator_gt['headboxes_src']), rtol=1e-6
  )


def _mpii_evaluator(pos_pred_src, pos_gt_src, headboxes_src, jnt_missing, threshold=0.5):
  """The standard MPII PCKh evaluation (Tompson's, as in pytorch-pose) in its own layout.

  pos_*_src (16, 2, N), headboxes_src (2, 2, N), jnt_missing (16, N) -> (per-joint PCKh (16,) in
  %, the reported mean in %: pelvis and thorax left out, joints weighted by annotated counts).
  """
  jnt_visible = 1 - jnt_missing
  uv_err = np.linalg.norm(pos_pred_src - pos_gt_src, axis=1)
  scaled_err = uv_err / _head_sizes(headboxes_src)[None] * jnt_visible
  jnt_count = jnt_visible.sum(axis=1)
  correct = (scaled_err <= threshold) * jnt_visible
  per_joint = 100.0 * correct.sum(axis=1) / jnt_count
  kept = np.array([j not in (6, 7) for j in range(16)])
  ratio = jnt_count[kept] / jnt_count[kept].sum()
  return per_joint, float(np.sum(per_joint[kept] * ratio))


def test_pckh_matches_the_mpii_evaluator(evaluator_gt, record_property):
  gt = evaluator_gt
  expected_per_joint, expected_mean = _mpii_evaluator(
    gt['pos_pred_src'], gt['pos_gt_src'], gt['headboxes_src'], gt['jnt_missing'].astype(float)
  )
  result = metrics.pckh(
    gt['pos_pred_src'].transpose(2, 0, 1),
    gt['pos_gt_src'].transpose(2, 0, 1),
    1 - gt['jnt_missing'].T,
    _head_sizes(gt['headboxes_src']),
    threshold=0.5,
  )
  np.testing.assert_allclose(result['per_joint'], expected_per_joint / 100, atol=1e-6)
  assert abs(result['mean'] - expected_mean / 100) < 1e-6
  print(f'PCKh@0.5 of detections_our_format.mat: {result["mean"]:.4f}')
  record_property('pckh_mean', result['mean'])
  assert 0.8 < result['mean'] < 0.95


# ---- a real build from the json encoding -----------------------------------------------------


def _json_manual_dir(realdata: str, path: str) -> str:
  """mpii_val.json = the realdata sample, an empty mpii_train.json, the 5 images (links), and
  mpii_gt_val.mat = the evaluator's ground truth of the same 5 people."""
  os.makedirs(os.path.join(path, 'images'))
  for name in os.listdir(os.path.join(realdata, 'images')):
    os.symlink(os.path.join(realdata, 'images', name), os.path.join(path, 'images', name))
  shutil.copy(os.path.join(realdata, 'test_mpii.json'), os.path.join(path, 'mpii_val.json'))
  with open(os.path.join(path, 'mpii_train.json'), 'w') as f:
    f.write('[]')
  gt = scipy.io.loadmat(os.path.join(realdata, 'detections_our_format.mat'))
  scipy.io.savemat(
    os.path.join(path, 'mpii_gt_val.mat'),
    {key: gt[key][..., :JSON_SAMPLE] for key in ('jnt_missing', 'pos_gt_src', 'headboxes_src')},
  )
  return path


def test_build_from_json_reprojects_to_the_annotated_pixels(realdata, tmp_path):
  manual_dir = _json_manual_dir(realdata, str(tmp_path / 'manual'))
  builder = mpii.Mpii(config='small', data_dir=str(tmp_path / 'data'), file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  assert list(builder.info.splits) == ['validation']  # the empty train json builds no split
  source = builder.as_data_source('validation', decoders={'image': tfds.decode.SkipDecoding()})
  records = [source[i] for i in range(len(source))]
  assert len(records) == JSON_SAMPLE
  with open(os.path.join(realdata, 'test_mpii.json')) as f:
    entries = {e['image']: e for e in json.load(f)}
  heads = dict(
    zip(
      entries,
      _head_sizes(
        scipy.io.loadmat(os.path.join(realdata, 'detections_our_format.mat'))['headboxes_src'][
          ..., :JSON_SAMPLE
        ]
      ),
    )
  )
  errors, control = [], []
  for record in records:
    name = record['image_name'].decode()
    entry = entries[name.removeprefix('images/')]
    mask = np.asarray(entry['joints_vis']) > 0
    np.testing.assert_array_equal(record['joints_mask'], mask)
    np.testing.assert_allclose(
      record['joints_2d'][mask], np.asarray(entry['joints'])[mask] - 1, atol=1e-4
    )
    # The reference's box, 0-based: centre y moved down by 15 x scale, side 1.25 x 200 x scale.
    (cx, cy), s = entry['center'], entry['scale']
    np.testing.assert_allclose(record['box_center'], [cx - 1, cy - 1 + 15 * s], atol=1e-3)
    assert abs(record['box_side'] - 250 * s) < 1e-2
    assert abs(record['head_size'] - heads[entry['image']]) < 1e-3

    original = cv2.imread(os.path.join(manual_dir, name))[..., ::-1]
    crop = features.decode_jpeg(record['image'])
    size = crop.shape[0]
    crop_to_image = record['crop_to_image'].astype(np.float64)
    image_to_crop = geometry.invert_affine(crop_to_image)
    np.testing.assert_allclose(
      image_to_crop,
      geometry.crop_affine(
        record['box_center'], features.CROP_MARGIN * record['box_side'], 0.0, size
      ),
      atol=1e-3,
    )
    points = record['joints_2d'][mask]
    in_crop = geometry.transform_points(image_to_crop, points)
    assert np.all((in_crop > -0.5) & (in_crop < size - 0.5))
    # The crop shrinks these people ~9x, so compare at whole crop pixels: the crop's pixel
    # nearest each joint against the original at that pixel's centre, which lies within half a
    # crop pixel of the annotated joint.
    pixel = np.round(in_crop).astype(int)
    expected = _bilinear(original, geometry.transform_points(crop_to_image, pixel.astype(float)))
    for shift, out in ((0, errors), (4, control)):
      at = np.clip(pixel + shift, 0, size - 1)
      out.append(np.abs(crop[at[:, 1], at[:, 0]].astype(np.float32) - expected).mean())
  # JPEG (quality 90) of the fine detail of a 9x reduction changes a pixel by several levels;
  # 4 crop pixels away is other content.
  assert np.mean(errors) < 10, errors
  assert np.mean(control) > 3 * np.mean(errors), (control, errors)


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
  """image (H, W, 3) sampled at pixel positions xy (N, 2) -> (N, 3) float32."""
  maps = xy.astype(np.float32).reshape(1, -1, 2)
  return cv2.remap(image, maps, None, cv2.INTER_LINEAR).reshape(-1, 3).astype(np.float32)


# ---- a synthetic official release ------------------------------------------------------------


def _structs(*entries: dict) -> np.ndarray:
  """A MATLAB struct array (1, n) for scipy.io.savemat; a single dict saves as a 1x1 struct."""
  array = np.zeros((1, len(entries)), dtype=[(key, object) for key in entries[0]])
  for i, entry in enumerate(entries):
    for key, value in entry.items():
      array[0, i][key] = value
  return array


EMPTY = np.zeros((0, 0))  # MATLAB's []


def _point(joint, x, y, is_visible):
  return {'id': joint, 'x': x, 'y': y, 'is_visible': is_visible}


def _write_release(manual_dir: str, split_index: int = 1, split_person: int = 0):
  """An official .mat with 4 images, and a valid.h5 naming b.jpg (at annolist position
  `split_index`), person `split_person` (both 0-based in Newell's files):
  a.jpg (train): person 0 with 4 points (is_visible as int, string, empty), person 1 without
    annopoints;
  b.jpg (train): a single-struct annorect whose annopoints hold a single point;
  c.jpg (test): a person with objpos and scale only;
  d.jpg (train): an empty annorect.
  """
  rect = {'x1': 0, 'y1': 0, 'x2': 0, 'y2': 0, 'scale': 0, 'objpos': 0, 'annopoints': 0}
  a_people = _structs(
    dict(
      rect,
      x1=101,
      y1=11,
      x2=131,
      y2=51,
      scale=2.0,
      objpos={'x': 121, 'y': 91},
      annopoints={
        'point': _structs(
          _point(9, 116.5, 12.25, 1),
          _point(0, 110, 190, '0'),
          _point(12, 100, 60, EMPTY),
          _point(13, 140, 60, '1'),
        )
      },
    ),
    dict(
      rect,
      x1=EMPTY,
      y1=EMPTY,
      x2=EMPTY,
      y2=EMPTY,
      scale=1.5,
      objpos={'x': 300, 'y': 100},
      annopoints=EMPTY,
    ),
  )
  b_person = {
    'x1': 11,
    'y1': 21,
    'x2': 41,
    'y2': 61,
    'scale': 1.0,
    'objpos': {'x': 51, 'y': 81},
    'annopoints': {'point': _point(8, 26, 62, 0)},
  }
  annolist = _structs(
    {'image': {'name': 'a.jpg'}, 'annorect': a_people},
    {'image': {'name': 'b.jpg'}, 'annorect': b_person},
    {'image': {'name': 'c.jpg'}, 'annorect': {'scale': 3.0, 'objpos': {'x': 5, 'y': 5}}},
    {'image': {'name': 'd.jpg'}, 'annorect': EMPTY},
  )
  release = {
    'annolist': annolist,
    'img_train': np.array([[1, 1, 0, 1]], np.uint8),
    'single_person': np.zeros((4, 1), object),
    'act': EMPTY,
  }
  scipy.io.savemat(os.path.join(manual_dir, mpii.OFFICIAL_MAT), {'RELEASE': release})
  part = np.zeros((1, 16, 2))
  part[0, 8] = (26, 62)  # Newell's part: 1-based, whole pixels
  with h5py.File(os.path.join(manual_dir, mpii.SPLIT_H5), 'w') as f:
    f['imgname'] = np.array([b'b.jpg'])
    f['index'] = np.array([float(split_index)])
    f['person'] = np.array([float(split_person)])
    f['part'] = part


def test_official_mat_reader(tmp_path):
  _write_release(str(tmp_path))
  builder = mpii.Mpii(data_dir=str(tmp_path / 'data'))
  people = builder.read_annotations(str(tmp_path))
  assert builder.read_report == {
    'train': {mpii.NO_JOINTS: 1, mpii.NO_BOX: 0},  # a.jpg person 1; the test image not counted
    'validation': {mpii.NO_JOINTS: 0, mpii.NO_BOX: 0},
  }
  [train], [validation] = people['train'], people['validation']

  assert (train.image, train.person_index) == ('images/a.jpg', 0)
  annotated = [9, 0, 12, 13]
  np.testing.assert_array_equal(np.flatnonzero(train.joints_mask), sorted(annotated))
  np.testing.assert_allclose(
    train.joints_2d[annotated], [[115.5, 11.25], [109, 189], [99, 59], [139, 59]]
  )  # minus 1
  # is_visible 1, '0', [] (not given: 1), '1'; joints not annotated are 0 like the mask.
  np.testing.assert_array_equal(train.joints_visible[annotated], [1, 0, 1, 1])
  assert train.joints_visible.sum() == 3
  np.testing.assert_allclose(train.box_center, [120, 90 + 15 * 2.0])
  assert train.box_side == pytest.approx(1.25 * 200 * 2.0)
  assert train.head_size == pytest.approx(0.6 * np.hypot(30, 40))

  assert (validation.image, validation.person_index) == ('images/b.jpg', 0)
  np.testing.assert_array_equal(np.flatnonzero(validation.joints_mask), [8])
  np.testing.assert_allclose(validation.joints_2d[8], [25, 61])
  assert validation.joints_visible[8] == 0
  assert validation.head_size == pytest.approx(0.6 * np.hypot(30, 40))


@pytest.mark.parametrize(
  'index, person, message',
  [
    (2, 0, r'valid\.h5 entry 0: index 2 \(0-based\) is not image b\.jpg'),
    (1, 1, r'valid\.h5 entry 0: b\.jpg person 1 \(0-based\) is not an annotated person'),
  ],
)
def test_official_mat_split_indices_are_0_based(tmp_path, index, person, message):
  _write_release(str(tmp_path), split_index=index, split_person=person)  # as if 1-based
  with pytest.raises(base.AnnotationError, match=message):
    mpii.read_manual_dir(str(tmp_path))


def test_layout_precedence(tmp_path):
  def touch(*names):
    for name in names:
      (tmp_path / name).write_bytes(b'')

  touch('train.h5', 'valid.h5')
  assert mpii.detect_layout(str(tmp_path)).kind == 'h5'
  touch('mpii_train.json', 'mpii_val.json')
  assert mpii.detect_layout(str(tmp_path)).train == 'mpii_train.json'
  touch(mpii.OFFICIAL_MAT)
  assert mpii.detect_layout(str(tmp_path)).kind == 'official'


# ---- malformed input -------------------------------------------------------------------------


def test_truncated_files_name_the_file(tmp_path):
  _write_release(str(tmp_path))
  for name in (mpii.OFFICIAL_MAT, mpii.SPLIT_H5):
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
  with pytest.raises(base.AnnotationError, match=f'cannot read .*{mpii.OFFICIAL_MAT}: '):
    mpii.read_manual_dir(str(tmp_path))
  with pytest.raises(base.AnnotationError, match=r'cannot read .*valid\.h5: '):
    mpii.read_h5(str(tmp_path / mpii.SPLIT_H5))


def test_official_mat_without_the_split_file(tmp_path):
  _write_release(str(tmp_path))
  os.remove(tmp_path / mpii.SPLIT_H5)
  with pytest.raises(
    base.AnnotationError,
    match=r'^valid\.h5 missing in .*need '
    r'mpii_human_pose_v1_u12_1\.mat and valid\.h5',
  ):
    mpii.read_manual_dir(str(tmp_path))


def test_malformed_json_entries(tmp_path):
  good = {
    'image': 'a.jpg',
    'center': [50, 50],
    'scale': 1.0,
    'joints': [[10, 10]] * 16,
    'joints_vis': [1] * 16,
  }
  path = tmp_path / 'mpii_val.json'
  cases = [
    (
      dict(good, joints=[[10, 10]] * 15),
      r"mpii_val\.json entry 1: 'joints' has shape \(15, 2\), expected \(16, 2\)",
    ),
    ({k: v for k, v in good.items() if k != 'center'}, r"mpii_val\.json entry 1: missing 'center'"),
    (dict(good, scale='big'), r"mpii_val\.json entry 1: 'scale' is not numeric"),
  ]
  for bad, message in cases:
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(base.AnnotationError, match=message):
      mpii.read_json(str(path))
  path.write_text('[{"image": ')
  with pytest.raises(base.AnnotationError, match=r'cannot read .*mpii_val\.json: '):
    mpii.read_json(str(path))
