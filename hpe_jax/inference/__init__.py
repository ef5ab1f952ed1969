"""Inference: a trained run's model on images, videos and cameras, apart from training (it
imports no hpe_jax.training; training's evaluation uses its predict step).

  from hpe_jax import inference
  model = inference.load('runs/finetune')
  result = model.predict(image, box=(x, y, w, h))  # (H, W, 3) uint8 RGB; a COCO-style box
  model = inference.load_exported('model.hpe')     # the same, from `hpe-export`

  crops.py        the square crop around a person box and back to image pixels (numpy, OpenCV)
  boxes.py        person boxes from a detector's COCO results file, and box checks
  readout.py      the flip test, heatmap readout and jit-compiled predict step
  pose_model.py   what predicting asks of a model, loaded either way (`PoseModel`, a Protocol)
  predictor.py    load a run (`load`, `load_run_config`) and predict (`Predictor`)
  export_run.py   a run's predict step serialised with jax.export, weights included (`export`)
  exported.py     load and run such a file with jax and numpy alone (`load_exported`)
  loading.py      a run's or an exported model for predicting, and the record naming it
  image_io.py     image files read and written (`ImageError`)
  inputs.py       a prediction's images, videos, camera and boxes, checked before the model loads
  records.py      the JSON records of a person, an image and a video
  outputs.py      where outputs go, each image's JSON, and --format's files (`write_coco`)
  image_loop.py   predict on image files and save pictures and JSON
  video.py        predict on a video or camera: threaded decoding and writing (`predict_video`)
  video_writer.py H.264 MP4 files browsers play, through PyAV (`H264Writer`)
  tracking.py     people tracked across frames, One-Euro smoothing (numpy)
  predict_run.py  images, videos and a camera in one call (`predict_files`: images alone),
                  what `hpe-predict` runs
  visualize.py    draw the 2D skeleton over an image, plot the 3D one

The names below are imported on first use, so that `load_exported` runs without Flax or the
model code (and the pictures' matplotlib loads only with `predict_files`).
"""

from __future__ import annotations

import importlib

# name -> the module of this package that defines it.
_NAMES = {
  'BOX_PAD': 'crops',
  'BoxError': 'boxes',
  'read_boxes': 'boxes',
  'person_square': 'crops',
  'ImageError': 'image_io',
  'predict_files': 'predict_run',
  'PoseModel': 'pose_model',
  'predict_video': 'video',
  'Predictor': 'predictor',
  'load': 'predictor',
  'load_run_config': 'predictor',
  'jit_predict': 'readout',
  'predict_step': 'readout',
  'unmirror_outputs': 'readout',
  'ExportError': 'exported',
  'ExportedModel': 'exported',
  'load_exported': 'exported',
  'export': 'export_run',
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
  if name not in _NAMES:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(f'{__name__}.{_NAMES[name]}'), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_NAMES))
