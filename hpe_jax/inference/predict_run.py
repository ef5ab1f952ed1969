"""What `python -m hpe_jax.predict` does with its inputs: images, videos and a camera checked
before the model loads, the model loaded once, then every image (`image_files.predict_files`) and
every video or camera (`video.predict_video`) predicted into one output directory, and with
`coco` all of their people written last as COCO keypoint results (`image_files.write_coco`).

  result = predict_run.predict(['a.jpg', 'walk.mp4'], workdir='runs/finetune')
"""

from __future__ import annotations

import os
from typing import Callable
from typing import Sequence

from hpe_jax.inference import boxes as boxes_lib
from hpe_jax.inference import image_files
from hpe_jax.inference import tracking
from hpe_jax.inference import video


def predict(
  paths: Sequence[str],
  *,
  workdir: str | None = None,
  model: str | None = None,
  step=None,
  camera: int | None = None,
  bbox: Sequence = (),
  boxes_file: str | None = None,
  box_threshold: float = 0.5,
  coco: bool = False,
  out_dir: str | None = None,
  batch_size: int | None = None,
  smoothing: tracking.OneEuroParams | None = None,
  on_image: Callable[[dict], None] | None = None,
  on_video: Callable[[dict], None] | None = None,
  log: Callable[[str], None] = print,
  warn: Callable[[str], None] = image_files.warn,
) -> dict:
  """Predicts every person of `paths` (images and videos, told apart by `video.is_video`) and of
  `camera`, with a run's `workdir` (at `step`) or an exported `model`.

  Args:
    bbox: person boxes (x, y, w, h) or None: one for every input, or one per input in order
      (the camera last).
    boxes_file, box_threshold: a detector's boxes (`boxes.read_boxes`) instead of `bbox`.
    coco: also write every person of the images and of the videos' and camera's frames as COCO
      keypoint results, once every input is done (`image_files.write_coco`: numeric image ids,
      the frames numbered after the images).
    out_dir: the output directory; None: `image_files.default_out_dir`.
    batch_size: people per device call; None: video.DEFAULT_BATCH_SIZE, 1 with a camera.
    smoothing: One-Euro parameters for videos and the camera; None: raw per-frame poses.
    on_image, on_video: called with each image's result as it is saved, each video's summary.
    log, warn: take the videos' progress lines and the warnings.
  Returns:
    {'images': predict_files' results, 'coco': write_coco's result or None, 'videos': the
    summaries, 'interrupted': whether Ctrl-C stopped a video file (the videos after it are not
    predicted; a camera ends with Ctrl-C)}.
  Raises:
    ImageError, VideoError, BoxError: an input, box or output that cannot be used (inputs and
      boxes before the model loads).
    CheckpointError, ExportError: no usable model.
  """
  videos = [path for path in paths if video.is_video(path)]
  images = [path for path in paths if not video.is_video(path)]
  cameras = [] if camera is None else [camera]
  inputs = [*paths, *cameras]
  box_per_input = dict(zip(inputs, image_files.boxes_per_image(bbox, len(inputs))))
  out_dir = out_dir or image_files.default_out_dir(workdir, model)
  image_files.check_inputs(images, out_dir)
  stems = {os.path.splitext(os.path.basename(path))[0]: path for path in images}
  frame_boxes = {}
  if boxes_file is not None and videos:
    frame_boxes = boxes_lib.read_boxes(boxes_file, images, box_threshold, videos).per_video
  sources = []
  try:
    for video_input in [*videos, *cameras]:
      source = video.open_source(video_input)
      sources.append((video_input, source))
      if source.stem in stems:
        raise video.VideoError(
          f'{stems[source.stem]} and {source.name} would both write '
          f'{video.output_paths(out_dir, source.stem)["json"]}: rename one or predict them in '
          'separate calls with different --out_dir'
        )
      stems[source.stem] = source.name
    batch_size = batch_size or (1 if cameras else video.DEFAULT_BATCH_SIZE)
    predictor, run = image_files.load_model(workdir, model, batch_size, step=step)
    image_files.make_out_dir(out_dir)
    result = {'images': [], 'coco': None, 'videos': [], 'interrupted': False}
    if images:
      result['images'] = image_files.predict_files(
        workdir,
        images,
        [box_per_input[path] for path in images] if bbox else None,
        out_dir,
        on_saved=on_image,
        model=model,
        boxes_file=boxes_file,
        box_threshold=box_threshold,
        predictor=predictor,
        run=run,
      )
    while sources:
      video_input, source = sources.pop(0)
      summary = video.predict_video(
        predictor,
        source,
        out_dir,
        run=run,
        box=box_per_input[video_input],
        frame_boxes=frame_boxes.get(video_input) if boxes_file is not None else None,
        smoothing=smoothing,
        batch_size=batch_size,
        log=log,
        warn=warn,
      )
      result['videos'].append(summary)
      if on_video:
        on_video(summary)
      if summary['interrupted'] and not source.live:
        result['interrupted'] = True
        if sources:
          warn(f'not predicted: {", ".join(s.name for _, s in sources)}')
        break
    if coco:  # after Ctrl-C too: the frames done
      result['coco'] = image_files.write_coco(
        result['images'], out_dir, images=images, videos=result['videos']
      )
    return result
  finally:
    for _, source in sources:  # those not predicted (predict_video releases its own)
      source.capture.release()
