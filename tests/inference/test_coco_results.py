"""--format=coco's files are what pycocotools' COCOeval scores: numeric image ids, MPII-16 keypoints
and the OKS sigmas beside them (joints.MPII16_OKS_SIGMAS), for images and video frames.

The scoring tests build COCO ground truth from real MPII annotations (../shared/realdata's
mpii/test_mpii.json: 5 photos, one person each) in the names file's image ids, and score
predictions made from the ground truth with known offsets, so that the expected AP is exact. The
ground truth's "area" (COCO's is a segment's, which MPII lacks) is the area of the box spanning the
person's annotated joints; a joint's visibility is 2 where MPII annotates it, else 0 (COCOeval
skips it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os

from conftest import realdata_dir
import cv2
import numpy as np
import pytest

from hpe_jax import joints
from hpe_jax.inference import outputs
from hpe_jax.inference import predict_run
from hpe_jax.inference import records as records_lib

_WHY = 'pycocotools scores the files: pip install -e ".[test]"'
coco_api = pytest.importorskip('pycocotools.coco', reason=_WHY)
COCO = coco_api.COCO
COCOeval = pytest.importorskip('pycocotools.cocoeval', reason=_WHY).COCOeval

RUN = {'workdir': 'test', 'step': 1, 'depth': False}


@pytest.fixture(scope='module')
def mpii() -> dict:
  """The realdata MPII sample: image paths and, per image, its people's 0-based joints (16, 2) and
  annotation mask (16,)."""
  realdata = realdata_dir()
  path = os.path.join(realdata or '', 'mpii', 'test_mpii.json')
  if not os.path.isfile(path):
    pytest.skip('needs ../shared/realdata/mpii (test_mpii.json and its photos)')
  with open(path) as f:
    entries = json.load(f)
  people = {}
  for entry in entries:
    image = os.path.join(realdata, 'mpii', 'images', entry['image'])
    # The json keeps MPII's 1-based (MATLAB) pixels; ours are 0-based.
    joints_2d = np.asarray(entry['joints'], np.float64) - 1
    people.setdefault(image, []).append((joints_2d, np.asarray(entry['joints_vis']) > 0))
  return {'images': list(people), 'people': people}


def _result(image: str, people: list, image_ids: list | None = None) -> dict:
  """predict_files' result for one image whose people are predicted at `people`' joints (16, 2)
  with score 1 (no box: the whole image, as without --bbox)."""
  height, width = cv2.imread(image).shape[:2]
  records, predicted = [], []
  for index, xy in enumerate(people):
    prediction = {
      'box_center': [width / 2 - 0.5, height / 2 - 0.5],
      'box_side': float(max(width, height)),
      'joints_2d': xy,
      'scores': np.ones(joints.NUM_JOINTS),
    }
    records.append(records_lib.person_record(None, prediction))
    image_id = os.path.basename(image) if image_ids is None else image_ids[index]
    predicted.append({'prediction': prediction, 'image_id': image_id})
  record = records_lib.joints_record(image, (height, width, 3), records, RUN)
  return {'image': image, 'files': {}, 'record': record, 'people': predicted}


def _ground_truth(names: dict, mpii: dict) -> COCO:
  """COCO ground truth of the MPII people: the names file's images plus one annotation each."""
  ids = {image['path']: image['id'] for image in names['images']}
  annotations = []
  for image, people in mpii['people'].items():
    for xy, mask in people:
      low, high = xy[mask].min(0), xy[mask].max(0)
      keypoints = np.concatenate([np.where(mask[:, None], xy, 0), 2.0 * mask[:, None]], axis=1)
      annotations.append(
        {
          'id': len(annotations) + 1,
          'image_id': ids[image],
          'category_id': 1,
          'keypoints': keypoints.reshape(-1).tolist(),
          'num_keypoints': int(mask.sum()),
          'bbox': [*low.tolist(), *(high - low).tolist()],
          'area': float(np.prod(high - low)),
          'iscrowd': 0,
        }
      )
  gt = COCO()
  gt.dataset = dict(names, annotations=annotations)
  gt.createIndex()
  return gt


def _score(out_dir: str, gt: COCO | None = None, mpii: dict | None = None) -> COCOeval:
  """COCOeval of out_dir's keypoints_coco.json as the names file says to score it."""
  with open(os.path.join(out_dir, outputs.COCO_NAMES_FILE)) as f:
    names = json.load(f)
  gt = gt or _ground_truth(names, mpii)
  with _quiet():
    E = COCOeval(gt, gt.loadRes(os.path.join(out_dir, outputs.COCO_FILE)), 'keypoints')
    E.params.kpt_oks_sigmas = np.array(names['kpt_oks_sigmas'])
    E.evaluate()
    E.accumulate()
    E.summarize()
  return E


def _quiet():
  """pycocotools prints its progress: keep the test log short."""
  return contextlib.redirect_stdout(io.StringIO())


