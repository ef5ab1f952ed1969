"""The real-dataset builder base: counted skips and masks, empty splits, crops that re-project."""

import cv2
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from hpe_jax import geometry
from hpe_jax import joints
from hpe_jax.data import features
from hpe_jax.data.builders import base
from hpe_jax.data.builders import lsp


def _lsp_manual_dir(tmp_path, image):
  """An LSP release whose joints.mat (3 x 14 x 2000, 1-based) has three people on images that
  exist: one inside the image, one with a joint beyond its width, one entirely outside."""
  manual_dir = tmp_path / 'manual'
  (manual_dir / 'images').mkdir(parents=True)
  inside = np.random.default_rng(0).uniform(20, 80, (14, 2))
  partly_outside = inside.copy()
  partly_outside[3] = (500, 50)  # l_hip beyond the 120 px width: an annotation error
  people = np.zeros((2000, 14, 2))
  people[:3] = inside, partly_outside, np.full((14, 2), -40.0)
  xy = (people + 1).transpose(2, 1, 0)  # MATLAB's 1-based pixels, 2 x 14 x 2000
  scipy.io.savemat(
    manual_dir / 'joints.mat', {'joints': np.concatenate([xy, np.zeros((1, 14, 2000))])}
  )  # 0 = visible
  for i in range(3):
    cv2.imwrite(
      str(manual_dir / 'images' / f'im{i + 1:04d}.jpg'),
      image[..., ::-1],
      [cv2.IMWRITE_JPEG_QUALITY, 100],
    )
  return manual_dir


def test_masks_and_skips_are_counted_and_crops_reproject(tmp_path):
  image = np.random.default_rng(1).integers(0, 256, (100, 120, 3), dtype=np.uint8)
  image = cv2.GaussianBlur(image, (9, 9), 3)  # smooth, so JPEG and interpolation agree
  builder = lsp.Lsp(
    config='small', data_dir=str(tmp_path / 'data'), file_format='array_record', allow_missing=True
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(_lsp_manual_dir(tmp_path, image)))
  )
  assert builder.report['train']['counts'] == {
    'written': 2,
    'missing image': 997,
    'joints outside the image (masked)': 2,
    'no annotated joints': 1,
  }
  assert builder.report['test']['counts'] == {'missing image': 1000}
  assert list(builder.info.splits) == ['train']  # the empty split is left out, and reported
  source = builder.as_data_source('train', decoders={'image': tfds.decode.SkipDecoding()})
  first, second = source[0], source[1]
  l_hip, pelvis = joints.MPII16.index('l_hip'), joints.PELVIS
  assert second['joints_mask'][l_hip] == 0 and second['joints_mask'][pelvis] == 0
  assert second['joints_mask'].sum() == 14  # l_hip and the pelvis derived from it
  assert np.all(second['joints_2d'][l_hip] == 0)  # a masked joint carries no coordinates
  crop = features.decode_jpeg(first['image']).astype(np.float32)
  in_crop = geometry.transform_points(
    geometry.invert_affine(first['crop_to_image']), first['joints_2d']
  )
  for (cx, cy), (x, y) in zip(in_crop, first['joints_2d']):
    original = cv2.getRectSubPix(image.astype(np.float32), (1, 1), (float(x), float(y)))[0, 0]
    stored = cv2.getRectSubPix(crop, (1, 1), (float(cx), float(cy)))[0, 0]
    np.testing.assert_allclose(stored, original, atol=12)
  assert first['torso_size'] > 0 and first['head_size'] == 0
  np.testing.assert_array_equal(first['image_size'], [120, 100])  # width, height


def test_load_mat_names_the_file_and_variable(tmp_path):
  path = tmp_path / 'x.mat'
  path.write_bytes(b'MATLAB 5.0 MAT-file, truncated')
  try:
    base.load_mat(str(path), 'joints')
  except base.AnnotationError as e:
    assert str(path) in str(e)
  else:
    raise AssertionError('a truncated .mat must raise AnnotationError')


class _Builder:
  """What datasets.prepare uses of a TFDS builder; records whether TFDS's bars were on."""

  name = 'fake'

  def __init__(self, data_dir):
    self.data_dir = str(data_dir / 'fake' / '1.0.0')
    self.bars = None

  def is_prepared(self):
    return False

  def download_and_prepare(self):
    from tensorflow_datasets.core.utils import tqdm_utils

    self.bars = tqdm_utils._active  # pylint: disable=protected-access


def test_tfds_bars_are_off_when_the_output_is_not_a_terminal(tmp_path, monkeypatch):
  from hpe_jax.data import datasets

  tfds.enable_progress_bar()
  builder = _Builder(tmp_path)
  monkeypatch.setattr('sys.stdout.isatty', lambda: False)
  datasets.prepare(builder)
  assert builder.bars is False
  tfds.enable_progress_bar()


def test_decoded_images_are_contiguous_rgb_with_or_without_opencvs_rgb_flag(monkeypatch):
  # Distinct channels: a swap of R and B would show. PNG is lossless, so equality is exact.
  image = np.zeros((6, 5, 3), np.uint8)
  image[..., 0], image[..., 1], image[..., 2] = 200, np.arange(5, dtype=np.uint8) * 10, 30
  png = cv2.imencode('.png', image[..., ::-1])[1].tobytes()  # OpenCV writes BGR
  decoded = [features.decode_image(png)]
  monkeypatch.setattr(features, '_IMREAD_RGB', None)  # an OpenCV older than 4.10
  decoded.append(features.decode_image(png))
  for rgb in decoded:
    np.testing.assert_array_equal(rgb, image)
    assert rgb.flags['C_CONTIGUOUS']
  assert features.decode_image(b'not an image') is None
