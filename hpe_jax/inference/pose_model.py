"""What predicting asks of a model, however it was loaded: `predictor.Predictor` (a run's weights,
through Flax) and `exported.ExportedModel` (an `hpe-export` file, jax and numpy
alone) are both a `PoseModel`, and the image and video loops take either.

A model subclasses `PoseModel` and writes `run_network`; `predict_inputs` and `predict` are
written here, once for both.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hpe_jax.inference import crops


class PoseModel(Protocol):
  """A model ready for inference: a person's pose from an image, or from model inputs."""

  step: int  # the training step of the weights

  @property
  def image_size(self) -> int:
    """The side S of the square model input."""
    ...

  @property
  def has_depth(self) -> bool:
    """Whether the model predicts depth (3D joints) too."""
    ...

  def run_network(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """`predict_inputs` on inputs already checked."""
    ...

  def predict_inputs(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Runs the network on model inputs.

    Args:
      inputs: (N, S, S, 3) uint8 RGB, S = image_size.
    Returns:
      pred_xy (N, 16, 2) input pixels, pred_peak (N, 16) heatmap maxima, and for models with
      depth pred_depth (N, 16) root-relative depth in units of the input side.
    Raises:
      ValueError: `inputs` are not of that shape.
    """
    return self.run_network(crops.check_model_inputs(inputs, self.image_size))

  def predict(self, image: np.ndarray, box=None) -> dict[str, np.ndarray]:
    """Predicts the pose of one person: `crops.predict_person` (its doc has the arguments and
    the result) with this model."""
    return crops.predict_person(self.predict_inputs, self.image_size, image, box)
