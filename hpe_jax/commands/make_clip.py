r"""Renders a short demo video of procedural people walking or squatting, with their boxes and
exact joints.

  hpe-make-clip --out=demo.mp4 [--boxes=demo_boxes.json] [--frames=90] \
      [--width=640 --height=360 --fps=30 --people=2 --seed=0]
  hpe-make-clip --out=squat.mp4 --motion=squat --reps=5 --frames=300 --people=1 \
      --truth=squat_truth.jsonl
  hpe-predict --workdir=RUN demo.mp4 --boxes=demo_boxes.json   # then predict it
  hpe-analyze squat_truth.jsonl --reps=knee_flexion_left   # --truth: the labels

(`python -m hpe_jax.commands.make_clip` is the same.) The people, bodies and backgrounds are those
the synthetic_humans dataset renders (hpe_jax/data/synthetic), so the clip holds no dataset image
and may be published. The video is H.264 (yuv420p) in MP4, which browsers play; --boxes writes
every person's box in every frame as a COCO detection-results list with "frame" entries, what
`hpe-predict --boxes` reads; --truth writes the exact joints as hpe-predict's frames file, what
`hpe-analyze` reads. The same --seed gives the same clip. Exit codes: 0 written, 2 a problem (one
line on stderr says which and what to do).
"""

from __future__ import annotations

from absl import flags

from hpe_jax import cli

_OUT = flags.DEFINE_string('out', None, 'The video to write (.mp4).')
_BOXES = flags.DEFINE_string('boxes', None, "Also write the people's boxes to this JSON file.")
_TRUTH = flags.DEFINE_string(
  'truth',
  None,
  "Also write the true joints to this .jsonl, as hpe-predict writes a video's frames (with its "
  '.json header beside it): hpe-analyze reads it, for an analysis of the truth.',
)
_FRAMES = flags.DEFINE_integer('frames', 90, 'Number of frames.', lower_bound=1)
_WIDTH = flags.DEFINE_integer('width', 640, 'Frame width, pixels (even).', lower_bound=2)
_HEIGHT = flags.DEFINE_integer('height', 360, 'Frame height, pixels (even).', lower_bound=2)
_FPS = flags.DEFINE_float('fps', 30.0, 'Frames per second.', lower_bound=1.0)
_PEOPLE = flags.DEFINE_integer('people', 2, 'Number of people.', lower_bound=0)
_MOTION = flags.DEFINE_enum(
  'motion', 'walk', ['walk', 'squat'], 'What the people do: walk across, or squat in place.'
)
_REPS = flags.DEFINE_integer(
  'reps', None, 'With --motion=squat: the number of squats each person does, over the clip.'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed: the same seed, the same clip.', lower_bound=0)


def main(args: list[str]) -> None:
  del args
  from hpe_jax.data.synthetic import clip  # pylint: disable=g-import-not-at-top  (--help stays fast)

  labels = clip.write_clip(
    _OUT.value,
    frames=_FRAMES.value,
    width=_WIDTH.value,
    height=_HEIGHT.value,
    fps=_FPS.value,
    people=_PEOPLE.value,
    seed=_SEED.value,
    motion=_MOTION.value,
    reps=_REPS.value,
    boxes_path=_BOXES.value,
  )
  width, height = labels['size']
  print(
    f'Wrote {_OUT.value}: {_FRAMES.value} frames of {width}x{height} at {labels["fps"]:g} fps, '
    f'{_PEOPLE.value} {"person" if _PEOPLE.value == 1 else "people"}'
    + (f', {_REPS.value} squats each' if _REPS.value else '')
  )
  if _BOXES.value:
    print(f'Wrote {_BOXES.value}: {len(clip.boxes_json(labels["boxes"]))} boxes')
  if _TRUTH.value:
    clip.write_truth(labels, _TRUTH.value, video=_OUT.value)
    print(f'Wrote {_TRUTH.value}: the true joints of every frame')


def run() -> None:
  cli.run(main, required=('out',))


if __name__ == '__main__':
  run()
