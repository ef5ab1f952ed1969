r"""Evaluates a trained run on built datasets.

  hpe-evaluate --workdir=runs/finetune [--dataset=human36m:test ...] \
      [--noflip_test] [--nosubpixel] [--readout_ablation] [--limit=N] [--step=S]

(`python -m hpe_jax.commands.evaluate` is the same.) Every dataset defaults to the run's own
evaluation split (config.data.eval). For each one, the results go to <workdir>/eval/<dataset>.json
and .md (a Markdown table, per action where the split names actions) and are printed.
Predictions use the flip test and the sub-pixel readout unless switched off; --readout_ablation
also evaluates plain argmax, sub-pixel and flip test alone. Evaluation is jit-compiled and
batched over the local devices (one process).
"""

from __future__ import annotations

from absl import flags

from hpe_jax import cli

_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'The trained run (holds config.json and checkpoints/).'
)
_DATASET = flags.DEFINE_multi_string(
  'dataset',
  [],
  "NAME[/config][:split] of a built dataset; repeat for several (default: the run's data.eval).",
)
_STEP = flags.DEFINE(
  cli.StepParser(),
  'step',
  None,
  'A saved training step, or best (train.keep_best; default: the newest).',
)
_FLIP_TEST = flags.DEFINE_bool(
  'flip_test',
  None,
  "Average with the mirrored image's prediction (default: the run's eval.flip_test, True).",
)
_SUBPIXEL = flags.DEFINE_bool(
  'subpixel', None, "Quarter-pixel peak refinement (default: the run's eval.subpixel, True)."
)
_READOUT_ABLATION = flags.DEFINE_bool(
  'readout_ablation',
  False,
  'Also evaluate the other readouts (argmax, sub-pixel, flip test, both): 4 passes over the data.',
)
_LIMIT = flags.DEFINE_integer('limit', 0, 'Evaluate the first N examples only (0: all).')
_BATCH_SIZE = flags.DEFINE_integer(
  'batch_size', None, "Images per step (default: the run's train.batch_size)."
)
_DATA_DIR = flags.DEFINE_string(
  'data_dir', None, "Where the datasets are built (default: the run's data.data_dir)."
)


def main(args: list[str]) -> None:
  del args
  from hpe_jax.evaluation import trained_run  # pylint: disable=g-import-not-at-top  (fast --help)

  trained_run.evaluate_run(
    _WORKDIR.value,
    _DATASET.value,
    step=_STEP.value,
    flip_test=_FLIP_TEST.value,
    subpixel=_SUBPIXEL.value,
    readout_ablation=_READOUT_ABLATION.value,
    limit=_LIMIT.value,
    batch_size=_BATCH_SIZE.value,
    data_dir=_DATA_DIR.value,
  )


def run() -> None:
  cli.run(main, required=('workdir',))


if __name__ == '__main__':
  run()
