"""Predicting on image files: the CLI's pictures and JSON, boxes, errors, 2D-only runs.

The runs are freshly initialised tiny models saved like training saves them (no training: the
poses are arbitrary, but every property checked here holds for any weights).
"""

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO
from conftest import RIGHT_MAN_BOX
from conftest import TWO_PEOPLE_PHOTO
from conftest import annotated_box
from conftest import photo_path
from conftest import realdata_dir
from conftest import tiny_config
import cv2
from flax import nnx
import grain
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax import inference
from hpe_jax import joints
from hpe_jax.inference import boxes
from hpe_jax.inference import outputs as outputs_lib
from hpe_jax.inference import predict_run
from hpe_jax.inference import visualize
from hpe_jax.storage import checkpoint
from hpe_jax.training import step as step_lib

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


def _read_rgb(path):
  return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def _predict_command(workdir, *args):
  return [sys.executable, '-m', 'hpe_jax.commands.predict', f'--workdir={workdir}', *args]


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
  """One CLI call on a photo (whole) and a copy of it under another name (with BOX)."""
  directory = tmp_path_factory.mktemp('predict')
  workdir = _make_run(str(directory / 'run'), depth=True)
  photo = photo_path(str(directory))
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
    outputs_lib.output_paths(os.path.join(workdir, 'predictions'), p) for p in (photo, boxed)
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
    assert record['joint_names'] == list(joints.MPII16)
    [person] = record['people']  # one shape for one person or many
    assert np.shape(person['joints_2d']) == (joints.NUM_JOINTS, 2)
    assert np.shape(person['joints_3d']) == (joints.NUM_JOINTS, 3)
    np.testing.assert_allclose(person['joints_2d'], expected['joints_2d'], rtol=0, atol=1e-4)
    np.testing.assert_allclose(person['scores'], expected['scores'], rtol=0, atol=1e-6)
    np.testing.assert_allclose(person['joints_3d'], expected['joints_3d'], rtol=0, atol=1e-3)


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
  joints_2d = np.array(cli_run['records'][0]['people'][0]['joints_2d'])
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
  height = cli_run['records'][0]['image_size']['height']
  width = cli_run['records'][0]['image_size']['width']
  whole, boxed = (record['people'][0] for record in cli_run['records'])
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
    xy = np.array(record['joints_2d'])
    assert (np.abs(xy - center) <= half + 1e-6).all()


def test_3d_joints_are_root_relative_with_the_canonical_limb_sum(cli_run):
  for record in cli_run['records']:
    pose = np.array(record['people'][0]['joints_3d'])
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
    (('a.jpg', '--boxes=b.json', '--bbox=1,2,3,4'), 'error: give --bbox (one person per image)'),
    (('a.jpg', '--boxes=b.json', '--box_threshold=1.5'), 'error: flag --box_threshold=1.5: '),
  ],
  ids=[
    'missing',
    'not-an-image',
    'bbox-3-numbers',
    'bbox-no-area',
    'bbox-count',
    'bbox-and-boxes',
    'threshold-above-1',
  ],
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
    predict_run.predict_files(str(tmp_path / 'no_run'), paths, out_dir=str(tmp_path / 'out'))


def test_a_2d_only_run_writes_the_overlay_and_2d_json_and_says_3d_needs_fine_tuning(tmp_path):
  workdir = _make_run(str(tmp_path / 'run2d'), depth=False)
  image = photo_path(str(tmp_path))
  out_dir = str(tmp_path / 'out')
  [result] = predict_run.predict_files(workdir, [image], [BOX], out_dir=out_dir)
  assert result['files']['3d'] is None
  assert sorted(os.listdir(out_dir)) == sorted(
    os.path.basename(p) for p in (result['files']['2d'], result['files']['json'])
  )
  with open(result['files']['json']) as f:
    record = json.load(f)
  [person] = record['people']
  assert record == result['record'] and person['joints_3d'] is None
  assert 'fine-tuned' in record['note_3d'] and len(person['joints_2d']) == joints.NUM_JOINTS


