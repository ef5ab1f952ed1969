"""Video prediction throughput: frames/s end to end (decode, crop, predict, track, draw, encode,
write), and the predict step against the eager PyTorch peer's forward pass on the same crops.

Each measurement is one JSON line:
- `decode`: frames/s of decoding the video alone (the background reader, nothing else);
- `video_whole_frame`, `video_boxes`: frames/s of `inference.video.predict_video` on the whole
  video, one person per frame (the whole frame) or every person of the boxes file, after the
  predict step is compiled;
- `predict_step`: people/s of hpe_jax's jitted predict step (`Predictor.predict_inputs`: device
  transfer, the network, the flip test when on, the heatmap readout, the copy back) on a batch of
  the video's crops;
- `torch_eager_forward`: people/s of the peer's (torch_peer.py) eager float32 forward
  pass in evaluation mode under torch.inference_mode on the same batch, twice (the image and its
  mirror) when the flip test is on: the network alone, as the reference runs it;
and a summary line with predict_step / torch_eager_forward.

The model has fresh weights: speed does not depend on them.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Callable

from flax import nnx
import jax
import ml_collections
import numpy as np

from hpe_jax import models
from hpe_jax.data.synthetic import clip
from hpe_jax.inference import boxes as boxes_lib
from hpe_jax.inference import crops
from hpe_jax.inference import predictor as predictor_lib
from hpe_jax.inference import video
from tools.lib import benchmark


def fresh_predictor(config: ml_collections.ConfigDict, batch_size: int):
  """A Predictor of `config`'s model with freshly initialised weights."""
  model = models.create_model(
    config.model, with_depth=config.model.depth, rngs=nnx.Rngs(config.seed)
  )
  model.eval()
  model_def, state = nnx.split(model)
  return predictor_lib.create(config, model_def, state, batch_size=batch_size)


def time_decode(path: str) -> dict:
  source = video.open_source(path)
  reader = video.FrameReader(source)
  start = time.perf_counter()
  frames = sum(1 for _ in reader)
  seconds = time.perf_counter() - start
  reader.close()
  return {'frames': frames, 'frames_per_s': round(frames / seconds, 1)}


def time_video(
  predictor, path: str, out_dir: str, batch_size: int, frame_boxes=None, smoothing=None
) -> dict:
  """predict_video on the whole video (after a compile on one batch)."""
  run = {'workdir': None, 'step': 0, 'depth': predictor.has_depth}
  summary = video.predict_video(
    predictor,
    video.open_source(path),
    out_dir,
    run=run,
    frame_boxes=frame_boxes,
    smoothing=smoothing,
    batch_size=batch_size,
    log=lambda line: None,
    warn=lambda line: None,
  )
  return {
    'frames': summary['frames'],
    'seconds': round(summary['seconds'], 2),
    'frames_per_s': round(summary['frames_per_s'], 1),
  }


def video_crops(path: str, image_size: int, count: int) -> np.ndarray:
  """(count, S, S, 3) uint8: the whole-frame crops of the video's first frames (repeated if the
  video is shorter)."""
  source = video.open_source(path)
  reader = video.FrameReader(source)
  inputs = []
  for frame in reader:
    inputs.append(crops.crop_person(frame.image, None, image_size).model_input)
    if len(inputs) == count:
      break
  reader.close()
  return np.stack([inputs[i % len(inputs)] for i in range(count)])


