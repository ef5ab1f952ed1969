"""What `hpe-predict` does with its inputs: images, videos and a camera checked
before the model loads (`inputs.check`: nothing is loaded or created before), the model loaded
once (`loading.load_model`), then every image (`image_loop.predict_images`) and every video or
camera (`video.predict_video`) predicted into one output directory, and last what the output
format adds (`outputs.FORMATS`: with coco, all of their people as COCO keypoint results).

One output directory has one writer: a predict holds a lock on the directory itself
(`locks.exclusive_directory`, released when it ends, however it ends) from before the model loads
(where the directory exists; else from its creation) until its last file, and a second predict
into it stops with an error naming the first's PID.

  result = predict_run.predict(['a.jpg', 'walk.mp4'], workdir='runs/finetune')
  results = predict_run.predict_files('runs/finetune', ['a.jpg', 'b.jpg'], [(x, y, w, h)])
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable
from typing import Sequence

from hpe_jax import locks
from hpe_jax.inference import image_io
from hpe_jax.inference import image_loop
from hpe_jax.inference import inputs
from hpe_jax.inference import loading
from hpe_jax.inference import outputs
from hpe_jax.inference import tracking
from hpe_jax.inference import video


@contextlib.contextmanager
def _one_writer(out_dir: str):
  """Holds `out_dir`'s lock for the block (module doc).

  Raises:
    ImageError: another predict holds it (naming its PID), or the directory cannot be opened.
  """
  held = contextlib.ExitStack()
  try:
    held.enter_context(locks.exclusive_directory(out_dir))
  except locks.LockHeld as e:
    raise image_io.ImageError(
      f'--out_dir={out_dir} is being written by another hpe-predict (PID {e.pid}): wait for it '
      'to end, or choose another --out_dir'
    ) from None
  except OSError as e:
    raise image_io.ImageError(
      f'--out_dir={out_dir} cannot be used ({e.strerror or e}): choose another output directory'
    ) from None
  with held:
    yield


def predict(
  paths: Sequence[str],
  *,
  workdir: str | None = None,
  model: str | None = None,
  step=None,
  camera: int | None = None,
  bbox: Sequence | None = (),
  boxes_file: str | None = None,
  box_threshold: float = 0.5,
  output_format: str = 'json',
  images_only: bool = False,
  out_dir: str | None = None,
  batch_size: int | None = None,
  smoothing: tracking.OneEuroParams | None = None,
  on_image: Callable[[dict], None] | None = None,
  on_video: Callable[[dict], None] | None = None,
  finish: Callable[[dict], None] | None = None,
  log: Callable[[str], None] = print,
  warn: Callable[[str], None] = outputs.warn,
) -> dict:
  """Predicts every person of `paths` (images and videos, told apart by `video.is_video`) and of
  `camera`, with a run's `workdir` (at `step`) or an exported `model`.

  Args:
    bbox: person boxes (x, y, w, h) or None: one for every input, or one per input in order
      (the camera last).
    boxes_file, box_threshold: a detector's boxes (`boxes.read_boxes`) instead of `bbox`.
    output_format: a name of outputs.FORMATS: json (the per-input files only) or coco (also every
      person of the images and of the videos' and camera's frames as COCO keypoint results, once
      every input is done: `outputs.write_coco`, numeric image ids, the frames numbered after
      the images).
    images_only: every path is an image, whatever its extension.
    out_dir: the output directory; None: `outputs.default_out_dir`.
    batch_size: people per device call; None: video.DEFAULT_BATCH_SIZE, 1 with a camera.
    smoothing: One-Euro parameters for videos and the camera; None: raw per-frame poses.
    on_image, on_video: called with each image's result as it is saved, each video's summary.
    finish: called with the result once every file is written, the output directory still
      held (what the caller writes there: hpe-predict's --analyze).
    log, warn: take the videos' progress lines and the warnings.
  Returns:
    {'images': image_loop.predict_images' results, 'written': the output format's writer's result
    (write_coco's) or None, 'videos': the summaries, 'interrupted': whether Ctrl-C stopped a
    video file (the videos after it are not predicted; a camera ends with Ctrl-C)}.
  Raises:
    ValueError: not exactly one of `workdir` and `model`, or an output format outputs.FORMATS
      does not name.
    ImageError, VideoError, BoxError: an input, box or output that cannot be used (inputs and
      boxes before the model loads), or an output directory another predict is writing.
    CheckpointError, ExportError: no usable model.
  """
  if (workdir is None) == (model is None):
    raise ValueError('predict takes either a workdir or an exported model')
  if output_format not in outputs.FORMATS:
    raise ValueError(f'output format {output_format!r}: expected one of {list(outputs.FORMATS)}')
  out_dir = out_dir or outputs.default_out_dir(workdir, model)
  checked = inputs.check(
    paths,
    out_dir,
    camera=camera,
    bbox=bbox,
    boxes_file=boxes_file,
    box_threshold=box_threshold,
    images_only=images_only,
  )
  pending = list(checked.videos)
  held = contextlib.ExitStack()
  try:
    locked = os.path.isdir(out_dir)
    if locked:  # a second writer stops before loading
      held.enter_context(_one_writer(out_dir))
    batch_size = batch_size or (1 if camera is not None else video.DEFAULT_BATCH_SIZE)
    loaded, run = loading.load_model(workdir, model, batch_size, step=step)
    outputs.make_out_dir(out_dir)
    if not locked:
      held.enter_context(_one_writer(out_dir))
    images = image_loop.predict_images(loaded, run, checked.people, out_dir, on_saved=on_image)
    result = {'images': images, 'written': None, 'videos': [], 'interrupted': False}
    while pending:
      given = pending.pop(0)
      summary = video.predict_video(
        loaded,
        given.source,
        out_dir,
        run=run,
        box=given.box,
        frame_boxes=given.frame_boxes,
        smoothing=smoothing,
        batch_size=batch_size,
        log=log,
        warn=warn,
      )
      result['videos'].append(summary)
      if on_video:
        on_video(summary)
      if summary['interrupted'] and not given.source.live:
        result['interrupted'] = True
        if pending:
          warn(f'not predicted: {", ".join(v.source.name for v in pending)}')
        break
    write = outputs.FORMATS[output_format]
    if write:  # after Ctrl-C too: the frames done
      result['written'] = write(
        result['images'], out_dir, images=checked.images, videos=result['videos']
      )
    if finish:
      finish(result)
    return result
  finally:
    held.close()
    for given in pending:  # those not predicted (predict_video releases its own)
      given.source.capture.release()


def predict_files(
  workdir: str | None,
  paths: Sequence[str],
  boxes: Sequence | None = None,
  out_dir: str | None = None,
  on_saved: Callable[[dict], None] | None = None,
  *,
  model: str | None = None,
  boxes_file: str | None = None,
  box_threshold: float = 0.5,
) -> list[dict]:
  """Predicts every person of every image with the run in `workdir` (or the exported `model`)
  and saves the image's outputs (`image_loop`'s module doc): `predict` on images alone.

  Args:
    workdir: a trained run's directory; None with `model`.
    paths: image files, whatever their extension.
    boxes: None (every image whole), a list of one (x, y, w, h) box for all images, or a list of
      one box per image (None: that image whole); pixels, (x, y) the top-left corner. One
      person per image.
    out_dir: the output directory; None: `outputs.default_out_dir`.
    on_saved: called with each result as soon as its files are written.
    model: instead of `workdir`, a file of `hpe-export` (`exported.load_exported`:
      neither Flax nor the model code is imported).
    boxes_file: instead of `boxes`, a detector's boxes file (`boxes.read_boxes`): every kept box
      is a person; images without one are skipped with a warning, boxes wholly outside their
      image too.
    box_threshold: the lowest detector score of `boxes_file` kept.
  Returns:
    `image_loop.predict_images`' results, per predicted image.
  Raises:
    ImageError: an unreadable image, a bad box or box count (before the model loads), an output
      directory that cannot be created, or a file that cannot be written.
    BoxError: a bad box or boxes file, or one with no box kept (before the model loads).
    CheckpointError: `workdir` holds no usable run.
    ExportError: `model` is not an exported model this version reads.
  """
  result = predict(
    paths,
    workdir=workdir,
    model=model,
    bbox=boxes,
    boxes_file=boxes_file,
    box_threshold=box_threshold,
    images_only=True,
    out_dir=out_dir,
    on_image=on_saved,
  )
  return result['images']