@pytest.mark.slow
def test_an_out_dir_that_cannot_be_created_fails_with_one_line_naming_it(tmp_path):
  workdir = _make_run(str(tmp_path / 'run'), depth=False)
  image = photo_path(str(tmp_path))
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


# --- Many people from a detector's boxes file (--boxes) ---


@pytest.fixture(scope='module')
def people_run(tiny_depth_run, tmp_path_factory):
  """One CLI call with a boxes file: the two-person photo (its two people; a low-score box, a
  non-person box), a second photo (one box wholly outside it, one mostly outside), a third
  photo without a box, and a box for a photo not given."""
  realdata = realdata_dir()
  images = os.path.join(realdata or '', 'mpii', 'images')
  if not os.path.isfile(os.path.join(images, TWO_PEOPLE_PHOTO)):
    pytest.skip('needs ../shared/realdata/mpii (the MPII photos)')
  directory = tmp_path_factory.mktemp('people')
  two = os.path.join(images, TWO_PEOPLE_PHOTO)
  edge = os.path.join(images, '004645041.jpg')  # 1280 x 720
  empty = os.path.join(images, '051423444.jpg')
  left_box = annotated_box(realdata, TWO_PEOPLE_PHOTO)
  entries = [
    # image_id: the number of the file's name (as COCO's 000000001163.jpg is 1163).
    {'image_id': 52475643, 'bbox': list(left_box), 'score': 0.98, 'category_id': 1},
    {'file_name': TWO_PEOPLE_PHOTO, 'bbox': list(RIGHT_MAN_BOX), 'score': 0.91},
    {'image_id': 52475643, 'bbox': [600, 300, 120, 150], 'score': 0.2, 'category_id': 1},
    {'image_id': 52475643, 'bbox': [300, 400, 300, 80], 'score': 0.9, 'category_id': 62},
    {'image_id': '004645041', 'bbox': [1300, 10, 60, 60], 'score': 0.8},  # wholly outside
    {'image_id': '004645041', 'bbox': [1180, 520, 200, 400], 'score': 0.7},  # 75% outside
    {'image_id': 60754485, 'bbox': [600, 200, 200, 400], 'score': 0.99},  # not given
  ]
  boxes_file = directory / 'detections.json'
  boxes_file.write_text(json.dumps(entries))
  out_dir = str(directory / 'out')
  process = subprocess.run(
    _predict_command(
      tiny_depth_run,
      f'--boxes={boxes_file}',
      '--box_threshold=0.5',
      '--format=coco',
      f'--out_dir={out_dir}',
      two,
      edge,
      empty,
    ),
    capture_output=True,
    text=True,
    cwd=REPO,
  )
  assert process.returncode == 0, process.stderr
  outputs = {p: outputs_lib.output_paths(out_dir, p) for p in (two, edge, empty)}
  records = {}
  for path in (two, edge):
    with open(outputs[path]['json']) as f:
      records[path] = json.load(f)
  with open(os.path.join(out_dir, 'keypoints_coco.json')) as f:
    coco = json.load(f)
  with open(os.path.join(out_dir, 'keypoints_coco.names.json')) as f:
    names = json.load(f)
  return {
    'images': (two, edge, empty),
    'boxes': (left_box, RIGHT_MAN_BOX),
    'outputs': outputs,
    'records': records,
    'coco': coco,
    'names': names,
    'stdout': process.stdout,
    'stderr': process.stderr,
    'out_dir': out_dir,
  }