def _oks(E: COCOeval) -> list[float]:
  """Every person's OKS with the ground truth of its image (one person per image here)."""
  return [float(np.max(ious)) for ious in E.ious.values() if len(ious)]


def _predict(mpii: dict, out_dir: str, offset) -> None:
  """write_coco of predictions at the ground truth moved by `offset(xy, area)` per person."""
  results = []
  for image, people in mpii['people'].items():
    moved = []
    for xy, mask in people:
      area = np.prod(xy[mask].max(0) - xy[mask].min(0))
      moved.append(xy + offset(xy, area))
    results.append(_result(image, moved))
  outputs.write_coco(results, out_dir)


def test_the_names_file_holds_the_mpii16_sigmas_and_numbers_the_images(mpii, tmp_path):
  _predict(mpii, str(tmp_path), lambda xy, area: 0)
  with open(tmp_path / outputs.COCO_NAMES_FILE) as f:
    names = json.load(f)
  with open(tmp_path / outputs.COCO_FILE) as f:
    results = json.load(f)
  assert names['keypoint_names'] == list(joints.MPII16)
  assert names['kpt_oks_sigmas'] == list(joints.MPII16_OKS_SIGMAS)
  # COCO's sigmas for the joints COCO has (cocoapi's cocoeval.py, COCO order).
  coco = dict(
    zip(
      ('shoulder', 'elbow', 'wrist', 'hip', 'knee', 'ankle'),
      (0.079, 0.072, 0.062, 0.107, 0.087, 0.089),
    )
  )
  for name, sigma in zip(joints.MPII16, joints.MPII16_OKS_SIGMAS):
    if name[2:] in coco:
      assert sigma == coco[name[2:]], name
  # Without a boxes file: 1, 2, ... in the order given, each naming its file.
  assert [image['id'] for image in names['images']] == [1, 2, 3, 4, 5]
  assert [image['path'] for image in names['images']] == mpii['images']
  for image in names['images']:
    height, width = cv2.imread(image['path']).shape[:2]
    assert image['file_name'] == os.path.basename(image['path'])
    assert (image['width'], image['height']) == (width, height)
  assert [entry['image_id'] for entry in results] == [1, 2, 3, 4, 5]
  assert all(len(entry['keypoints']) == 3 * joints.NUM_JOINTS for entry in results)
  # The names file is a COCO file: it loads, and loadRes takes the results against it.
  with _quiet():
    skeleton = COCO(str(tmp_path / outputs.COCO_NAMES_FILE))
    assert len(skeleton.loadRes(str(tmp_path / outputs.COCO_FILE)).getAnnIds()) == 5


def test_the_ground_truth_joints_score_ap_1(mpii, tmp_path):
  _predict(mpii, str(tmp_path), lambda xy, area: 0)
  E = _score(str(tmp_path), mpii=mpii)
  assert _oks(E) == pytest.approx([1.0] * 5)
  assert E.stats[0] == pytest.approx(1.0)  # AP over OKS .50:.95
  assert E.stats[5] == pytest.approx(1.0)  # AR


def test_joints_moved_to_oks_0_825_score_ap_0_7(mpii, tmp_path):
  """Each joint moved along x by the distance at which its OKS term is 0.825 with its own sigma:
  every person's OKS is 0.825, matched at the thresholds .50 to .80 and not at .85 to .95."""
  target = 0.825
  sigmas = np.array(joints.MPII16_OKS_SIGMAS)

  def offset(xy, area):
    # COCOeval: exp(-d^2 / (2 area (2 sigma)^2)) = target.
    distance = np.sqrt(-np.log(target) * 2 * area * (2 * sigmas) ** 2)
    return np.stack([distance, np.zeros_like(distance)], axis=1)

  _predict(mpii, str(tmp_path), offset)
  E = _score(str(tmp_path), mpii=mpii)
  assert _oks(E) == pytest.approx([target] * 5, abs=1e-4)  # keypoints are kept to 1e-3 px
  assert E.stats[0] == pytest.approx(0.7)
  assert E.stats[1] == pytest.approx(1.0) and E.stats[2] == pytest.approx(1.0)  # AP50, AP75


def test_joints_moved_far_score_ap_0(mpii, tmp_path):
  """Every joint moved by half the person's size: each OKS term is below exp(-0.25 / (8 x
  0.107^2)) = 0.07, so no person reaches OKS 0.5."""
  _predict(mpii, str(tmp_path), lambda xy, area: [0.5 * np.sqrt(area), 0])
  E = _score(str(tmp_path), mpii=mpii)
  assert max(_oks(E)) < 0.07
  assert E.stats[0] == 0 and E.stats[1] == 0 and E.stats[5] == 0