def time_peer_forward(config: ml_collections.ConfigDict, inputs: np.ndarray, timing) -> dict:
  """The eager peer's forward pass on `inputs` (and on their mirror with the flip test)."""
  import torch  # pylint: disable=g-import-not-at-top  (torch stays optional)

  from tools.lib import compare_peer  # pylint: disable=g-import-not-at-top
  from tools.lib import torch_peer  # pylint: disable=g-import-not-at-top

  device = torch_peer.default_device()
  model = torch_peer.create_model(config.model, with_depth=config.model.depth).to(device).eval()
  images = torch.from_numpy(inputs).to(device)
  flip = bool(config.eval.flip_test)

  @torch.inference_mode()
  def forward():
    outputs = model(torch_peer.normalize_images(images, torch.contiguous_format))
    if flip:
      mirrored = model(torch_peer.normalize_images(images.flip(2), torch.contiguous_format))
      return outputs['heatmaps'], mirrored['heatmaps']
    return (outputs['heatmaps'],)

  def sync(outputs) -> None:
    if device.type == 'cuda':
      torch.cuda.synchronize()
    del outputs

  times = timing(forward, sync)
  return {
    'device': compare_peer.torch_device_name(device),
    'torch': torch.__version__,
    'step_ms': round(times['step_s'] * 1e3, 2),
    'people_per_s': round(len(inputs) / times['step_s'], 1),
  }


def benchmark_video(
  config: ml_collections.ConfigDict,
  *,
  video_path: str | None = None,
  boxes_path: str | None = None,
  frames: int = 300,
  batch_size: int = video.DEFAULT_BATCH_SIZE,
  peer: bool = True,
  steps: int = 10,
  repeats: int = 3,
  log: Callable[[str], None] = print,
) -> dict[str, dict]:
  """Times the lines of the module doc on `video_path` (default: a synthetic clip of `frames`
  640 x 360 frames with two people, and its boxes) and logs each as JSON.

  Returns:
    {system: its line} and 'summary'.
  """
  lines = {}

  def emit(line: dict) -> None:
    lines[line.get('system', 'summary')] = line
    log(json.dumps(line))

  timing = lambda step, sync: benchmark.time_steps(
    step, sync, steps=steps, repeats=repeats, warmup=2
  )
  fields = {
    **benchmark.model_fields(config, batch_size),
    'flip_test': bool(config.eval.flip_test),
  }
  summary = {'load_1min_start': round(os.getloadavg()[0], 2)}
  with tempfile.TemporaryDirectory() as scratch:
    if video_path is None:
      video_path, boxes_path = os.path.join(scratch, 'clip.mp4'), os.path.join(scratch, 'b.json')
      clip.write_clip(video_path, frames=frames, boxes_path=boxes_path)
    emit({'system': 'decode', 'video': video_path, **time_decode(video_path)})
    predictor = fresh_predictor(config, batch_size)
    inputs = video_crops(video_path, config.data.image_size, predictor.batch_size)
    start = time.perf_counter()
    jax.block_until_ready(predictor.predict_inputs(inputs))
    compile_s = time.perf_counter() - start
    ours = timing(lambda: predictor.predict_inputs(inputs), lambda outputs: None)
    emit(
      {
        'system': 'predict_step',
        **fields,
        'device': benchmark.jax_devices(),
        'jax': jax.__version__,
        'compile_s': round(compile_s, 2),
        'step_ms': round(ours['step_s'] * 1e3, 2),
        'people_per_s': round(len(inputs) / ours['step_s'], 1),
      }
    )
    if peer:  # right after ours: a busy machine drifts
      emit({'system': 'torch_eager_forward', **fields, **time_peer_forward(config, inputs, timing)})
      summary['predict_step_over_torch_eager_forward'] = round(
        lines['predict_step']['people_per_s'] / lines['torch_eager_forward']['people_per_s'], 3
      )
    out_dir = os.path.join(scratch, 'out')
    os.makedirs(out_dir)
    emit(
      {
        'system': 'video_whole_frame',
        **fields,
        **time_video(predictor, video_path, out_dir, batch_size),
      }
    )
    if boxes_path is not None:
      frame_boxes = boxes_lib.read_boxes(boxes_path, [], 0.0, [video_path]).per_video[video_path]
      people = sum(len(b) for b in frame_boxes.values()) / max(len(frame_boxes), 1)
      emit(
        {
          'system': 'video_boxes',
          **fields,
          'people_per_frame': round(people, 2),
          **time_video(predictor, video_path, out_dir, batch_size, frame_boxes),
        }
      )
  summary['load_1min_end'] = round(os.getloadavg()[0], 2)
  emit(summary)
  return lines