@pytest.mark.slow  # people_run: a CLI run on three photos (about 20 s)
def test_two_people_each_with_its_own_box_and_joints_inside_its_own_square(people_run):
  two = people_run['images'][0]
  record = people_run['records'][two]
  assert record['image'] == two and record['joint_names'] == list(joints.MPII16)
  people = record['people']
  # The low-score box and the non-person box are dropped.
  assert [p['box'] for p in people] == [list(box) for box in people_run['boxes']]
  assert [p['box_score'] for p in people] == [0.98, 0.91]
  centres = np.array([[x + w / 2 - 0.5, y + h / 2 - 0.5] for x, y, w, h in people_run['boxes']])
  for index, person in enumerate(people):
    x, y, w, h = person['box']
    assert person['square']['center'] == pytest.approx(centres[index].tolist())
    assert person['square']['side'] == pytest.approx(1.25 * max(w, h))
    xy = np.array(person['joints_2d'])
    assert xy.shape == (joints.NUM_JOINTS, 2) and len(person['scores']) == joints.NUM_JOINTS
    # The model only saw this person's square: every joint lies inside it, whatever the weights
    # (the tiny model is not trained on photos, so its own box would ask too much).
    half = person['square']['side'] / 2
    assert (np.abs(xy - centres[index]) <= half + 1e-6).all()
    mean = xy.mean(0)
    other = centres[1 - index]
    assert np.linalg.norm(mean - centres[index]) < np.linalg.norm(mean - other)
    pose = np.array(person['joints_3d'])
    assert pose.shape == (joints.NUM_JOINTS, 3)
    np.testing.assert_array_equal(pose[joints.PELVIS], 0)


@pytest.mark.slow  # people_run: a CLI run on three photos (about 20 s)
def test_boxes_outside_and_images_without_a_box_are_warned_and_skipped(people_run):
  two, edge, empty = people_run['images']
  stderr = people_run['stderr']
  # The image without a kept box: no files, one warning naming it.
  assert not any(os.path.exists(p) for p in people_run['outputs'][empty].values())
  assert (
    f'warning: 1 image has no box scoring at least --box_threshold=0.5 in '
    f'{os.path.dirname(people_run["out_dir"])}/detections.json, skipped: {empty}\n' in stderr
  )
  # The box wholly outside is skipped; the one 75% outside predicted with a warning.
  assert (
    f'warning: {edge}: box 1300,10,60,60 (--boxes entry 4) lies wholly outside the 1280 x 720'
    in stderr
  )
  [person] = people_run['records'][edge]['people']
  assert person['box'] == [1180, 520, 200, 400]
  assert person['warning'].startswith('75% of the box lies outside the 1280 x 720 image')
  assert f'warning: {edge}: box 1180,520,200,400 (--boxes entry 5): 75% of the box' in stderr
  # Every person whose joints all score low is warned about, once, naming the image and box.
  for path, record in people_run['records'].items():
    for person in record['people']:
      low = max(person['scores']) < visualize.MIN_CONFIDENT_SCORE
      assert ('no joint scores above' in person.get('warning', '')) == low
      box = ','.join(f'{v:.1f}'.removesuffix('.0') for v in person['box'])
      line = f'warning: {path}: box {box} '
      assert stderr.count(line) == (1 if low else 0) + (path == edge), (line, stderr)
  assert f'{two}: 2 people' in people_run['stdout'] and f'{edge}: 1 person' in people_run['stdout']


@pytest.mark.slow  # people_run: a CLI run on three photos (about 20 s)
def test_the_overlay_draws_every_person_and_the_3d_plot_a_pair_each(people_run):
  two = people_run['images'][0]
  files = people_run['outputs'][two]
  image = _read_rgb(two)
  overlay = _read_rgb(files['2d'])
  changed = np.argwhere((overlay != image).any(-1))[:, ::-1].astype(np.float64)  # (x, y)
  reach = visualize.marker_radius(image.shape) + visualize.line_width(image.shape) / 2 + 2
  for person in people_run['records'][two]['people']:
    for x, y in person['joints_2d']:
      assert (np.linalg.norm(changed - (x, y), axis=1) <= reach).any(), (x, y)
  plot = cv2.imread(files['3d'])
  single = cv2.imread(people_run['outputs'][people_run['images'][1]]['3d'])
  assert plot.shape[1] == 2 * single.shape[1]  # two front/side pairs side by side


