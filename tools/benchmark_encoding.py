"""Cost of writing a video: ms per frame, file size and quality of each encoder we could use.

  python tools/benchmark_encoding.py --frames=150 --width=640 --height=360
  python tools/benchmark_encoding.py --presets=ultrafast,veryfast,medium --crfs=18,23,28

Renders a clip of two people walking (hpe_jax.data.synthetic.clip, not timed), then writes it with
OpenCV's mp4v (what the videos were before), the H.264 writer (hpe_jax.inference.video_writer; every
--presets x --crfs) and OpenCV's VP9 in WebM (OpenCV warns that the VP90 tag does not suit WebM, and
writes it all the same). Prints one JSON line per encoder: ms_per_frame (the median over --repeats
of the wall clock from opening the file to closing it, the RGB -> BGR conversion OpenCV needs
included), cpu_ms_per_frame (the same in CPU time, all threads: steadier on a busy machine), bytes,
and luma_psnr_db of the decoded frames against the rendered ones. Luma: every encoder here stores
colour per 2x2 pixels (4:2:0), which alone caps the RGB PSNR of the clip's noisy background near
27 dB.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import flags

from hpe_jax import cli

_FRAMES = flags.DEFINE_integer('frames', 150, 'Frames of the clip.', lower_bound=1)
_WIDTH = flags.DEFINE_integer('width', 640, 'Frame width, pixels (even).', lower_bound=2)
_HEIGHT = flags.DEFINE_integer('height', 360, 'Frame height, pixels (even).', lower_bound=2)
_FPS = flags.DEFINE_float('fps', 30.0, 'Frames per second.', lower_bound=1.0)
_PRESETS = flags.DEFINE_list(
  'presets', ['ultrafast', 'veryfast'], "x264 presets to time (the writer's: ultrafast)."
)
_CRFS = flags.DEFINE_list('crfs', ['23'], 'x264 constant rate factors to time.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed writes per encoder.', lower_bound=1)
_VP9 = flags.DEFINE_bool('vp9', True, "Also time OpenCV's VP9 (slow: ~100 ms per 640x360 frame).")


def main(args: list[str]) -> None:
  del args
  # pylint: disable=g-import-not-at-top  (--help stays fast)
  import av
  import cv2
  import numpy as np

  from hpe_jax.data.synthetic import clip
  from hpe_jax.inference import video_writer

  width, height, fps = _WIDTH.value, _HEIGHT.value, _FPS.value
  scene = clip.sample_scene(frames=_FRAMES.value, width=width, height=height, fps=fps)
  frames = [frame.image for frame in clip.render_frames(scene, _FRAMES.value)]

  def luma(frame: av.VideoFrame) -> np.ndarray:
    return frame.reformat(format='yuv420p').to_ndarray()[:height].astype(np.float32)

  source_luma = [luma(av.VideoFrame.from_ndarray(rgb, format='rgb24')) for rgb in frames]

  def opencv(fourcc: str):
    def write(path: str) -> None:
      writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
      for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
      writer.release()

    return write

  def h264(preset: str, crf: int):
    def write(path: str) -> None:
      with video_writer.H264Writer(path, fps, width, height, preset=preset, crf=crf) as writer:
        for rgb in frames:
          writer.write(rgb)

    return write

  encoders = [('mp4v', 'OpenCV', '.mp4', opencv('mp4v'))]
  for preset in _PRESETS.value:
    for crf in _CRFS.value:
      name = f'h264 {preset} crf {crf}'
      encoders.append((name, 'PyAV libx264', '.mp4', h264(preset, int(crf))))
  if _VP9.value:
    encoders.append(('vp9', 'OpenCV', '.webm', opencv('VP90')))
  with tempfile.TemporaryDirectory() as scratch:
    for name, writer, extension, write in encoders:
      path = os.path.join(scratch, name.replace(' ', '_') + extension)
      times, cpu_times = [], []
      for _ in range(_REPEATS.value):
        start, cpu_start = time.perf_counter(), time.process_time()
        write(path)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
      with av.open(path) as container:
        decoded = [luma(f) for f in container.decode(video=0)]
      if len(decoded) != len(frames):
        raise RuntimeError(f'{name}: wrote {len(frames)} frames, decoded {len(decoded)}')
      error = np.mean([np.mean((d - s) ** 2) for d, s in zip(decoded, source_luma)])
      result = {
        'encoder': name,
        'writer': writer,
        'frames': len(frames),
        'size': f'{width}x{height}',
        'ms_per_frame': round(1000 * float(np.median(times)) / len(frames), 2),
        'cpu_ms_per_frame': round(1000 * float(np.median(cpu_times)) / len(frames), 2),
        'bytes': os.path.getsize(path),
        'luma_psnr_db': round(float(10 * np.log10(255**2 / error)), 2),
      }
      print(json.dumps(result), flush=True)


def run() -> None:
  cli.run(main)


if __name__ == '__main__':
  run()