def test_boxes_file_ids_are_kept_and_the_other_images_numbered_around_them(mpii, tmp_path, capfd):
  """An image whose boxes-file entries give a number keeps it (for every person of it, whichever
  entry matched); an image skipped for want of a box is listed with no results; an id a second
  image claims is renumbered with a warning."""
  first, second, third, skipped, fifth = mpii['images']
  xy = [mpii['people'][first][0][0]]
  results = [
    _result(first, xy * 2, [2, 'photo.jpg']),  # a numeric id and a file_name entry
    _result(second, xy, ['a string']),  # not a number: numbered
    _result(third, xy, [2]),  # the first image's id again: numbered
    _result(fifth, xy, [60754485]),
  ]
  paths = outputs.write_coco(results, str(tmp_path), images=[first, second, third, skipped, fifth])
  assert (paths['people'], paths['images']) == (5, 5)
  with open(paths['names']) as f:
    names = json.load(f)
  with open(paths['results']) as f:
    entries = json.load(f)
  ids = {image['path']: image['id'] for image in names['images']}
  assert ids == {first: 2, second: 1, third: 3, skipped: 4, fifth: 60754485}
  assert [entry['image_id'] for entry in entries] == [2, 2, 1, 3, 60754485]
  assert (
    f'warning: {third}: the boxes file gives it image_id 2, as it does {first}: numbered anew'
    in capfd.readouterr().err
  )


def _video(path: str, frames: int) -> None:
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 10.0, (96, 64))
  rng = np.random.default_rng(1)
  for _ in range(frames):
    writer.write(rng.integers(0, 256, (64, 96, 3), np.uint8))
  writer.release()


def test_predicting_images_and_a_video_writes_results_cocoeval_scores(tiny_depth_run, tmp_path):
  """The real predict path on the session's tiny run: two images then a video's three frames
  numbered on; scored against ground truth equal to the predictions themselves, AP is 1."""
  workdir = tiny_depth_run
  rng = np.random.default_rng(0)
  images = [str(tmp_path / 'a.jpg'), str(tmp_path / 'b.png')]
  for path in images:
    cv2.imwrite(path, cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), np.uint8), (9, 9), 3))
  clip = str(tmp_path / 'clip.mp4')
  _video(clip, 3)
  out_dir = str(tmp_path / 'out')
  result = predict_run.predict(
    [images[0], clip, images[1]],
    workdir=workdir,
    bbox=[None, None, (20, 10, 60, 100)],
    output_format='coco',
    out_dir=out_dir,
    batch_size=2,
    log=lambda line: None,
    warn=lambda line: None,
  )
  assert result['written']['people'] == 5 and result['written']['images'] == 5
  with open(result['written']['names']) as f:
    names = json.load(f)
  with open(result['written']['results']) as f:
    entries = json.load(f)
  listed = [(i['id'], i['file_name'], i.get('frame')) for i in names['images']]
  assert listed == [
    (1, 'a.jpg', None),
    (2, 'b.png', None),
    (3, 'clip.mp4', 0),
    (4, 'clip.mp4', 1),
    (5, 'clip.mp4', 2),
  ]
  assert [(i['width'], i['height']) for i in names['images']] == [(160, 120)] * 2 + [(96, 64)] * 3
  assert [entry['image_id'] for entry in entries] == [1, 2, 3, 4, 5]
  assert entries[1]['bbox'] == [20, 10, 60, 100]
  # Each image's entry is its record's person; each frame's, its .jsonl line's.
  for entry, image in zip(entries, result['images']):
    [person] = image['record']['people']
    triplets = np.array(entry['keypoints']).reshape(joints.NUM_JOINTS, 3)
    np.testing.assert_allclose(triplets[:, :2], person['joints_2d'], atol=1e-3)
    np.testing.assert_allclose(entry['keypoints_3d'], person['joints_3d'], atol=0.01)
  with open(result['videos'][0]['files']['jsonl']) as f:
    lines = [json.loads(line) for line in f]
  for entry, line in zip(entries[2:], lines):
    [person] = line['people']
    triplets = np.array(entry['keypoints']).reshape(joints.NUM_JOINTS, 3)
    np.testing.assert_allclose(triplets[:, :2], person['joints_2d'], atol=1e-3)
    assert entry['track_id'] == person['track'] == 0
  # Ground truth = the predictions, every joint visible: AP 1 with the names file's sigmas.
  annotations = []
  for entry in entries:
    keypoints = np.array(entry['keypoints']).reshape(joints.NUM_JOINTS, 3)
    keypoints[:, 2] = 2
    x, y, w, h = entry['bbox']
    annotations.append(
      {
        'id': len(annotations) + 1,
        'image_id': entry['image_id'],
        'category_id': 1,
        'keypoints': keypoints.reshape(-1).tolist(),
        'num_keypoints': joints.NUM_JOINTS,
        'bbox': [x, y, w, h],
        'area': w * h,
        'iscrowd': 0,
      }
    )
  gt = COCO()
  gt.dataset = dict(names, annotations=annotations)
  gt.createIndex()
  assert _score(out_dir, gt).stats[0] == pytest.approx(1.0)