@pytest.mark.slow  # people_run: a CLI run on three photos (about 20 s)
def test_coco_keypoints_one_entry_per_person_with_the_joint_order_beside(people_run):
  coco, records = people_run['coco'], people_run['records']
  two, edge, empty = people_run['images']
  people = records[two]['people'] + records[edge]['people']
  assert isinstance(coco, list) and len(coco) == 3
  # Numeric ids: the boxes file's number for both people of the two-person photo (one box named
  # it by image_id, the other by file_name); the others numbered in the order given, the image
  # skipped for want of a box included (it counts: nobody was found there).
  assert [entry['image_id'] for entry in coco] == [52475643, 52475643, 1]
  listed = [(image['id'], image['path']) for image in people_run['names']['images']]
  assert listed == [(52475643, two), (1, edge), (2, empty)]
  for entry, person in zip(coco, people):
    assert entry['category_id'] == 1 and entry['bbox'] == person['box']
    triplets = np.array(entry['keypoints']).reshape(joints.NUM_JOINTS, 3)
    np.testing.assert_allclose(triplets[:, :2], person['joints_2d'], atol=1e-3)
    np.testing.assert_allclose(triplets[:, 2], person['scores'], atol=1e-3)
    assert entry['score'] == pytest.approx(np.mean(person['scores']) * person['box_score'])
    np.testing.assert_allclose(entry['keypoints_3d'], person['joints_3d'], atol=0.01)
  names = people_run['names']
  assert names['keypoint_names'] == list(joints.MPII16)
  assert names['kpt_oks_sigmas'] == list(joints.MPII16_OKS_SIGMAS)
  [category] = names['categories']
  assert category['id'] == 1 and category['keypoints'] == list(joints.MPII16)
  assert (
    f'COCO keypoints of 3 people in 3 images: {people_run["out_dir"]}/keypoints_coco.json'
    in (people_run['stdout'])
  )


def _write(tmp_path, content) -> str:
  path = tmp_path / 'boxes.json'
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  return str(path)


def test_boxes_file_matches_by_file_name_and_image_id(tmp_path):
  images = ['photos/000000001163.jpg', 'other/a.png', 'b.jpg']
  path = _write(
    tmp_path,
    [
      {'image_id': 1163, 'bbox': [1, 2, 3, 4], 'score': 0.9},  # COCO's numbered file
      {'image_id': '000000001163', 'bbox': [5, 6, 7, 8], 'score': 0.8},  # the stem
      {'file_name': 'a.png', 'bbox': [1, 1, 2, 2], 'score': 0.7},  # the base name
      {'file_name': 'b.jpg', 'bbox': [2, 2, 2, 2]},  # no score: counts as 1 (ground truth)
      {'image_id': 'a', 'bbox': [3, 3, 3, 3], 'score': 0.6},
      {'image_id': 99, 'bbox': [1, 1, 1, 1], 'score': 0.9},  # no image given
    ],
  )
  detections = boxes.read_boxes(path, images, threshold=0.5)
  assert detections.per_image == {
    images[0]: [
      boxes.PersonBox((1.0, 2.0, 3.0, 4.0), 0.9, 1163, 0),
      boxes.PersonBox((5.0, 6.0, 7.0, 8.0), 0.8, '000000001163', 1),
    ],
    images[1]: [
      boxes.PersonBox((1.0, 1.0, 2.0, 2.0), 0.7, 'a.png', 2),
      boxes.PersonBox((3.0, 3.0, 3.0, 3.0), 0.6, 'a', 4),
    ],
    images[2]: [boxes.PersonBox((2.0, 2.0, 2.0, 2.0), 1.0, 'b.jpg', 3)],
  }
  assert detections.other_images == 1
  # A file name with folders matches the same path too.
  path = _write(tmp_path, [{'file_name': 'other/a.png', 'bbox': [1, 1, 2, 2], 'score': 1}])
  assert len(boxes.read_boxes(path, images).per_image[images[1]]) == 1


