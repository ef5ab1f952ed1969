"""LSP, LSP-Extended and FLIC: readers against the real annotation files, a real LSPET build, and
malformed input. Tests marked by the `realdata` fixture skip when realdata is absent."""

from __future__ import annotations

import os

from conftest import assert_same_example
from conftest import realdata_dir
import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from hpe_jax import joints
from hpe_jax.data import datasets
from hpe_jax.data import features
from hpe_jax.data.builders import base
from hpe_jax.data.builders import flic
from hpe_jax.data.builders import lsp

MPII = joints.MPII16.index
LSP = joints.LSP14.index
LSPET_VISIBLE = 123_213  # realdata README: visible joints of the 140,000 in LSPET's joints.mat
# LSP14 joints that are MPII joints of their own (all but neck -> upper_neck are the same name).
SAME_JOINT = {name: (name if name != 'neck' else 'upper_neck') for name in joints.LSP14}


@pytest.fixture(scope='module')
def realdata() -> str:
  path = realdata_dir()
  if path is None:
    pytest.skip('realdata is absent')
  return path


def _build(builder_class, manual_dir: str, data_dir: str, **kwargs):
  builder = builder_class(config='small', data_dir=data_dir, file_format='array_record', **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _records(builder, split: str) -> list[dict]:
  source = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  return [source[i] for i in range(len(source))]


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
  """image (H, W, 3) sampled at (x, y) pixel positions (N, 2) -> (N, 3) float."""
  maps = xy.astype(np.float32).reshape(1, -1, 2)
  return cv2.remap(image, maps, None, cv2.INTER_LINEAR).reshape(-1, 3).astype(np.float32)


def _write_lspet(manual_dir: str, joints_array: np.ndarray, images: dict[str, bytes | None]):
  """A manual_dir with joints.mat and images/<name> (None -> a random 100 x 80 photo)."""
  os.makedirs(os.path.join(manual_dir, 'images'), exist_ok=True)
  scipy.io.savemat(os.path.join(manual_dir, 'joints.mat'), {'joints': joints_array})
  rng = np.random.default_rng(0)
  for name, data in images.items():
    if data is None:
      data = features.encode_jpeg(rng.integers(0, 256, (100, 80, 3), np.uint8))
    with open(os.path.join(manual_dir, 'images', name), 'wb') as f:
      f.write(data)


def _tiny_lspet() -> np.ndarray:
  """A (14, 3, 10000) LSPET joints array: every joint visible, inside a 100 x 80 image."""
  rng = np.random.default_rng(1)
  xy = rng.uniform([10, 10], [70, 90], (10000, 14, 2))
  return np.concatenate([xy, np.ones((10000, 14, 1))], -1).transpose(1, 2, 0)


# ---- LSP-Extended --------------------------------------------------------------------------


def test_lspet_reader_masks_exactly_the_visible_joints(realdata):
  raw = scipy.io.loadmat(os.path.join(realdata, 'lspet', 'joints.mat'))['joints']
  flag = raw[:, 2, :].T  # (N, 14), 1 = visible
  xy = raw[:, :2, :].transpose(2, 0, 1) - 1  # (N, 14, 2) 0-based
  people = lsp.read_joints(os.path.join(realdata, 'lspet', 'joints.mat'), lsp.LSP_EXTENDED_LAYOUT)
  assert list(people) == ['train'] and len(people['train']) == 10_000
  assert people['train'][0].image == 'images/im00001.jpg'
  assert people['train'][-1].image == 'images/im10000.jpg'
  mask = np.stack([p.joints_mask for p in people['train']])
  visible = np.stack([p.joints_visible for p in people['train']])
  points = np.stack([p.joints_2d for p in people['train']])

  assert flag.sum() == LSPET_VISIBLE
  direct = [MPII(SAME_JOINT[name]) for name in joints.LSP14]
  assert mask[:, direct].sum() == LSPET_VISIBLE
  np.testing.assert_array_equal(mask[:, direct], flag)
  np.testing.assert_array_equal(visible, mask)
  np.testing.assert_allclose(points[:, direct], np.where(flag[..., None] == 1, xy, 0), atol=1e-4)
  # Junk coordinates (all at x <= 0 and y <= 0 in the file) never become annotated joints.
  junk = flag == 0
  assert (raw[:, :2, :].transpose(2, 0, 1)[junk] <= 0).all(axis=-1).all()
  assert not ((points[mask > 0] <= -1).all(axis=-1)).any()
  # Derived joints: only where both sources are visible, at their midpoint.
  for target, (a, b) in {
    'pelvis': ('r_hip', 'l_hip'),
    'thorax': ('r_shoulder', 'l_shoulder'),
  }.items():
    both = flag[:, LSP(a)] * flag[:, LSP(b)]
    np.testing.assert_array_equal(mask[:, MPII(target)], both)
    midpoint = (xy[:, LSP(a)] + xy[:, LSP(b)]) / 2
    np.testing.assert_allclose(points[both == 1, MPII(target)], midpoint[both == 1], atol=1e-4)
    assert 0 < both.sum() < 10_000  # both cases occur


@pytest.fixture(scope='module')
def lspet_build(realdata, tmp_path_factory):
  """LSP-Extended built from realdata/lspet, which holds the first 2000 of its 10,000 images."""
  builder = _build(
    lsp.LspExtended,
    os.path.join(realdata, 'lspet'),
    str(tmp_path_factory.mktemp('tfds')),
    allow_missing=True,
  )
  return builder, _records(builder, 'train')


@pytest.mark.slow
def test_lspet_build_counts_missing_images(lspet_build):
  builder, records = lspet_build
  assert len(records) == 2000
  counts = builder.report['train']['counts']
  assert counts['missing image'] == 8000 and counts['written'] == 2000
  assert builder.report['train']['examples']['missing image'][0] == 'images/im02001.jpg'


def test_lspet_build_stores_reader_joints_and_reprojecting_crops(realdata, lspet_build):
  _, records = lspet_build
  manual_dir = os.path.join(realdata, 'lspet')
  people = lsp.read_joints(os.path.join(manual_dir, 'joints.mat'), lsp.LSP_EXTENDED_LAYOUT)
  first = next(r for r in records if r['image_name'] == b'images/im00001.jpg')
  person = people['train'][0]
  np.testing.assert_array_equal(first['joints_mask'], person.joints_mask)
  np.testing.assert_allclose(first['joints_2d'], person.joints_2d, atol=1e-4)

  errors, control = [], []
  for record in records[:40]:
    original = cv2.imread(os.path.join(manual_dir, record['image_name'].decode()))[..., ::-1]
    crop = features.decode_jpeg(record['image'])
    crop_to_image = np.vstack([record['crop_to_image'], [0, 0, 1]])
    image_to_crop = np.linalg.inv(crop_to_image)[:2]
    points = record['joints_2d'][record['joints_mask'] > 0]
    in_crop = points @ image_to_crop[:, :2].T + image_to_crop[:, 2]
    expected = _bilinear(original, points)
    errors.append(np.abs(_bilinear(crop, in_crop) - expected).mean())
    control.append(np.abs(_bilinear(crop, in_crop + 12) - expected).mean())
  # Bilinear resampling and JPEG (quality 90) blur the crop by a few levels; a 12 px shift
  # lands on other content.
  assert np.mean(errors) < 8, errors
  assert np.mean(control) > 2 * np.mean(errors), (np.mean(control), np.mean(errors))


# ---- LSP -----------------------------------------------------------------------------------


def test_lsp_reader_splits_and_flag(tmp_path):
  rng = np.random.default_rng(2)
  xy = rng.uniform(1, 150, (2, 14, 2000))
  flag = rng.integers(0, 2, (1, 14, 2000)).astype(np.float64)  # LSP: 1 = occluded
  path = str(tmp_path / 'joints.mat')
  scipy.io.savemat(path, {'joints': np.concatenate([xy, flag])})
  people = lsp.read_joints(path, lsp.LSP_LAYOUT)
  assert {s: len(p) for s, p in people.items()} == {'train': 1000, 'test': 1000}
  assert [p.image for p in people['train'][:2]] == ['images/im0001.jpg', 'images/im0002.jpg']
  assert [p.image for p in people['test'][:1]] == ['images/im1001.jpg']
  everyone = people['train'] + people['test']
  for i in (0, 999, 1000, 1999):
    person = everyone[i]
    np.testing.assert_array_equal(person.joints_mask, np.ones(16))  # occluded: estimated
    for name in joints.LSP14:
      mpii = MPII(SAME_JOINT[name])
      np.testing.assert_allclose(person.joints_2d[mpii], xy[:, LSP(name), i] - 1, atol=1e-4)
      assert person.joints_visible[mpii] == 1 - flag[0, LSP(name), i]


def test_lsp_test_half_npz_matches_reader(realdata, tmp_path):
  """SPIN's lsp_dataset_test.npz (im1001-im2000): column 2 of `part` is SPIN's constant 1
  ("annotated"), not LSP's flag, and center/scale come from all 14 joints' bounding box: the
  occluded joints carry positions. Its coordinates, written back as a joints.mat test half,
  come out of the reader 0-based with the npz's image names."""
  npz = np.load(os.path.join(realdata, 'lsp', 'lsp_dataset_test.npz'))
  part = npz['part'][:, :14]
  assert part.shape == (1000, 14, 3) and (part[..., 2] == 1).all()
  assert (npz['part'][:, 14:] == 0).all()
  low, high = part[..., :2].min(1), part[..., :2].max(1)
  np.testing.assert_allclose(npz['center'], (low + high) / 2, atol=1e-6)
  np.testing.assert_allclose(npz['scale'], 1.2 * (high - low).max(1) / 200, atol=1e-6)

  array = np.zeros((3, 14, 2000))
  array[:2, :, 1000:] = part[..., :2].transpose(2, 1, 0)
  scipy.io.savemat(tmp_path / 'joints.mat', {'joints': array})
  test = lsp.read_joints(str(tmp_path / 'joints.mat'), lsp.LSP_LAYOUT)['test']
  assert [p.image for p in test] == [str(n) for n in npz['imgname']]
  points = np.stack([p.joints_2d for p in test])
  for name in joints.LSP14:
    np.testing.assert_allclose(
      points[:, MPII(SAME_JOINT[name])], part[:, LSP(name), :2] - 1, atol=1e-4
    )


# ---- FLIC ----------------------------------------------------------------------------------

# examples.coords columns (0-based) of the labelled FLIC parts, written out independently of
# joints.FLIC29: 1-based part 1 l-shoulder -> column 0, ..., 7 l-hip -> 6, 10 r-hip -> 9.
FLIC_COLUMNS = {
  'l_shoulder': 0,
  'l_elbow': 1,
  'l_wrist': 2,
  'r_shoulder': 3,
  'r_elbow': 4,
  'r_wrist': 5,
  'l_hip': 6,
  'r_hip': 9,
}


def test_flic_reader_columns_and_splits(realdata):
  path = os.path.join(realdata, 'flic', 'examples.mat')
  raw = scipy.io.loadmat(path)['examples'].ravel()
  people = flic.read_examples(path, num_examples=5003)
  assert {s: len(p) for s, p in people.items()} == {'train': 3987, 'test': 1016}
  for split, field in (('train', 'istrain'), ('test', 'istest')):
    entries = [e for e in raw if e[field].ravel()[0]]
    coords = np.stack([e['coords'] for e in entries]) - 1  # (N, 2, 29) 0-based
    assert [p.image for p in people[split]] == ['images/' + e['filepath'][0] for e in entries]
    points = np.stack([p.joints_2d for p in people[split]])
    mask = np.stack([p.joints_mask for p in people[split]])
    for name, column in FLIC_COLUMNS.items():
      np.testing.assert_allclose(points[:, MPII(name)], coords[:, :, column], atol=1e-4)
      assert mask[:, MPII(name)].all()
    np.testing.assert_allclose(points[:, MPII('pelvis')], coords[:, :, [6, 9]].mean(-1), atol=1e-4)
    np.testing.assert_allclose(points[:, MPII('thorax')], coords[:, :, [0, 3]].mean(-1), atol=1e-4)
    missing = [
      MPII(n) for n in ('upper_neck', 'head_top', 'r_knee', 'l_knee', 'r_ankle', 'l_ankle')
    ]
    assert not mask[:, missing].any() and not points[:, missing].any()
    np.testing.assert_array_equal(np.stack([p.joints_visible for p in people[split]]), mask)
    # The box covers every labelled point, the face (eyes, nose) included.
    for person, c in zip(people[split], coords):
      labelled = c[:, np.isfinite(c).all(0)].T
      assert (np.abs(labelled - person.box_center) <= person.box_side / 2).all()
  assert joints.FLIC29[2] == 'l_wrist'
  # 434 frames hold several examples: each gets its own person_index, so record keys stay unique.
  keys = [(p.image, p.person_index) for split in people.values() for p in split]
  assert len(set(keys)) == len(keys) == 5003
  assert max(p.person_index for split in people.values() for p in split) > 0


def test_flic_left_shoulder_is_on_the_image_right(realdata):
  """Frontal movie frames: the person's left shoulder is at larger x than the right one."""
  people = flic.read_examples(os.path.join(realdata, 'flic', 'examples.mat'), num_examples=5003)
  points = np.stack([p.joints_2d for split in people.values() for p in split])
  left, right = points[:, MPII('l_shoulder'), 0], points[:, MPII('r_shoulder'), 0]
  assert left.mean() > right.mean() + 50
  assert (left > right).mean() > 0.9


def test_flic_malformed_examples(tmp_path):
  path = str(tmp_path / 'examples.mat')
  fields = [('filepath', 'O'), ('istrain', 'O'), ('istest', 'O')]
  scipy.io.savemat(path, {'examples': np.zeros((1, 3), fields)})
  with pytest.raises(base.AnnotationError, match=r'examples\.mat: examples has no field.* coords'):
    flic.read_examples(path, num_examples=3)

  examples = np.zeros((1, 3), fields + [('coords', 'O')])
  for i in range(3):
    examples[0, i] = ('a.jpg', 1, 0, np.ones((2, 29)))
  scipy.io.savemat(path, {'examples': examples})
  with pytest.raises(base.AnnotationError, match='3 entries, expected 20928'):
    flic.read_examples(path, num_examples=flic.FlicFull.NUM_EXAMPLES)
  examples[0, 1] = ('a.jpg', 1, 0, np.ones((29, 2)))
  scipy.io.savemat(path, {'examples': examples})
  with pytest.raises(base.AnnotationError, match=r'examples\(2\)\.coords .* expected \(2, 29\)'):
    flic.read_examples(path, num_examples=3)


def test_flic_build_from_a_synthetic_release(tmp_path):
  """5003 entries, two sharing one image (train) and one test image present; the rest missing."""
  manual_dir = tmp_path / 'flic'
  os.makedirs(manual_dir / 'images')
  examples = np.zeros((1, 5003), [(f, 'O') for f in ('coords', 'filepath', 'istrain', 'istest')])
  coords = np.full((2, 29), np.nan)
  coords[:, list(FLIC_COLUMNS.values()) + [12, 13, 16]] = np.random.default_rng(3).uniform(
    20, 60, (2, 11)
  )
  for i in range(5003):
    name = 'shared.jpg' if i < 2 else f'frame{i}.jpg'
    examples[0, i] = (coords, np.array([name]), int(i < 3987), int(i >= 3987))
  scipy.io.savemat(manual_dir / 'examples.mat', {'examples': examples})
  for name in ('shared.jpg', 'frame3987.jpg'):
    cv2.imwrite(str(manual_dir / 'images' / name), np.full((80, 100, 3), 128, np.uint8))
  builder = _build(flic.Flic, str(manual_dir), str(tmp_path / 'tfds'), allow_missing=True)
  assert builder.report['train']['counts'] == {'written': 2, 'missing image': 3985}
  assert builder.report['test']['counts'] == {'written': 1, 'missing image': 1015}
  train = _records(builder, 'train')
  assert [(r['image_name'], r['person_index']) for r in train] == [
    (b'images/shared.jpg', 0),
    (b'images/shared.jpg', 1),
  ]
  np.testing.assert_allclose(train[0]['joints_2d'][MPII('l_wrist')], coords[:, 2] - 1, atol=1e-4)


# ---- Malformed input -----------------------------------------------------------------------


def test_truncated_and_misshapen_joints_mat(tmp_path):
  path = str(tmp_path / 'joints.mat')
  scipy.io.savemat(path, {'joints': _tiny_lspet()})
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(base.AnnotationError, match=f'cannot read {path}: '):
    lsp.read_joints(path, lsp.LSP_EXTENDED_LAYOUT)

  scipy.io.savemat(path, {'joints': _tiny_lspet()})  # LSPET's layout, read as LSP
  with pytest.raises(
    base.AnnotationError, match=r'shape \(14, 3, 10000\), expected \(3, 14, 2000\)'
  ):
    lsp.read_joints(path, lsp.LSP_LAYOUT)
  scipy.io.savemat(path, {'points': _tiny_lspet()})
  with pytest.raises(base.AnnotationError, match="no variable 'joints'"):
    lsp.read_joints(path, lsp.LSP_EXTENDED_LAYOUT)


def test_corrupt_image_is_a_counted_skip(tmp_path):
  manual_dir = str(tmp_path / 'lspet')
  _write_lspet(
    manual_dir,
    _tiny_lspet(),
    {'im00001.jpg': None, 'im00002.jpg': b'not a jpeg' * 50, 'im00003.jpg': None},
  )
  builder = _build(lsp.LspExtended, manual_dir, str(tmp_path / 'tfds'), allow_missing=True)
  report = builder.report['train']
  assert report['counts'] == {'written': 2, 'unreadable image': 1, 'missing image': 9997}
  assert report['examples']['unreadable image'] == ['images/im00002.jpg']
  assert [r['image_name'] for r in _records(builder, 'train')] == [
    b'images/im00001.jpg',
    b'images/im00003.jpg',
  ]


def test_missing_images_without_allow_missing(tmp_path):
  manual_dir = str(tmp_path / 'lspet')
  _write_lspet(manual_dir, _tiny_lspet(), {'im00001.jpg': None, 'im00002.jpg': None})
  with pytest.raises(
    base.MissingImagesError,
    match=r'9998 of 10000 files .* e\.g\. '
    r"\['images/im00003\.jpg', 'images/im00004\.jpg'",
  ):
    _build(lsp.LspExtended, manual_dir, str(tmp_path / 'tfds'))


def test_example_source_parses_every_real_record_as_tfds_does(lspet_build):
  builder, records = lspet_build
  ref = datasets.DatasetRef('lsp_extended/small', 'train', str(builder.data_dir_root))
  source = datasets.data_source(ref)
  assert len(source) == len(records)
  for index, record in enumerate(records):
    assert_same_example(source[index], record)
