r"""Exports a trained run's model into one file that runs with jax and numpy alone.

  hpe-export --workdir=runs/finetune --out=runs/finetune/model.hpe [--step=S] [--noflip_test] \
      [--nosubpixel] [--platforms=cpu,cuda]

(`python -m hpe_jax.commands.export` is the same.) The file (a zip) holds the predict step
serialised with jax.export (StableHLO for each platform of --platforms, any batch size), the
weights beside it and a JSON header (input size, joints, readout, depth, the run and step it came
from, format version). Use it with

  hpe-predict --model=runs/finetune/model.hpe photo.jpg

or from Python, without Flax or the model code:

  from hpe_jax import inference
  model = inference.load_exported('runs/finetune/model.hpe')
  result = model.predict(image_rgb_uint8, box=(x, y, w, h))  # as inference.load(workdir)
"""

from __future__ import annotations

from absl import flags

from hpe_jax import cli

_WORKDIR = flags.DEFINE_string(
  'workdir', None, "A trained run's directory (config.json and checkpoints/), e.g. runs/finetune."
)
_OUT = flags.DEFINE_string('out', None, 'The file to write (replaced if present).')
_STEP = flags.DEFINE(
  cli.StepParser(),
  'step',
  None,
  'The saved step to export, or best (train.keep_best; default: the newest).',
)
_FLIP_TEST = flags.DEFINE_boolean(
  'flip_test', None, "Average with the mirrored image's prediction (default: the run's config)."
)
_SUBPIXEL = flags.DEFINE_boolean(
  'subpixel', None, "Quarter-pixel peak refinement (default: the run's config)."
)
_PLATFORMS = flags.DEFINE_list(
  'platforms', ['cpu', 'cuda'], 'The platforms to lower for (jax.export: cpu, cuda, rocm, tpu).'
)


def main(args: list[str]) -> None:
  del args  # none
  from hpe_jax.inference import export_run  # pylint: disable=g-import-not-at-top  (fast --help)

  header = export_run.export(
    _WORKDIR.value,
    _OUT.value,
    step=_STEP.value,
    flip_test=_FLIP_TEST.value,
    subpixel=_SUBPIXEL.value,
    platforms=_PLATFORMS.value,
  )
  print(
    f'{_OUT.value}: step {header["step"]} of {_WORKDIR.value}, '
    f'{header["image_size"]} px input, {"2D + depth" if header["has_depth"] else "2D only"}, '
    f'flip test {"on" if header["flip_test"] else "off"}, '
    f'sub-pixel {"on" if header["subpixel"] else "off"}, for {", ".join(header["platforms"])}'
  )


def run() -> None:
  cli.run(main, required=('workdir', 'out'))


if __name__ == '__main__':
  run()