def test_boxes_file_keeps_persons_scoring_at_least_the_threshold(tmp_path):
  path = _write(
    tmp_path,
    [
      {'image_id': 7, 'bbox': [0, 0, 5, 5], 'score': 0.5},  # at the threshold: kept
      {'image_id': 7, 'bbox': [0, 0, 5, 5], 'score': 0.49},
      {'image_id': 7, 'bbox': [0, 0, 5, 5], 'score': 0.9, 'category_id': 3},  # a car
      {'image_id': 7, 'bbox': [0, 0, 6, 6], 'score': 0.9, 'category_id': 1},
    ],
  )
  detections = boxes.read_boxes(path, ['7.jpg'], threshold=0.5)
  assert [(b.score, b.entry) for b in detections.per_image['7.jpg']] == [(0.5, 0), (0.9, 3)]
  assert (detections.below_threshold, detections.not_person) == (1, 1)
  assert len(boxes.read_boxes(path, ['7.jpg'], threshold=0.0).per_image['7.jpg']) == 3


@pytest.mark.parametrize(
  'content, message',
  [
    (None, 'no such file'),
    ('[{"image_id": 1,', 'is not JSON (Expecting property name'),
    ({'annotations': []}, 'holds a JSON dict: expected a COCO detection-results list'),
    ([], 'holds no boxes (an empty list)'),
    ([[1, 2, 3, 4]], 'entry 0 is a JSON list, not an object'),
    ([{'image_id': 1, 'bbox': [0, 0, 1, 1]}, {'image_id': 1}], 'entry 1 has no "bbox"'),
    ([{'image_id': 1, 'bbox': [0, 0, 1]}], 'entry 0: "bbox" [0, 0, 1] is not x,y,w,h'),
    ([{'image_id': 1, 'bbox': [0, 0, 0, 1]}], 'entry 0: "bbox" [0, 0, 0, 1] has no area'),
    (
      [{'bbox': [0, 0, 1, 1], 'score': 1}],
      'entry 0 has none of "image_id", "file_name" (images) and "frame"',
    ),
    ([{'image_id': 1, 'bbox': [0, 0, 1, 1], 'score': 'high'}], 'entry 0: "score" \'high\''),
    (
      [{'image_id': 5, 'bbox': [0, 0, 1, 1]}],
      'names none of the images or videos given (entry 0 has',
    ),
    ([{'frame': -1, 'bbox': [0, 0, 1, 1]}], 'entry 0: "frame" -1 is not a frame index'),
  ],
  ids=[
    'missing',
    'not-json',
    'not-a-list',
    'empty',
    'entry-not-object',
    'no-bbox',
    'bbox-3-numbers',
    'bbox-no-area',
    'no-image-key',
    'bad-score',
    'no-image-named',
    'bad-frame',
  ],
)
def test_boxes_file_errors_are_one_line_naming_the_file_and_entry(tmp_path, content, message):
  path = str(tmp_path / 'none.json') if content is None else _write(tmp_path, content)
  with pytest.raises(boxes.BoxError) as error:
    boxes.read_boxes(path, ['1.jpg'])
  text = str(error.value)
  assert text.startswith(f'--boxes={path}') and message in text, text
  assert '\n' not in text
  assert isinstance(error.value, errors.HpeError)


def test_box_outside_fraction():
  assert boxes.outside_fraction((0, 0, 10, 10), (20, 20)) == 0
  assert boxes.outside_fraction((15, 0, 10, 10), (20, 20)) == pytest.approx(0.5)
  assert boxes.outside_fraction((1180, 520, 200, 400), (720, 1280)) == pytest.approx(0.75)
  assert boxes.outside_fraction((30, 30, 5, 5), (20, 20)) == 1


def test_loading_a_run_says_nothing_on_stderr(cli_run, capfd):
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)  # what a user's program logs
  inference.load(cli_run['workdir'])
  assert 'read only' not in capfd.readouterr().err
