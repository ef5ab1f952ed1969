"""TensorBoard event files of a training run, written without TensorFlow (by tensorboardX).

  <workdir>/tensorboard/events.out.tfevents.<time>.<host>.<n>   one file per start of the run

Tags, each point at its training step with the wall time of its metrics.jsonl record (the source
of truth; these files are a view of it):
  train/<name>                   every number of a train record: loss, heatmap_loss, depth_loss,
                                 geometric_loss, grad_norm, lr, images_per_s
  eval/<dataset>/<name>          every number of an evaluation record: pck, pckh, mpjpe, ...
  eval/<dataset>/predictions     an image: the first eval crops with their predicted skeletons
<dataset> is the split as eval/<dataset>.json names it (mpii:validation -> mpii_validation), so
that a resume evaluating on another split draws other curves. Non-finite values are left out (the
record has null).

  tensorboard --logdir <workdir>/tensorboard    (or a directory of many workdirs)
"""

from __future__ import annotations

import math
import os
import re
import sys
import time

import numpy as np

from hpe_jax import errors

LOG_DIR = 'tensorboard'
EVENT_FILE_MARK = '.tfevents.'  # in every event file's name (what TensorBoard looks for)
NUM_OVERLAYS = 4  # eval crops drawn per evaluation
_NOT_SCALARS = ('step', 'time')


def _import_tensorboardx():
  """The tensorboardX package with the modules used here imported, without torch: tensorboardX
  imports torch, where installed, only to accept torch tensors (1.6 s and a few hundred MB, for
  a writer given numpy arrays).

  Raises:
    ConfigError: tensorboardX is not installed.
  """
  hide_torch = 'torch' not in sys.modules
  if hide_torch:
    sys.modules['torch'] = None  # `import torch` raises ImportError during this import only
  try:
    # pylint: disable=g-import-not-at-top
    import tensorboardX.event_file_writer
    import tensorboardX.proto.event_pb2
    import tensorboardX.proto.summary_pb2
    import tensorboardX.summary
  except ImportError as e:
    raise errors.ConfigError(
      f'train.tensorboard is on but tensorboardX cannot be imported ({e}): pip install '
      'tensorboardX, or set --config.train.tensorboard=False'
    ) from e
  finally:
    if hide_torch:
      del sys.modules['torch']
  return tensorboardX


def dataset_tag(split: str) -> str:
  """A split 'name[/config]:split' as a tag component (the name of its eval/<dataset>.json)."""
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', split)


def scalars(record: dict) -> dict[str, float]:
  """The finite numbers of a metrics.jsonl record other than its step and time, as floats
  (nested dicts such as per_action, strings and booleans are not scalars)."""
  return {
    name: float(value)
    for name, value in record.items()
    if name not in _NOT_SCALARS
    and isinstance(value, (int, float))
    and not isinstance(value, bool)
    and math.isfinite(value)
  }


def draw_predictions(images: np.ndarray, prediction: dict, count: int = NUM_OVERLAYS) -> np.ndarray:
  """The first `count` crops with their predicted skeletons (`visualize.draw_2d`), side by side.

  Args:
    images: (B, S, S, 3) uint8 RGB model inputs.
    prediction: 'pred_xy' (B, 16, 2) in input pixels and 'pred_peak' (B, 16) heatmap maxima, as
      `inference.predict_step` returns them.
    count: how many crops (fewer if B is smaller).
  Returns:
    (S, min(B, count) * S, 3) uint8 RGB.
  """
  # Here, not at the top: matplotlib, which visualize imports, adds 0.3 s to every training start.
  from hpe_jax.inference import visualize  # pylint: disable=g-import-not-at-top

  overlays = [
    visualize.draw_2d(image, xy, peak)
    for image, xy, peak in zip(images[:count], prediction['pred_xy'], prediction['pred_peak'])
  ]
  return np.concatenate(overlays, axis=1)


class TensorBoardLog:
  """<workdir>/tensorboard/: written by process 0 only, synchronously, so each `flush` leaves
  every point before it on disk (tensorboardX's SummaryWriter queues events to a thread its
  flush does not wait for). The event file is created at the first point; `close` ends it.

  Raises:
    ConfigError: enabled, and tensorboardX is not installed.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.logdir = os.path.join(workdir, LOG_DIR)
    self.enabled = enabled
    self._tbx = _import_tensorboardx() if enabled else None
    self._purge_step = None
    self._writer = None

  def resume_at(self, step: int) -> None:
    """A run resumed after `step`: TensorBoard hides the points earlier files hold from step + 1
    on (logged after the checkpoint the run restarts from; written again by this run). This is
    TensorBoard's own purge marker, a SessionLog START event at step + 1 opening the new file."""
    self._purge_step = step + 1 if step else None

  def write_train(self, record: dict) -> None:
    """Adds a train record of metrics.jsonl ('step', 'time' and its numbers) as train/<name>."""
    self._scalars(record, 'train')

  def write_eval(self, record: dict, overlays: np.ndarray | None = None) -> None:
    """Adds an evaluation record of metrics.jsonl ('step', 'time', 'split' and its numbers) as
    eval/<dataset>/<name>, and `overlays` ((H, W, 3) uint8 RGB, `draw_predictions`) as the image
    eval/<dataset>/predictions."""
    prefix = f'eval/{dataset_tag(record["split"])}'
    self._scalars(record, prefix)
    if overlays is not None and self.enabled:
      image = self._tbx.summary.image(f'{prefix}/predictions', overlays, dataformats='HWC')
      self._event(record, summary=image)

  def flush(self) -> None:
    """Puts every point written so far on disk (fsync'd)."""
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    """Flushes and closes the event file; a later point opens a new one."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def _scalars(self, record: dict, prefix: str) -> None:
    values = scalars(record)
    if self.enabled and values:
      summary_pb2 = self._tbx.proto.summary_pb2
      self._event(
        record,
        summary=summary_pb2.Summary(
          value=[
            summary_pb2.Summary.Value(tag=f'{prefix}/{name}', simple_value=value)
            for name, value in values.items()
          ]
        ),
      )

  def _event(self, record: dict, **fields) -> None:
    if self._writer is None:
      self._writer = self._open()
    self._writer.write_event(
      self._tbx.proto.event_pb2.Event(wall_time=record['time'], step=record['step'], **fields)
    )

  def _open(self):
    event_pb2 = self._tbx.proto.event_pb2
    os.makedirs(self.logdir, exist_ok=True)
    # The file name has the time in whole seconds: a number keeps a restart within the same
    # second from overwriting the previous file (the workdir's lock keeps runs apart).
    number = sum(EVENT_FILE_MARK in name for name in os.listdir(self.logdir))
    writer = self._tbx.event_file_writer.EventsWriter(
      os.path.join(self.logdir, 'events'), filename_suffix=f'.{number}'
    )
    if self._purge_step is not None:
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      writer.write_event(
        event_pb2.Event(wall_time=time.time(), step=self._purge_step, session_log=start)
      )
    return writer
