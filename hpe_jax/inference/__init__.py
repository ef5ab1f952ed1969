"""Inference: a trained run's model on images, apart from training (it imports no
hpe_jax.training; training's evaluation uses its predict step).

  from hpe_jax import inference
  model = inference.load('runs/finetune')
  result = model.predict(image, box=(x, y, w, h))  # (H, W, 3) uint8 RGB; a COCO-style box

  readout.py      the flip test, heatmap readout and jit-compiled predict step
  predictor.py    load a run (`load`, `load_run_config`) and predict (`Predictor`)
  image_files.py  predict on image files and save pictures and JSON (`predict_files`)
  visualize.py    draw the 2D skeleton over an image, plot the 3D one
"""

from __future__ import annotations

from hpe_jax.inference.image_files import ImageError
from hpe_jax.inference.image_files import predict_files
from hpe_jax.inference.predictor import BOX_PAD
from hpe_jax.inference.predictor import Predictor
from hpe_jax.inference.predictor import load
from hpe_jax.inference.predictor import load_run_config
from hpe_jax.inference.predictor import person_square
from hpe_jax.inference.readout import jit_predict
from hpe_jax.inference.readout import predict_step
from hpe_jax.inference.readout import unmirror_outputs
